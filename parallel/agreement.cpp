#include "parallel/agreement.h"

#include <bit>
#include <cstdio>
#include <vector>

namespace loom::parallel {

namespace {
std::string hex(uint64_t v) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(v));
  return text;
}
}  // namespace

void require_same(Communicator& group, uint64_t value, const std::string& what,
                  const std::string& hint) {
  const Tensor mine = from_vector<int64_t>({std::bit_cast<int64_t>(value)}, {1});
  const Tensor all = zeros({group.size()}, DType::i64);
  group.all_gather(mine, all);
  const std::vector<int64_t> values = all.to_vector<int64_t>();
  const uint64_t root = std::bit_cast<uint64_t>(values[0]);
  std::string differing;
  for (size_t r = 1; r < values.size(); ++r) {
    const uint64_t v = std::bit_cast<uint64_t>(values[r]);
    if (v != root) differing += detail::cat("rank ", r, " has ", hex(v), ", ");
  }
  LOOM_CHECK(differing.empty(), what, " differs between ranks: ", differing, "rank 0 has ",
             hex(root), "; ", hint);
}

bool any_rank(Communicator& group, bool flag) {
  const Tensor t = from_vector<int32_t>({flag ? 1 : 0}, {1});
  group.all_reduce(t, ReduceOp::max);
  return t.item() != 0;
}

}  // namespace loom::parallel
