// DataLoader: order (determinism, per-epoch permutations, sharding), resume, hflip, error
// propagation and shutdown, over small in-test datasets whose images encode their index.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/loom.h"
#include "data/loader.h"

namespace loom::data {
namespace {

constexpr int64_t kW = 3;

// Item [1, 2, 3]: row r holds index * 100 + r * 10 + {0, 1, 2}, so the index can be read back
// from any pixel and a horizontal flip is visible. Label = index % 4.
class IndexDataset : public Dataset {
 public:
  explicit IndexDataset(int64_t n, int64_t bad_index = -1, int64_t bad_label_index = -1,
                        int sleep_us = 0)
      : n_(n), bad_index_(bad_index), bad_label_index_(bad_label_index), sleep_us_(sleep_us) {}
  int64_t size() const override { return n_; }
  Shape item_shape() const override { return {1, 2, kW}; }
  int64_t num_classes() const override { return 4; }
  void get(int64_t index, float* image, int64_t* label) const override {
    LOOM_CHECK(index != bad_index_, "[data] fake.bin: cannot read example ", index);
    if (sleep_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t x = 0; x < kW; ++x) image[r * kW + x] = float(index * 100 + r * 10 + x);
    *label = index == bad_label_index_ ? 4 : index % 4;
    ++calls;
  }
  mutable std::atomic<int64_t> calls{0};

 private:
  int64_t n_, bad_index_, bad_label_index_;
  int sleep_us_;
};

// The dataset index of each example of a batch, checking the image is intact (maybe flipped)
// and the label matches.
std::vector<int64_t> indices_of(const Batch& b, std::vector<bool>* flipped = nullptr) {
  const int64_t B = b.images.size(0);
  EXPECT_EQ(b.images.shape(), (Shape{B, 1, 2, kW}));
  EXPECT_EQ(b.images.dtype(), DType::f32);
  EXPECT_EQ(b.labels.shape(), (Shape{B}));
  EXPECT_EQ(b.labels.dtype(), DType::i64);
  const float* px = b.images.data<float>();
  const int64_t* lab = b.labels.data<int64_t>();
  std::vector<int64_t> out;
  for (int64_t j = 0; j < B; ++j) {
    const float* im = px + j * 2 * kW;
    const int64_t index = int64_t(im[1]) / 100;  // the middle pixel never moves
    const bool flip = im[0] > im[kW - 1];
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t x = 0; x < kW; ++x) {
        const int64_t src_x = flip ? kW - 1 - x : x;
        EXPECT_EQ(im[r * kW + x], float(index * 100 + r * 10 + src_x));
      }
    EXPECT_EQ(lab[j], index % 4);
    out.push_back(index);
    if (flipped) flipped->push_back(flip);
  }
  return out;
}

std::vector<std::vector<float>> take(DataLoader& loader, int n) {
  std::vector<std::vector<float>> out;
  for (int i = 0; i < n; ++i) {
    const Batch b = loader.next();
    std::vector<float> v = b.images.to_vector<float>();
    for (int64_t l : b.labels.to_vector<int64_t>()) v.push_back(float(l));
    out.push_back(std::move(v));
  }
  return out;
}

TEST(DataLoader, SameSeedSameBatchesOtherSeedDiffers) {
  auto ds = std::make_shared<IndexDataset>(40);
  DataLoader a(ds, {.batch_size = 4, .seed = 7, .hflip = true});
  DataLoader b(ds, {.batch_size = 4, .seed = 7, .hflip = true});
  DataLoader c(ds, {.batch_size = 4, .seed = 8, .hflip = true});
  const auto ba = take(a, 25), bb = take(b, 25), bc = take(c, 25);  // 2.5 epochs
  EXPECT_EQ(ba, bb);
  EXPECT_NE(ba, bc);
}

TEST(DataLoader, EveryEpochIsAPermutationAndEpochsDiffer) {
  const int64_t n = 48, B = 6;
  auto ds = std::make_shared<IndexDataset>(n);
  DataLoader loader(ds, {.batch_size = B, .seed = 3});
  ASSERT_EQ(loader.batches_per_epoch(), n / B);
  std::vector<std::vector<int64_t>> orders;
  for (int e = 0; e < 3; ++e) {
    std::vector<int64_t> order;
    for (int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
      const LoaderPosition pos = loader.position();
      EXPECT_EQ(pos.epoch, e);
      EXPECT_EQ(pos.batch, b);
      for (int64_t i : indices_of(loader.next())) order.push_back(i);
    }
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[size_t(i)], i) << "epoch " << e;
    orders.push_back(order);
  }
  EXPECT_EQ(loader.position().epoch, 3);
  EXPECT_EQ(loader.position().batch, 0);
  EXPECT_NE(orders[0], orders[1]);
  EXPECT_NE(orders[1], orders[2]);
  std::vector<int64_t> identity(static_cast<size_t>(n));
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(orders[0], identity);
}

