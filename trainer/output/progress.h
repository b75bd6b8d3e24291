#pragma once
// The console progress bar (DESIGN.md "Trainer and recipes"): one line redrawn in place with a
// carriage return, only when the stream is a terminal; in a log file or pipe ProgressLine writes
// nothing, so logs hold only the trainer's regular lines.
//
//   [##########..............] 1200/5000  24%  ETA 3m05s  loss 0.0713
//
// The stream counts as a terminal when it is std::cout (std::cerr, std::clog) and stdout
// (stderr) is a TTY; any other stream (a file, a string stream) is never drawn on. update()
// draws step/total, the caller's ETA in seconds (negative: unknown) and status, at most every
// 0.1 s (always at step >= total), cut to the terminal width so it never wraps. Call clear()
// before printing a regular line so the two do not mix; the next update draws the bar again.
// The destructor clears it. render() is the pure formatting step, exposed for tests.
//
// format_duration: "12.3s" under a minute, "3m05s" under an hour, "1h02m" beyond; negative or
// non-finite input (an unknown ETA) gives "--".
#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace loom::trainer {

std::string format_duration(double seconds);

class ProgressLine {
 public:
  explicit ProgressLine(std::ostream& out);
  ~ProgressLine();
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  bool enabled() const { return fd_ >= 0; }
  void update(int64_t step, int64_t total, double eta_seconds, const std::string& status);
  void clear();

  // The bar line, cut to at most `width` - 1 columns (the last column is left free: some
  // terminals wrap when it is written).
  static std::string render(int64_t step, int64_t total, double eta_seconds,
                            const std::string& status, int width);

 private:
  using Clock = std::chrono::steady_clock;
  std::ostream& out_;
  int fd_ = -1;  // the terminal behind out_, or -1 when nothing is drawn
  bool drawn_ = false;
  Clock::time_point last_draw_;
};

}  // namespace loom::trainer
