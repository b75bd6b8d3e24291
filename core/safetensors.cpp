#include "core/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

namespace loom {

static_assert(std::endian::native == std::endian::little,
              "safetensors I/O copies raw bytes and assumes a little-endian host");

namespace {

template <class... Args>
[[noreturn]] void fail(const std::string& path, const Args&... args) {
  LOOM_FAIL("[safetensors] ", path, ": ", args...);
}

// -- a JSON subset: objects, arrays, strings and integers (all a header can hold) ----------------

struct Json {
  enum class Kind { object, array, string, integer } kind = Kind::object;
  std::string str;
  int64_t integer = 0;
  std::vector<std::string> keys;  // object keys, in file order; values in `items`
  std::vector<Json> items;        // array elements or object values
};

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& path) : text_(text), path_(path) {}

  Json parse_document() {
    skip_space();
    Json root = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) error("unexpected trailing characters");
    return root;
  }

 private:
  // Headers nest three levels deep; the bound only keeps hostile input off the stack.
  static constexpr int kMaxDepth = 16;

  [[noreturn]] void error(const std::string& what) const {
    fail(path_, "malformed JSON header at byte ", pos_, ": ", what);
  }
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }
  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
      ++pos_;
  }
  void expect(char c) {
    if (peek() != c || at_end()) error(std::string("expected '") + c + "'");
    ++pos_;
  }

  Json parse_value(int depth) {
    if (depth > kMaxDepth) error("nesting deeper than 16 levels");
    if (at_end()) error("unexpected end of header");
    const char c = peek();
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') {
      Json j;
      j.kind = Json::Kind::string;
      j.str = parse_string();
      return j;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_integer();
    error(std::string("unsupported value starting with '") + c + "'");
  }

  Json parse_object(int depth) {
    Json j;
    j.kind = Json::Kind::object;
    std::set<std::string> seen;
    expect('{');
    skip_space();
    if (peek() == '}') {
      ++pos_;
      return j;
    }
    for (;;) {
      skip_space();
      if (peek() != '"') error("expected a string key");
      std::string key = parse_string();
      if (!seen.insert(key).second) error("duplicate key \"" + key + "\"");
      skip_space();
      expect(':');
      skip_space();
      j.keys.push_back(std::move(key));
      j.items.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect('}');
      return j;
    }
  }

  Json parse_array(int depth) {
    Json j;
    j.kind = Json::Kind::array;
    expect('[');
    skip_space();
    if (peek() == ']') {
      ++pos_;
      return j;
    }
    for (;;) {
      skip_space();
      j.items.push_back(parse_value(depth + 1));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return j;
    }
  }

  Json parse_integer() {
    Json j;
    j.kind = Json::Kind::integer;
    const bool negative = peek() == '-';
    if (negative) ++pos_;
    if (!(peek() >= '0' && peek() <= '9')) error("expected a digit");
    if (peek() == '0' && pos_ + 1 < text_.size() && text_[pos_ + 1] >= '0' &&
        text_[pos_ + 1] <= '9')
      error("leading zero in a number");
    uint64_t v = 0;
    const uint64_t limit = uint64_t(std::numeric_limits<int64_t>::max()) + (negative ? 1 : 0);
    while (!at_end() && peek() >= '0' && peek() <= '9') {
      const uint64_t d = uint64_t(peek() - '0');
      if (v > (limit - d) / 10) error("integer out of the 64-bit range");
      v = v * 10 + d;
      ++pos_;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') error("only integers are supported");
    j.integer = negative ? int64_t(0 - v) : int64_t(v);
    return j;
  }

  unsigned parse_hex4() {
    if (pos_ + 4 > text_.size()) error("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= unsigned(c - 'A' + 10);
      else
        error("bad hex digit in \\u escape");
    }
    return v;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xc0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += char(0xe0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    } else {
      out += char(0xf0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3f));
      out += char(0x80 | ((cp >> 6) & 0x3f));
      out += char(0x80 | (cp & 0x3f));
    }
  }

  std::string parse_string() {
    expect('"');
    std::string out;
    for (;;) {
      if (at_end()) error("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) error("control character inside a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) error("unterminated escape");
      const char e = text_[pos_++];
      static constexpr char kEscapes[] = "\"\\/bfnrt";
      static constexpr char kDecoded[] = "\"\\/\b\f\n\r\t";
      if (const char* hit = std::strchr(kEscapes, e); hit && e != '\0') {
        out += kDecoded[hit - kEscapes];
        continue;
      }
      if (e != 'u') error(std::string("unknown escape '\\") + e + "'");
      uint32_t cp = parse_hex4();
      if (cp >= 0xd800 && cp < 0xdc00) {
        if (pos_ + 2 > text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u')
          error("unpaired surrogate in \\u escape");
        pos_ += 2;
        const uint32_t lo = parse_hex4();
        if (lo < 0xdc00 || lo >= 0xe000) error("unpaired surrogate in \\u escape");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
      } else if (cp >= 0xdc00 && cp < 0xe000) {
        error("unpaired surrogate in \\u escape");
      }
      append_utf8(out, cp);
    }
  }

  const std::string& text_;
  const std::string& path_;
  size_t pos_ = 0;
};

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", unsigned(u));
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
}