TEST(DataLoader, DropLastAndNoShuffleOrder) {
  auto ds = std::make_shared<IndexDataset>(23);
  DataLoader loader(ds, {.batch_size = 5, .shuffle = false});
  EXPECT_EQ(loader.batches_per_epoch(), 4);
  for (int e = 0; e < 2; ++e)
    for (int64_t b = 0; b < 4; ++b)
      EXPECT_EQ(indices_of(loader.next()),
                (std::vector<int64_t>{5 * b, 5 * b + 1, 5 * b + 2, 5 * b + 3, 5 * b + 4}));
  // With drop-last shuffling, each epoch takes 20 distinct examples out of 23.
  DataLoader shuffled(ds, {.batch_size = 5, .seed = 1});
  std::set<int64_t> seen;
  for (int b = 0; b < 4; ++b)
    for (int64_t i : indices_of(shuffled.next())) seen.insert(i);
  EXPECT_EQ(seen.size(), 20u);
}

TEST(DataLoader, RanksShardTheGlobalBatch) {
  auto ds = std::make_shared<IndexDataset>(61);
  const int64_t B = 3;
  for (int64_t world : {2, 4}) {
    DataLoader single(ds, {.batch_size = B * world, .seed = 11, .hflip = true});
    std::vector<std::unique_ptr<DataLoader>> ranks;
    for (int64_t r = 0; r < world; ++r)
      ranks.push_back(std::make_unique<DataLoader>(
          ds, LoaderConfig{
                  .batch_size = B, .seed = 11, .hflip = true, .rank = r, .world_size = world}));
    EXPECT_EQ(ranks[0]->batches_per_epoch(), single.batches_per_epoch());
    for (int step = 0; step < 2 * single.batches_per_epoch() + 1; ++step) {
      std::vector<bool> flips_single, flips_ranks;
      const auto want = indices_of(single.next(), &flips_single);
      std::vector<int64_t> got;
      for (auto& r : ranks)
        for (int64_t i : indices_of(r->next(), &flips_ranks)) got.push_back(i);
      ASSERT_EQ(got, want) << "world " << world << " step " << step;
      ASSERT_EQ(flips_ranks, flips_single) << "world " << world << " step " << step;
    }
  }
}

