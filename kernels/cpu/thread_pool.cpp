#include "kernels/cpu/thread_pool.h"

#include <sched.h>

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace loom::kernels::cpu {

namespace {

thread_local bool t_in_pool = false;

class ThreadPool {
 public:
  explicit ThreadPool(int n) { resize(n); }
  ~ThreadPool() { stop(); }

  int size() const { return int(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    stopping_ = false;
    for (int i = 1; i < std::max(1, n); ++i) workers_.emplace_back([this] { worker(); });
  }

  void run(int64_t n_chunks, const std::function<void(int64_t)>& body) {
    std::unique_lock lock(run_mutex_);  // one parallel region at a time
    {
      std::lock_guard g(m_);
      body_ = &body;
      n_chunks_ = n_chunks;
      next_.store(0);
      active_ = int(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    t_in_pool = true;
    drain();
    t_in_pool = false;
    std::unique_lock g(m_);
    done_cv_.wait(g, [&] { return active_ == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void drain() {
    for (int64_t c; (c = next_.fetch_add(1)) < n_chunks_;) {
      try {
        (*body_)(c);
      } catch (...) {
        std::lock_guard g(m_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  void worker() {
    t_in_pool = true;
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock g(m_);
        cv_.wait(g, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard g(m_);
      if (--active_ == 0) done_cv_.notify_all();
    }
  }

  void stop() {
    {
      std::lock_guard g(m_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex m_, run_mutex_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t n_chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
  std::exception_ptr error_;
};

// Ranks a launcher started on this node (Open MPI, MPICH/Hydra, Slurm), 1 if none says.
int ranks_on_this_node() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* v = std::getenv(var); v && std::atoi(v) > 0) return std::atoi(v);
  return 1;
}

// LOOM_NUM_THREADS, else the CPUs this process may run on (its affinity mask: a launcher that
// binds ranks to cores gets one thread per bound core) — shared among the node's ranks when the
// launcher left every rank the whole machine, so N ranks do not start N x cores threads.
int default_threads() {
  if (const char* env = std::getenv("LOOM_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const int machine = int(std::max(1u, std::thread::hardware_concurrency()));
  int allowed = machine;
  cpu_set_t mask;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) allowed = std::max(1, CPU_COUNT(&mask));
  if (allowed < machine) return allowed;
  return std::max(1, machine / ranks_on_this_node());
}

ThreadPool& pool() {
  static ThreadPool p([] {
    openblas_set_num_threads(1);  // GEMMs split over the pool instead (gemm.cpp)
    return default_threads();
  }());
  return p;
}

}  // namespace

int num_threads() {
  return pool().size();
}

void set_num_threads(int n) {
  pool().resize(n);
}

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& f) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = num_chunks(end - begin, grain);
  if (chunks == 1 || t_in_pool || pool().size() == 1) {
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t b = begin + c * grain;
      f(b, std::min(end, b + grain));
    }
    return;
  }
  pool().run(chunks, [&](int64_t c) {
    const int64_t b = begin + c * grain;
    f(b, std::min(end, b + grain));
  });
}

}  // namespace loom::kernels::cpu
