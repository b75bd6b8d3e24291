#pragma once
// Op profiler for performance work: with LOOM_PROFILE_OPS=1 in the environment, every op's
// forward and every node's backward is timed (device synchronized before and after, so the time
// is the op's own device time plus its launch cost, and the run is slower than normal), summed
// per "op.forward" / "op.backward" (inclusive: ops that run inside an op's forward or backward
// count toward it), and a table sorted by total time is printed to stderr when the process exits.
// Off (one branch per op) otherwise.
#include <functional>

namespace loom::profiler {

bool enabled();
// Runs f, timed under `name` and `phase` ("forward" or "backward") when profiling is enabled.
void timed(const char* name, const char* phase, const std::function<void()>& f);

}  // namespace loom::profiler
