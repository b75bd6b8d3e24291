#pragma once
// DataLoader: batches from a Dataset in a deterministic, resumable, shardable order, assembled
// on a background thread.
//
// Order. With B = batch_size and G = B * world_size, an epoch holds floor(N / G) global batches
// (the remainder is dropped). Epoch e visits the dataset in the order randperm(N) drawn from
// Generator(seed, kLoaderOrderStream + e), or 0..N-1 without shuffle; global batch b of epoch e
// is permutation entries [b*G, (b+1)*G), of which rank r takes the B entries starting at
// b*G + r*B. So the ranks read disjoint shards and, for any world size, concatenating the
// ranks' batches gives the one-rank batch of size G. The order depends only on (seed, epoch,
// position), never on thread timing, so position() / set_position() resume exactly.
// hflip mirrors an example along W when the uniform draw at offset p (p = b*G + r*B + j, its
// global position in the epoch) of Generator(seed, kLoaderFlipStream + e) is below 0.5: the
// same examples flip whatever the world size.
//
// Threading. The constructor starts one worker thread that keeps up to `prefetch` batches ready;
// next() blocks until the next one is. An exception thrown while building a batch (a corrupt
// file, a bad label) is rethrown by the next() that would have returned that batch, with the
// original type and message, and again by every later next() until set_position() is called.
// The destructor stops the worker between examples and joins it, mid-epoch included. A
// DataLoader is used from one thread at a time (its own worker aside).
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "core/tensor.h"
#include "data/dataset.h"

namespace loom::data {

inline constexpr uint64_t kLoaderOrderStream = 0x4c4f41444f520000ull;
inline constexpr uint64_t kLoaderFlipStream = 0x4c4f4144464c0000ull;

struct LoaderConfig {
  int64_t batch_size;  // per rank
  uint64_t seed = 0;
  bool shuffle = true;
  bool hflip = false;
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t prefetch = 2;  // batches kept ready, >= 1
};

struct Batch {
  Tensor images;  // [B, C, H, W] f32
  Tensor labels;  // [B] i64
};

struct LoaderPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  // batches already consumed in this epoch, < batches_per_epoch()
};

class DataLoader {
 public:
  // Throws loom::Error "[data] loader: ..." for batch_size < 1, world_size < 1, rank outside
  // [0, world_size), prefetch < 1, or a dataset smaller than one global batch.
  DataLoader(std::shared_ptr<Dataset> dataset, LoaderConfig config);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The batch at position(); then advances position(), rolling over to the next epoch.
  Batch next();
  // The position of the batch the next call to next() returns.
  LoaderPosition position() const;
  // Discards prepared batches (and a pending error) and continues from `pos`: epoch >= 0,
  // 0 <= batch < batches_per_epoch().
  void set_position(LoaderPosition pos);
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  const LoaderConfig& config() const { return config_; }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  void worker();
  // Builds this rank's batch at `pos`; returns false when abandoned (stop or restart).
  bool build(LoaderPosition pos, uint64_t generation, Batch& out);
  bool abandoned(uint64_t generation) const;
  LoaderPosition advanced(LoaderPosition pos) const;

  std::shared_ptr<Dataset> dataset_;
  LoaderConfig config_;
  int64_t batches_per_epoch_ = 0;
  Shape item_shape_;

  // Worker-only cache of the current epoch's order.
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;

  mutable std::mutex mutex_;
  std::condition_variable ready_cv_;  // a slot was queued
  std::condition_variable space_cv_;  // room in the queue, a restart or stop
  std::deque<Slot> queue_;
  LoaderPosition consumer_pos_;  // returned by position()
  LoaderPosition producer_pos_;  // the next batch the worker builds
  uint64_t generation_ = 0;      // bumped by set_position; stale batches are dropped
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace loom::data
