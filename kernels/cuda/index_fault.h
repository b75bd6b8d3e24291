#pragma once
// Out-of-range indices on CUDA. Checking an index tensor on the host would copy it there and stall
// the device at every index op (a mixture-of-experts layer makes several per forward), so the
// index kernels check their indices themselves: an element whose index is out of range is skipped
// (index_select and gather write 0 there), and the first such index is recorded in host-mapped
// memory. raise_index_fault() turns that record into an error; the runtime calls it whenever the
// host waits for the device (copies to the host, synchronize()), so the error surfaces at the next
// synchronization, as CUDA's own asynchronous errors do, naming the op, the index and its
// position. Internal to kernels/cuda.
#include <cstdint>

namespace loom::kernels::cuda {

enum class IndexOp : int32_t { none = 0, index_select, index_add, gather, scatter_add };

struct IndexFault {
  int32_t flag;      // 0 until a kernel records a fault (first one wins)
  IndexOp op;
  int64_t value;     // the index
  int64_t position;  // its element offset in the index tensor
  int64_t bound;     // the valid range is [0, bound)
};

// The record, in pinned host memory mapped into every device's address space (allocated on first
// use; kernels write it, the host reads it after synchronizing).
IndexFault* index_fault_record();
// Throws std::runtime_error "[<op>] index V at element P of the index is out of range [0, B)
// (found on the GPU by a kernel launched before this synchronization)" when a fault was recorded,
// clearing the record first; otherwise returns.
void raise_index_fault();

}  // namespace loom::kernels::cuda
