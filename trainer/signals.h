#pragma once
// SIGINT/SIGTERM during training: the first signal asks the loop to finish the current step,
// write a checkpoint and exit 0; a second one terminates at once (the default action).
namespace loom::trainer {

void install_stop_handlers();
bool stop_requested();
// For tests: request a stop as a signal would.
void request_stop();
void clear_stop();

}  // namespace loom::trainer