TEST(DataLoader, SetPositionResumesExactly) {
  auto ds = std::make_shared<IndexDataset>(30);
  const LoaderConfig cfg{.batch_size = 4, .seed = 5, .hflip = true, .prefetch = 3};
  DataLoader reference(ds, cfg);  // 7 batches per epoch
  const auto all = take(reference, 20);

  // Resume a fresh loader mid-epoch, and at an epoch boundary.
  for (int k : {3, 7, 12}) {
    DataLoader fresh(ds, cfg);
    fresh.set_position({k / 7, k % 7});
    EXPECT_EQ(fresh.position().epoch, k / 7);
    EXPECT_EQ(fresh.position().batch, k % 7);
    const auto rest = take(fresh, 20 - k);
    EXPECT_EQ(rest, std::vector<std::vector<float>>(all.begin() + k, all.end())) << "k " << k;
  }

  // A loader that already consumed batches and filled its prefetch queue, moved back and forth.
  auto counted = std::make_shared<IndexDataset>(30);
  DataLoader used(counted, cfg);
  take(used, 9);
  while (counted->calls < 4 * (9 + 3)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const LoaderPosition saved = used.position();
  EXPECT_EQ(saved.epoch, 1);
  EXPECT_EQ(saved.batch, 2);
  used.set_position({0, 2});
  EXPECT_EQ(take(used, 4), std::vector<std::vector<float>>(all.begin() + 2, all.begin() + 6));
  used.set_position(saved);
  EXPECT_EQ(take(used, 11), std::vector<std::vector<float>>(all.begin() + 9, all.end()));

  EXPECT_THROW(used.set_position({0, 7}), Error);
  EXPECT_THROW(used.set_position({-1, 0}), Error);
  EXPECT_THROW(used.set_position({0, -1}), Error);
}

TEST(DataLoader, HflipFlipsAboutHalfDeterministically) {
  auto ds = std::make_shared<IndexDataset>(100);
  DataLoader a(ds, {.batch_size = 10, .seed = 2, .hflip = true});
  DataLoader b(ds, {.batch_size = 10, .seed = 2, .hflip = true});
  std::vector<bool> fa, fb;
  for (int i = 0; i < 30; ++i) {  // 3 epochs
    indices_of(a.next(), &fa);
    indices_of(b.next(), &fb);
  }
  EXPECT_EQ(fa, fb);
  const auto flips = std::count(fa.begin(), fa.end(), true);
  EXPECT_GT(flips, 300 * 0.4);
  EXPECT_LT(flips, 300 * 0.6);
  // An example's flip changes across epochs: not a fixed property of the position alone.
  EXPECT_NE(std::vector<bool>(fa.begin(), fa.begin() + 100),
            std::vector<bool>(fa.begin() + 100, fa.begin() + 200));

  DataLoader off(ds, {.batch_size = 10, .seed = 2});
  std::vector<bool> none;
  for (int i = 0; i < 10; ++i) indices_of(off.next(), &none);
  EXPECT_EQ(std::count(none.begin(), none.end(), true), 0);
}

TEST(DataLoader, WorkerErrorsReachNext) {
  auto ds = std::make_shared<IndexDataset>(20, /*bad_index=*/6);
  DataLoader loader(ds, {.batch_size = 4, .shuffle = false});
  EXPECT_EQ(indices_of(loader.next()), (std::vector<int64_t>{0, 1, 2, 3}));
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      loader.next();
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("fake.bin: cannot read example 6"), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(loader.position().batch, 1);
  }
  loader.set_position({0, 2});
  EXPECT_EQ(indices_of(loader.next()), (std::vector<int64_t>{8, 9, 10, 11}));

  auto bad_label = std::make_shared<IndexDataset>(20, -1, /*bad_label_index=*/2);
  DataLoader l2(bad_label, {.batch_size = 4, .shuffle = false});
  try {
    l2.next();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("example 2 has label 4"), std::string::npos) << e.what();
  }
}

TEST(DataLoader, DestructionMidEpochDoesNotHang) {
  const auto start = std::chrono::steady_clock::now();
  auto slow = std::make_shared<IndexDataset>(1000, -1, -1, /*sleep_us=*/2000);
  { DataLoader never_read(slow, {.batch_size = 50, .prefetch = 4}); }
  {
    DataLoader loader(slow, {.batch_size = 50, .prefetch = 4});
    indices_of(loader.next());
  }
  {
    auto fast = std::make_shared<IndexDataset>(100);
    DataLoader full_queue(fast, {.batch_size = 5, .prefetch = 2});
    indices_of(full_queue.next());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // worker waits on a full queue
  }
  // One slow batch is 100 ms; stopping between examples keeps the whole test well under a
  // second instead of waiting for the several prefetched batches in flight.
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 1.0);
}

TEST(DataLoader, BadConfigurations) {
  auto ds = std::make_shared<IndexDataset>(10);
  EXPECT_THROW(DataLoader(ds, {.batch_size = 0}), Error);
  EXPECT_THROW(DataLoader(ds, {.batch_size = 2, .rank = 2, .world_size = 2}), Error);
  EXPECT_THROW(DataLoader(ds, {.batch_size = 2, .rank = -1}), Error);
  EXPECT_THROW(DataLoader(ds, {.batch_size = 2, .world_size = 0}), Error);
  EXPECT_THROW(DataLoader(ds, {.batch_size = 2, .prefetch = 0}), Error);
  EXPECT_THROW(DataLoader(nullptr, {.batch_size = 2}), Error);
  try {
    DataLoader(ds, {.batch_size = 6, .world_size = 2});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds 10 examples"), std::string::npos) << e.what();
  }
  DataLoader exact(ds, {.batch_size = 5, .rank = 1, .world_size = 2});
  EXPECT_EQ(exact.batches_per_epoch(), 1);
}

}  // namespace
}  // namespace loom::data
