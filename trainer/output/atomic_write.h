#pragma once
// Durable file output shared by the trainer's writers (checkpoints, sample grids, plots).
//
// write_file_synced creates or truncates `path`, writes every byte, fsyncs and closes it; the
// caller owns making the name visible atomically (a checkpoint does it by renaming the whole
// directory). write_file_atomic writes `path + ".tmp"` that way, renames it over `path` and
// fsyncs the parent directory, so a crash leaves either the old file or the complete new one;
// on failure the .tmp file is removed and `path` is untouched. fsync_directory makes renames
// and creations inside `dir` durable; filesystems that cannot fsync a directory are tolerated.
// Every failure throws loom::Error starting with "[<tag>] <path>: " and the system's reason.
#include <string>
#include <string_view>

namespace loom::trainer {

void write_file_synced(const std::string& path, std::string_view bytes, const std::string& tag);
void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& tag);
void fsync_directory(const std::string& dir, const std::string& tag);

}  // namespace loom::trainer
