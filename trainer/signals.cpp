#include "trainer/signals.h"

#include <csignal>

namespace loom::trainer {

namespace {
volatile std::sig_atomic_t g_stop = 0;

void on_signal(int sig) {
  g_stop = 1;
  std::signal(sig, SIG_DFL);  // a second signal ends the process
}
}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool stop_requested() {
  return g_stop != 0;
}
void request_stop() {
  g_stop = 1;
}
void clear_stop() {
  g_stop = 0;
}

}  // namespace loom::trainer
