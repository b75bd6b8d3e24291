#pragma once
// metrics.jsonl (DESIGN.md "Trainer and recipes"): one JSON object of numbers per line, e.g.
//   {"step":100,"loss":0.0731,"img_per_s":2210.5}
//
// MetricsWriter opens `path` for appending (resume) or truncating (a fresh run) and writes
// each call's fields in the given order as one line, flushed before write() returns, so a
// crash loses at most the line being written. Numbers use the shortest text that reads back as
// the same double; NaN and infinities, which JSON cannot express, are written as null. Field
// names must be non-empty and distinct within a line.
//
// read_metrics parses such a file back, one map per line (null reads as NaN), skipping blank
// lines. A last line without its newline that does not parse is taken as cut off by a crash
// and ignored; any other malformed line throws loom::Error "[metrics] <path>:<line>: ...".
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace loom::trainer {

class MetricsWriter {
 public:
  MetricsWriter(const std::string& path, bool append);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const std::vector<std::pair<std::string, double>>& fields);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

std::vector<std::map<std::string, double>> read_metrics(const std::string& path);

}  // namespace loom::trainer
