#include "trainer/output/metrics.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "core/error.h"

namespace loom::trainer {

namespace {

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
}

void append_number(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[64];
  // to_chars without a precision gives the shortest text that parses back to the same double.
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

// A parser for exactly what MetricsWriter emits: a flat object of string keys and numbers or
// null. Anything richer in metrics.jsonl means another writer, and is reported, not guessed at.
class LineParser {
 public:
  explicit LineParser(const std::string& text) : s_(text) {}

  // Returns false (with error()) instead of throwing so the caller can excuse a cut-off line.
  bool parse(std::map<std::string, double>& out) {
    space();
    if (!eat('{')) return fail("expected '{'");
    space();
    if (eat('}')) return end();
    while (true) {
      space();
      std::string key;
      if (!parse_string(key)) return false;
      space();
      if (!eat(':')) return fail("expected ':' after \"" + key + "\"");
      space();
      double v;
      if (!parse_number(v)) return false;
      if (!out.emplace(key, v).second) return fail("duplicate key \"" + key + "\"");
      space();
      if (eat('}')) return end();
      if (!eat(',')) return fail("expected ',' or '}'");
    }
  }
  const std::string& error() const { return error_; }

 private:
  bool fail(const std::string& what) {
    error_ = "column " + std::to_string(pos_ + 1) + ": " + what;
    return false;
  }
  bool end() {
    space();
    return pos_ == s_.size() || fail("unexpected characters after the object");
  }
  void space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r')) ++pos_;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool parse_string(std::string& out) {
    if (!eat('"')) return fail("expected a quoted key");
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      c = s_[pos_++];
      switch (c) {
        case '"':
        case '\\':
        case '/':
          out += c;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned code = 0;
          if (pos_ + 4 > s_.size()) return fail("truncated \\u escape");
          const auto r = std::from_chars(s_.data() + pos_, s_.data() + pos_ + 4, code, 16);
          if (r.ptr != s_.data() + pos_ + 4) return fail("bad \\u escape");
          pos_ += 4;
          // Keys are ASCII in practice; others are kept as UTF-8 for the basic plane.
          if (code < 0x80) {
            out += char(code);
          } else if (code < 0x800) {
            out += char(0xc0 | (code >> 6));
            out += char(0x80 | (code & 0x3f));
          } else {
            out += char(0xe0 | (code >> 12));
            out += char(0x80 | ((code >> 6) & 0x3f));
            out += char(0x80 | (code & 0x3f));
          }
          break;
        }
        default:
          return fail(std::string("bad escape \\") + c);
      }
    }
    if (!eat('"')) return fail("unterminated string");
    return true;
  }
  bool parse_number(double& v) {
    if (s_.compare(pos_, 4, "null") == 0) {
      pos_ += 4;
      v = std::numeric_limits<double>::quiet_NaN();
      return true;
    }
    // The JSON number grammar, checked by hand: from_chars alone would also take "inf", "nan"
    // and hex digits.
    const size_t begin = pos_;
    eat('-');
    const size_t int_begin = pos_;
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    if (pos_ == int_begin) return fail("expected a number or null");
    if (pos_ - int_begin > 1 && s_[int_begin] == '0') return fail("leading zero in a number");
    if (eat('.')) {
      const size_t frac = pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      if (pos_ == frac) return fail("expected digits after '.'");
    }
    if (eat('e') || eat('E')) {
      if (!eat('+')) eat('-');
      const size_t exp = pos_;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
      if (pos_ == exp) return fail("expected digits in the exponent");
    }
    const auto r = std::from_chars(s_.data() + begin, s_.data() + pos_, v);
    // Out of range (e.g. 1e999) is reported rather than silently becoming infinity.
    if (r.ec != std::errc() || r.ptr != s_.data() + pos_) return fail("number out of range");
    return true;
  }

  const std::string& s_;
  size_t pos_ = 0;
  std::string error_;
};

}  // namespace

MetricsWriter::MetricsWriter(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  LOOM_CHECK(file_, "[metrics] ", path, ": cannot open for ", append ? "appending" : "writing",
             ": ", std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (file_) std::fclose(file_);
}

void MetricsWriter::write(const std::vector<std::pair<std::string, double>>& fields) {
  std::string line = "{";
  std::set<std::string> seen;
  for (const auto& [name, value] : fields) {
    LOOM_CHECK(!name.empty(), "[metrics] ", path_, ": empty field name");
    LOOM_CHECK(seen.insert(name).second, "[metrics] ", path_, ": field \"", name,
               "\" given twice in one line");
    if (line.size() > 1) line += ',';
    append_json_string(line, name);
    line += ':';
    append_number(line, value);
  }
  line += "}\n";
  const bool ok =
      std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0;
  LOOM_CHECK(ok, "[metrics] ", path_, ": write failed: ", std::strerror(errno));
}

std::vector<std::map<std::string, double>> read_metrics(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOOM_CHECK(in, "[metrics] ", path, ": cannot open: ", std::strerror(errno));
  std::ostringstream os;
  os << in.rdbuf();
  const std::string text = os.str();

  std::vector<std::map<std::string, double>> rows;
  size_t begin = 0;
  for (int64_t line_no = 1; begin < text.size(); ++line_no) {
    size_t end = text.find('\n', begin);
    const bool terminated = end != std::string::npos;
    if (!terminated) end = text.size();
    const std::string line = text.substr(begin, end - begin);
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::map<std::string, double> row;
    LineParser parser(line);
    if (parser.parse(row)) {
      rows.push_back(std::move(row));
    } else if (terminated) {
      LOOM_FAIL("[metrics] ", path, ":", line_no, ": ", parser.error());
    }
  }
  return rows;
}

}  // namespace loom::trainer
