#pragma once
// Agreement between ranks: the small collectives by which the ranks of a group make one decision
// together, so that no rank takes a branch (stop, refuse, write) that the others do not take and
// then waits forever in a collective they never join.
//
//   require_same  every rank gives a 64-bit value (a hash of its recipe, of its parameter layout);
//                 when they are not all equal, every rank throws the same loom::Error, which names
//                 each rank whose value differs from rank 0's (`what` names the value, with its
//                 op prefix):
//                   "<what> differs between ranks: rank 1 has 0x1f.., rank 0 has 0x7a..; <hint>"
//   any_rank      true on every rank when the flag is set on at least one (a stop request that
//                 reached some ranks first).
//
// Both are collective over `group`: every rank calls them in the same order relative to its other
// collectives on the group (Communicator "Ordering"). On a group of one they return at once.
#include <cstdint>
#include <string>

#include "parallel/communicator.h"

namespace loom::parallel {

void require_same(Communicator& group, uint64_t value, const std::string& what,
                  const std::string& hint);

bool any_rank(Communicator& group, bool flag);

}  // namespace loom::parallel
