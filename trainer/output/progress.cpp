#include "trainer/output/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace loom::trainer {

namespace {

constexpr int kBarWidth = 24;

// An ostream does not reveal its file descriptor, so only the standard streams can be known to
// reach a terminal; everything else is treated as a file.
int terminal_fd(const std::ostream& out) {
  int fd = -1;
  if (&out == &std::cout) fd = STDOUT_FILENO;
  if (&out == &std::cerr || &out == &std::clog) fd = STDERR_FILENO;
  return fd >= 0 && ::isatty(fd) == 1 ? fd : -1;
}

int terminal_width(int fd) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

}  // namespace

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  char buf[32];
  // Each branch decides on the rounded value, so 59.97 s prints as "1m00s", not "60.0s".
  if (std::round(seconds * 10) < 600) {
    std::snprintf(buf, sizeof buf, "%.1fs", std::round(seconds * 10) / 10);
    return buf;
  }
  const long long secs = std::llround(seconds);
  if (secs < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", secs / 60, secs % 60);
    return buf;
  }
  const long long mins = std::llround(seconds / 60);
  std::snprintf(buf, sizeof buf, "%lldh%02lldm", mins / 60, mins % 60);
  return buf;
}

std::string ProgressLine::render(int64_t step, int64_t total, double eta_seconds,
                                 const std::string& status, int width) {
  const double frac = total > 0 ? std::clamp(double(step) / double(total), 0.0, 1.0) : 0.0;
  const int filled = int(frac * kBarWidth);
  // Built with append: GCC 12 warns falsely (-Wrestrict) on chains of string operator+.
  std::string line = "[";
  line.append(size_t(filled), '#').append(size_t(kBarWidth - filled), '.').append("]");
  char buf[96];
  std::snprintf(buf, sizeof buf, " %lld/%lld %3d%%  ETA %s", static_cast<long long>(step),
                static_cast<long long>(total), int(frac * 100),
                format_duration(eta_seconds).c_str());
  line += buf;
  if (!status.empty()) line.append("  ").append(status);
  const size_t limit = size_t(std::max(width - 1, 0));
  if (line.size() > limit) line.resize(limit);
  return line;
}

ProgressLine::ProgressLine(std::ostream& out) : out_(out), fd_(terminal_fd(out)) {}

ProgressLine::~ProgressLine() {
  clear();
}

void ProgressLine::update(int64_t step, int64_t total, double eta_seconds,
                          const std::string& status) {
  if (fd_ < 0) return;
  const auto now = Clock::now();
  // Redrawing every step of a fast run would cost more terminal time than it is worth.
  if (drawn_ && step < total && now - last_draw_ < std::chrono::milliseconds(100)) return;
  // \033[K erases what a longer previous line left to the right of the new one.
  out_ << '\r' << render(step, total, eta_seconds, status, terminal_width(fd_)) << "\033[K"
       << std::flush;
  drawn_ = true;
  last_draw_ = now;
}

void ProgressLine::clear() {
  if (fd_ < 0 || !drawn_) return;
  out_ << "\r\033[K" << std::flush;
  drawn_ = false;
}

}  // namespace loom::trainer