// -- dtype names -------------------------------------------------------------------------------

constexpr std::pair<const char*, DType> kFormatNames[] = {
    {"F32", DType::f32}, {"F64", DType::f64}, {"BF16", DType::bf16},   {"F16", DType::f16},
    {"I32", DType::i32}, {"I64", DType::i64}, {"BOOL", DType::boolean}};

const char* format_name(DType t) {
  for (const auto& [name, d] : kFormatNames)
    if (d == t) return name;
  LOOM_ASSERT(false, "bad dtype");
}

bool parse_format_name(const std::string& s, DType& out) {
  for (const auto& [name, d] : kFormatNames)
    if (s == name) {
      out = d;
      return true;
    }
  return false;
}

// -- file output -------------------------------------------------------------------------------

// Owns a POSIX file descriptor for the temporary file; removes the file unless committed.
class TmpFile {
 public:
  TmpFile(std::string tmp, const std::string& path) : tmp_(std::move(tmp)), path_(path) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(path_, "cannot create ", tmp_, ": ", std::strerror(errno));
  }
  ~TmpFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  TmpFile(const TmpFile&) = delete;
  TmpFile& operator=(const TmpFile&) = delete;

  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) fail(path_, "write to ", tmp_, " failed: ", std::strerror(errno));
      p += w;
      n -= size_t(w);
    }
  }

  // fsync, close, rename over the target, then fsync the directory so the rename is durable.
  void commit() {
    if (::fsync(fd_) != 0) fail(path_, "fsync of ", tmp_, " failed: ", std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail(path_, "close of ", tmp_, " failed: ", std::strerror(errno));
    if (::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail(path_, "rename from ", tmp_, " failed: ", std::strerror(errno));
    committed_ = true;
    std::string dir = std::filesystem::path(path_).parent_path().string();
    if (dir.empty()) dir = ".";
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // best effort: some filesystems refuse fsync on directories
      ::close(dfd);
    }
  }

 private:
  std::string tmp_;
  const std::string& path_;
  int fd_ = -1;
  bool committed_ = false;
};

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  int64_t begin, end;
};

}  // namespace

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  std::set<std::string> seen;
  {
    NoGradGuard no_grad;
    for (const auto& [name, t] : tensors) {
      if (name.empty()) fail(path, "a tensor has an empty name");
      if (name == "__metadata__") fail(path, "\"__metadata__\" cannot be a tensor name");
      if (!seen.insert(name).second) fail(path, "duplicate tensor name \"", name, "\"");
      if (!t.defined()) fail(path, "tensor \"", name, "\" is undefined");
      host.push_back(t.detach().to(Device::cpu()).contiguous());
    }
  }

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) header += ',';
      first = false;
      append_json_string(header, k);
      header += ':';
      append_json_string(header, v);
    }
    header += '}';
  }
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = host[i];
    const int64_t nbytes = t.numel() * int64_t(dtype_size(t.dtype()));
    if (header.size() > 1) header += ',';
    append_json_string(header, tensors[i].first);
    header += ":{\"dtype\":\"";
    header += format_name(t.dtype());
    header += "\",\"shape\":[";
    for (size_t d = 0; d < t.shape().size(); ++d) {
      if (d) header += ',';
      header += std::to_string(t.shape()[d]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += '}';
  // Pad so the data section starts 8-byte aligned (8 + header length is a multiple of 8).
  header.append((8 - header.size() % 8) % 8, ' ');

  TmpFile file(path + ".tmp", path);
  unsigned char len[8];
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  file.write(len, 8);
  file.write(header.data(), header.size());
  for (const Tensor& t : host) file.write(t.raw_data(), size_t(t.numel()) * dtype_size(t.dtype()));
  file.commit();
}

SafetensorsFile load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open file: ", std::strerror(errno));
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot read the file size: ", ec.message());
  if (file_size < 8)
    fail(path, "truncated file: ", file_size, " bytes, shorter than the 8-byte header length");

  unsigned char len[8];
  if (!in.read(reinterpret_cast<char*>(len), 8)) fail(path, "cannot read the header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len[i];
  if (header_len > file_size - 8)
    fail(path, "header length ", header_len, " runs past the end of the file (", file_size,
         " bytes)");
  std::string text(size_t(header_len), '\0');
  if (!in.read(text.data(), std::streamsize(header_len))) fail(path, "cannot read the header");
  const int64_t data_size = int64_t(file_size - 8 - header_len);

  const Json root = JsonParser(text, path).parse_document();
  if (root.kind != Json::Kind::object) fail(path, "the JSON header is not an object");

  SafetensorsFile result;
  std::vector<Entry> entries;
  for (size_t i = 0; i < root.keys.size(); ++i) {
    const std::string& name = root.keys[i];
    const Json& v = root.items[i];
    if (name == "__metadata__") {
      if (v.kind != Json::Kind::object) fail(path, "\"__metadata__\" is not an object");
      for (size_t m = 0; m < v.keys.size(); ++m) {
        if (v.items[m].kind != Json::Kind::string)
          fail(path, "metadata value \"", v.keys[m], "\" is not a string");
        result.metadata[v.keys[m]] = v.items[m].str;
      }
      continue;
    }
    if (v.kind != Json::Kind::object) fail(path, "entry \"", name, "\" is not an object");
    const Json* dtype = nullptr;
    const Json* shape = nullptr;
    const Json* offsets = nullptr;
    for (size_t f = 0; f < v.keys.size(); ++f) {
      if (v.keys[f] == "dtype") dtype = &v.items[f];
      if (v.keys[f] == "shape") shape = &v.items[f];
      if (v.keys[f] == "data_offsets") offsets = &v.items[f];
    }
    if (!dtype || !shape || !offsets)
      fail(path, "tensor \"", name, "\" lacks ",
           !dtype   ? "\"dtype\""
           : !shape ? "\"shape\""
                    : "\"data_offsets\"");
    Entry e{name, DType::f32, {}, 0, 0};
    if (dtype->kind != Json::Kind::string) fail(path, "tensor \"", name, "\": dtype not a string");
    if (!parse_format_name(dtype->str, e.dtype))
      fail(path, "tensor \"", name, "\" has unknown dtype \"", dtype->str,
           "\" (supported: F32, F64, BF16, F16, I32, I64, BOOL)");
    if (shape->kind != Json::Kind::array) fail(path, "tensor \"", name, "\": shape not an array");
    int64_t numel = 1;
    bool overflow = false;
    for (const Json& d : shape->items) {
      if (d.kind != Json::Kind::integer || d.integer < 0)
        fail(path, "tensor \"", name, "\": shape entries must be non-negative integers");
      e.shape.push_back(d.integer);
      if (d.integer != 0 && numel > std::numeric_limits<int64_t>::max() / 8 / d.integer)
        overflow = true;
      numel *= d.integer;
    }
    if (offsets->kind != Json::Kind::array || offsets->items.size() != 2 ||
        offsets->items[0].kind != Json::Kind::integer ||
        offsets->items[1].kind != Json::Kind::integer)
      fail(path, "tensor \"", name, "\": data_offsets must be two integers");
    e.begin = offsets->items[0].integer;
    e.end = offsets->items[1].integer;
    if (e.begin < 0 || e.end < e.begin || e.end > data_size)
      fail(path, "tensor \"", name, "\": data_offsets [", e.begin, ", ", e.end,
           "] out of range (the data section holds ", data_size, " bytes",
           e.end > data_size ? "; file truncated?)" : ")");
    const int64_t nbytes = e.end - e.begin;
    if (overflow || numel * int64_t(dtype_size(e.dtype)) != nbytes)
      fail(path, "tensor \"", name, "\": shape ", shape_str(e.shape), " of ", dtype->str,
           " does not match its ", nbytes, " data bytes");
    entries.push_back(std::move(e));
  }

  // The format forbids overlaps and holes: sorted by offset, the tensors tile the data section.
  std::vector<const Entry*> sorted;
  for (const Entry& e : entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  int64_t cursor = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : sorted) {
    if (e->begin < cursor)
      fail(path, "tensors \"", prev->name, "\" and \"", e->name, "\" overlap (bytes [", e->begin,
           ", ", cursor, "))");
    if (e->begin > cursor)
      fail(path, "bytes [", cursor, ", ", e->begin, ") of the data section belong to no tensor");
    cursor = e->end;
    prev = e;
  }
  if (cursor != data_size)
    fail(path, "bytes [", cursor, ", ", data_size, ") of the data section belong to no tensor");

  for (const Entry& e : entries) {
    Tensor t = empty(e.shape, e.dtype);
    const int64_t nbytes = e.end - e.begin;
    in.seekg(std::streamoff(8 + header_len + uint64_t(e.begin)));
    if (!in.read(static_cast<char*>(t.raw_data()), std::streamsize(nbytes)))
      fail(path, "tensor \"", e.name, "\": read of ", nbytes, " bytes failed (file truncated?)");
    if (e.dtype == DType::boolean) {
      const auto* p = static_cast<const unsigned char*>(t.raw_data());
      for (int64_t i = 0; i < nbytes; ++i)
        if (p[i] > 1)
          fail(path, "tensor \"", e.name, "\": bool element ", i, " holds byte ", int(p[i]),
               " (must be 0 or 1)");
    }
    result.tensors.emplace_back(e.name, std::move(t));
  }
  return result;
}

}  // namespace loom
