#include "data/loader.h"

#include <algorithm>
#include <utility>

#include "core/rng.h"

namespace loom::data {

DataLoader::DataLoader(std::shared_ptr<Dataset> dataset, LoaderConfig config)
    : dataset_(std::move(dataset)), config_(config) {
  LOOM_CHECK(dataset_ != nullptr, "[data] loader: dataset is null");
  LOOM_CHECK(config_.batch_size >= 1, "[data] loader: batch_size must be positive, got ",
             config_.batch_size);
  LOOM_CHECK(config_.world_size >= 1, "[data] loader: world_size must be positive, got ",
             config_.world_size);
  LOOM_CHECK(config_.rank >= 0 && config_.rank < config_.world_size, "[data] loader: rank ",
             config_.rank, " is outside [0, ", config_.world_size, ")");
  LOOM_CHECK(config_.prefetch >= 1, "[data] loader: prefetch must be at least 1, got ",
             config_.prefetch);
  item_shape_ = dataset_->item_shape();
  LOOM_CHECK(item_shape_.size() == 3, "[data] loader: dataset items must be [C, H, W], got ",
             shape_str(item_shape_));
  const int64_t global = config_.batch_size * config_.world_size;
  batches_per_epoch_ = dataset_->size() / global;
  LOOM_CHECK(batches_per_epoch_ >= 1, "[data] loader: the dataset holds ", dataset_->size(),
             " examples, fewer than one global batch of batch_size ", config_.batch_size,
             " x world_size ", config_.world_size, " = ", global);
  thread_ = std::thread([this] { worker(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  space_cv_.notify_all();
  thread_.join();
}

LoaderPosition DataLoader::advanced(LoaderPosition pos) const {
  if (++pos.batch == batches_per_epoch_) pos = {pos.epoch + 1, 0};
  return pos;
}

bool DataLoader::abandoned(uint64_t generation) const {
  std::lock_guard lock(mutex_);
  return stop_ || generation != generation_;
}

Batch DataLoader::next() {
  std::unique_lock lock(mutex_);
  ready_cv_.wait(lock, [&] { return !queue_.empty(); });
  // A failed batch stays at the front so that retrying without set_position fails the same way
  // instead of silently skipping data.
  if (queue_.front().error) std::rethrow_exception(queue_.front().error);
  Batch batch = std::move(queue_.front().batch);
  queue_.pop_front();
  consumer_pos_ = advanced(consumer_pos_);
  lock.unlock();
  space_cv_.notify_all();
  return batch;
}

LoaderPosition DataLoader::position() const {
  std::lock_guard lock(mutex_);
  return consumer_pos_;
}

void DataLoader::set_position(LoaderPosition pos) {
  LOOM_CHECK(pos.epoch >= 0 && pos.batch >= 0 && pos.batch < batches_per_epoch_,
             "[data] loader: position (epoch ", pos.epoch, ", batch ", pos.batch,
             ") is invalid: epoch must be >= 0 and batch in [0, ", batches_per_epoch_, ")");
  {
    std::lock_guard lock(mutex_);
    ++generation_;
    queue_.clear();
    consumer_pos_ = producer_pos_ = pos;
  }
  space_cv_.notify_all();
}

void DataLoader::worker() {
  for (;;) {
    LoaderPosition pos;
    uint64_t generation;
    {
      std::unique_lock lock(mutex_);
      // After a failure the worker idles until set_position: the failed slot blocks the queue.
      space_cv_.wait(lock, [&] {
        return stop_ || (int64_t(queue_.size()) < config_.prefetch &&
                         (queue_.empty() || !queue_.back().error));
      });
      if (stop_) return;
      pos = producer_pos_;
      generation = generation_;
    }
    Slot slot;
    try {
      if (!build(pos, generation, slot.batch)) continue;
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard lock(mutex_);
      if (stop_) return;
      if (generation != generation_) continue;
      if (!slot.error) producer_pos_ = advanced(pos);
      queue_.push_back(std::move(slot));
    }
    ready_cv_.notify_all();
  }
}

bool DataLoader::build(LoaderPosition pos, uint64_t generation, Batch& out) {
  const int64_t B = config_.batch_size;
  const int64_t G = B * config_.world_size;
  const int64_t C = item_shape_[0], H = item_shape_[1], W = item_shape_[2];
  const int64_t n = C * H * W;
  const int64_t num_classes = dataset_->num_classes();
  if (config_.shuffle && perm_epoch_ != pos.epoch) {
    Generator order(config_.seed, kLoaderOrderStream + uint64_t(pos.epoch));
    perm_ = randperm(dataset_->size(), order).to_vector<int64_t>();
    perm_epoch_ = pos.epoch;
  }
  out.images = empty({B, C, H, W}, DType::f32);
  out.labels = empty({B}, DType::i64);
  float* images = out.images.data<float>();
  int64_t* labels = out.labels.data<int64_t>();
  Generator flip(config_.seed, kLoaderFlipStream + uint64_t(pos.epoch));
  for (int64_t j = 0; j < B; ++j) {
    // Checked per example so a stop or restart does not wait for a whole batch of slow decodes.
    if (abandoned(generation)) return false;
    const int64_t p = pos.batch * G + config_.rank * B + j;
    const int64_t index = config_.shuffle ? perm_[size_t(p)] : p;
    float* image = images + j * n;
    dataset_->get(index, image, &labels[j]);
    LOOM_CHECK(labels[j] >= 0 && labels[j] < num_classes, "[data] loader: example ", index,
               " has label ", labels[j], ", outside [0, ", num_classes, ")");
    if (config_.hflip) {
      flip.set_offset(uint64_t(p));
      if (rand({1}, flip).data<float>()[0] < 0.5f)
        for (int64_t row = 0; row < C * H; ++row)
          std::reverse(image + row * W, image + row * W + W);
    }
  }
  return true;
}

}  // namespace loom::data
