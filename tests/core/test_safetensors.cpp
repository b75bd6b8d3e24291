#include "core/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "testing.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using testing::allclose;

std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor c = t.contiguous();
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  return {p, p + c.numel() * int64_t(dtype_size(c.dtype()))};
}

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("loom_safetensors_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a file from a header string and raw data bytes, as a foreign writer would.
  std::string write_raw(const std::string& name, const std::string& header,
                        const std::string& data = "", int64_t len_override = -1) const {
    const std::string path = file(name);
    std::ofstream out(path, std::ios::binary);
    const uint64_t n = len_override >= 0 ? uint64_t(len_override) : header.size();
    for (int i = 0; i < 8; ++i) out.put(char((n >> (8 * i)) & 0xff));
    out << header << data;
    return path;
  }

  // Expects load_safetensors(path) to throw loom::Error naming the path and `problem`.
  static void expect_load_error(const std::string& path, const std::string& problem) {
    try {
      load_safetensors(path);
      ADD_FAILURE() << "expected loom::Error containing \"" << problem << "\" for " << path;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("[safetensors] " + path + ": "), std::string::npos) << msg;
      EXPECT_NE(msg.find(problem), std::string::npos) << msg;
    }
  }

  fs::path dir_;
};

// The little-endian u64 that opens a safetensors file.
uint64_t header_length(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char len[8] = {};
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  return n;
}

std::string le_i32(std::initializer_list<int32_t> v) {
  std::string s;
  for (int32_t x : v) s.append(reinterpret_cast<const char*>(&x), 4);
  return s;
}

TEST_F(Safetensors, RoundTripsEveryDtype) {
  const std::vector<float> fv = {1.5f, -2.25f, 3.0e-3f, 65504.0f, -0.0f, 7.0f};
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", from_vector<float>(fv, {2, 3})},
      {"f64", from_vector<double>({1e-300, -2.5, 3.141592653589793}, {3})},
      {"bf16", from_vector<float>(fv, {3, 2}, DType::bf16)},
      {"f16", from_vector<float>(fv, {6}, DType::f16)},
      {"i32", from_vector<int32_t>({-7, 0, 2147483647, -2147483647 - 1}, {2, 2})},
      {"i64", from_vector<int64_t>({int64_t(1) << 40, -3}, {2, 1})},
      {"bool", from_vector<uint8_t>({1, 0, 0, 1, 1}, {5}, DType::boolean)},
  };
  const std::string path = file("all.safetensors");
  save_safetensors(path, tensors);
  const SafetensorsFile loaded = load_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, want] = tensors[i];
    const auto& [got_name, got] = loaded.tensors[i];
    EXPECT_EQ(got_name, name);
    EXPECT_EQ(got.dtype(), want.dtype()) << name;
    EXPECT_EQ(got.shape(), want.shape()) << name;
    EXPECT_TRUE(got.is_contiguous()) << name;
    EXPECT_EQ(bytes_of(got), bytes_of(want)) << name;
  }
  EXPECT_TRUE(loaded.metadata.empty());
  // Values, not only bytes: the 16-bit types decode to what was stored.
  EXPECT_TRUE(allclose(loaded.tensors[2].second.to(DType::f32),
                       from_vector<float>(fv, {3, 2}, DType::bf16).to(DType::f32), 0, 0));
  EXPECT_EQ(loaded.tensors[6].second.to_vector<uint8_t>(), (std::vector<uint8_t>{1, 0, 0, 1, 1}));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(Safetensors, NonContiguousViewsAreWrittenInLogicalOrder) {
  const Tensor base = arange(0, 24, 1, DType::f64).reshape({2, 3, 4});
  const Tensor transposed = base.transpose(0, 2);  // [4, 3, 2]
  const Tensor strided = base.slice(2, 0, 4, 2);   // [2, 3, 2], step 2
  const Tensor broadcast = scalar(5, DType::i64).reshape({1}).expand({3});
  ASSERT_FALSE(transposed.is_contiguous());
  ASSERT_FALSE(strided.is_contiguous());
  const std::string path = file("views.safetensors");
  save_safetensors(path, {{"t", transposed}, {"s", strided}, {"b", broadcast}});
  const SafetensorsFile loaded = load_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), 3u);
  EXPECT_EQ(loaded.tensors[0].second.shape(), (Shape{4, 3, 2}));
  EXPECT_EQ(loaded.tensors[0].second.to_vector<double>(), transposed.to_vector<double>());
  EXPECT_EQ(loaded.tensors[1].second.to_vector<double>(), strided.to_vector<double>());
  EXPECT_EQ(loaded.tensors[2].second.to_vector<int64_t>(), (std::vector<int64_t>{5, 5, 5}));
  // Only the logical elements were written, not the strided storage behind them.
  EXPECT_EQ(fs::file_size(path) - 8 - header_length(path), uint64_t((24 + 12) * 8 + 3 * 8));
}

TEST_F(Safetensors, ZeroDimAndEmptyTensors) {
  const std::string path = file("scalars.safetensors");
  save_safetensors(path, {{"empty", zeros({0, 3}, DType::f32)},
                          {"scalar", scalar(-4.75, DType::f64)},
                          {"empty2", zeros({2, 0}, DType::i32)}});
  const SafetensorsFile loaded = load_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), 3u);
  EXPECT_EQ(loaded.tensors[0].second.shape(), (Shape{0, 3}));
  EXPECT_EQ(loaded.tensors[1].second.shape(), Shape{});
  EXPECT_EQ(loaded.tensors[1].second.dtype(), DType::f64);
  EXPECT_EQ(loaded.tensors[1].second.item(), -4.75);
  EXPECT_EQ(loaded.tensors[2].second.shape(), (Shape{2, 0}));
  EXPECT_EQ(loaded.tensors[2].second.dtype(), DType::i32);
}

TEST_F(Safetensors, MetadataAndAwkwardNamesRoundTrip) {
  const std::map<std::string, std::string> meta = {
      {"format", "pt"},
      {"quote\"back\\slash", "line\nbreak\ttab\x01"},
      {"unicode", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x99\x82"},
      {"empty", ""}};
  const std::string path = file("meta.safetensors");
  save_safetensors(path, {{"layer.0/w\"x", ones({2}, DType::f32)}}, meta);
  const SafetensorsFile loaded = load_safetensors(path);
  EXPECT_EQ(loaded.metadata, meta);
  ASSERT_EQ(loaded.tensors.size(), 1u);
  EXPECT_EQ(loaded.tensors[0].first, "layer.0/w\"x");
}

TEST_F(Safetensors, HeaderIsPaddedSoDataIsAligned) {
  const std::string path = file("aligned.safetensors");
  save_safetensors(path, {{"a", ones({3}, DType::f32)}}, {{"k", "v"}});
  const uint64_t n = header_length(path);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(fs::file_size(path), 8 + n + 12);
}

TEST_F(Safetensors, OverwritesAnExistingFileAtomically) {
  const std::string path = file("over.safetensors");
  save_safetensors(path, {{"a", ones({4}, DType::f64)}});
  save_safetensors(path, {{"b", full({2}, 3.0, DType::f64)}});
  const SafetensorsFile loaded = load_safetensors(path);
  ASSERT_EQ(loaded.tensors.size(), 1u);
  EXPECT_EQ(loaded.tensors[0].first, "b");
  EXPECT_EQ(loaded.tensors[0].second.to_vector<double>(), (std::vector<double>{3, 3}));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(Safetensors, ReadsAFileWrittenByAnotherWriter) {
  // Keys in any order, whitespace, escapes and a metadata block placed last.
  const std::string header =
      " { \"b\\u00e9ta\" : {\"shape\": [2], \"dtype\": \"I32\", \"data_offsets\": [8, 16]},\n"
      "   \"alpha\": {\"dtype\": \"I32\", \"shape\": [1, 2], \"data_offsets\": [0, 8]},\n"
      "   \"__metadata__\": {\"note\": \"a\\\"b\", \"emoji\": \"\\ud83d\\ude42\\n\\/\"} }   ";
  const std::string path =
      write_raw("foreign.safetensors", header, le_i32({10, -20}) + le_i32({30, 40}));
  const SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].first, "b\xc3\xa9ta");
  EXPECT_EQ(f.tensors[0].second.to_vector<int32_t>(), (std::vector<int32_t>{30, 40}));
  EXPECT_EQ(f.tensors[1].first, "alpha");
  EXPECT_EQ(f.tensors[1].second.shape(), (Shape{1, 2}));
  EXPECT_EQ(f.tensors[1].second.to_vector<int32_t>(), (std::vector<int32_t>{10, -20}));
  EXPECT_EQ(f.metadata.at("note"), "a\"b");
  EXPECT_EQ(f.metadata.at("emoji"), "\xf0\x9f\x99\x82\n/");
}

// -- malformed input ---------------------------------------------------------------------------

const std::string kOneI32 = R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})";

TEST_F(Safetensors, MissingFileThrows) {
  expect_load_error(file("does_not_exist.safetensors"), "cannot open");
}

TEST_F(Safetensors, FileShorterThanTheLengthPrefixThrows) {
  const std::string path = file("short.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  expect_load_error(path, "truncated file: 3 bytes");
}

TEST_F(Safetensors, HeaderLengthPastEndOfFileThrows) {
  const std::string path = write_raw("pastend.safetensors", kOneI32, le_i32({1, 2}), 4096);
  expect_load_error(path, "header length 4096 runs past the end of the file");
}

TEST_F(Safetensors, TruncatedDataThrows) {
  const std::string path = file("cut.safetensors");
  save_safetensors(path, {{"a", ones({16}, DType::f64)}});
  fs::resize_file(path, fs::file_size(path) - 5);
  expect_load_error(path, "file truncated?");
}

TEST_F(Safetensors, MalformedJsonThrows) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]})", "expected '}'"},
      {R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}} x)", "trailing"},
      {R"({"a":{"dtype":"I32","shape":[2.0],"data_offsets":[0,8]}})", "only integers"},
      {R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8],}})", "expected a string key"},
      {R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8], "x": true}})", "unsupported"},
      {R"({"a":{"dtype":"I32\q","shape":[2],"data_offsets":[0,8]}})", "unknown escape"},
      {R"({"a\ud83d":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})", "unpaired surrogate"},
      {R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,99999999999999999999]}})",
       "64-bit range"},
      {"{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}", "expected '}'"},
      {"", "unexpected end"},
      {"[1, 2]", "not an object"},
      {std::string(40, '[') + std::string(40, ']'), "nesting"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].first);
    expect_load_error(write_raw("json" + std::to_string(i), cases[i].first, le_i32({1, 2})),
                      cases[i].second);
  }
}

TEST_F(Safetensors, DuplicateNamesThrow) {
  const std::string header = R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
                             R"("a":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}})";
  expect_load_error(write_raw("dup.safetensors", header, le_i32({1, 2})), "duplicate key \"a\"");
}

TEST_F(Safetensors, UnknownDtypeThrows) {
  const std::string header = R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})";
  expect_load_error(write_raw("dtype.safetensors", header, le_i32({1, 2})),
                    "unknown dtype \"F8_E4M3\"");
}

TEST_F(Safetensors, MissingFieldThrows) {
  const std::string header = R"({"a":{"dtype":"I32","data_offsets":[0,8]}})";
  expect_load_error(write_raw("field.safetensors", header, le_i32({1, 2})), "lacks \"shape\"");
}

TEST_F(Safetensors, OffsetsOutOfRangeThrow) {
  const std::string past = R"({"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}})";
  expect_load_error(write_raw("range1.safetensors", past, le_i32({1, 2})), "out of range");
  const std::string reversed = R"({"a":{"dtype":"I32","shape":[0],"data_offsets":[8,0]}})";
  expect_load_error(write_raw("range2.safetensors", reversed, le_i32({1, 2})), "out of range");
  const std::string negative = R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[-8,0]}})";
  expect_load_error(write_raw("range3.safetensors", negative, le_i32({1, 2})), "out of range");
}

TEST_F(Safetensors, OverlappingOffsetsThrow) {
  const std::string header = R"({"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})";
  expect_load_error(write_raw("overlap.safetensors", header, le_i32({1, 2, 3})),
                    "\"a\" and \"b\" overlap");
}

TEST_F(Safetensors, HolesInTheDataSectionThrow) {
  const std::string gap = R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}})";
  expect_load_error(write_raw("gap.safetensors", gap, le_i32({1, 2, 3})),
                    "bytes [4, 8) of the data section belong to no tensor");
  expect_load_error(write_raw("tail.safetensors", kOneI32, le_i32({1, 2, 3})),
                    "bytes [8, 12) of the data section belong to no tensor");
}

TEST_F(Safetensors, ShapeSizeMismatchThrows) {
  const std::string header = R"({"a":{"dtype":"I64","shape":[2],"data_offsets":[0,8]}})";
  expect_load_error(write_raw("mismatch.safetensors", header, le_i32({1, 2})),
                    "shape [2] of I64 does not match its 8 data bytes");
  const std::string negative = R"({"a":{"dtype":"I32","shape":[-2],"data_offsets":[0,8]}})";
  expect_load_error(write_raw("negshape.safetensors", negative, le_i32({1, 2})),
                    "non-negative integers");
  const std::string huge =
      R"({"a":{"dtype":"I32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})";
  expect_load_error(write_raw("huge.safetensors", huge, le_i32({1, 2})), "does not match");
}

TEST_F(Safetensors, BadBoolBytesThrow) {
  const std::string header = R"({"m":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]}})";
  expect_load_error(write_raw("bool.safetensors", header, std::string("\x01\x00\x02\x00", 4)),
                    "bool element 2 holds byte 2");
}

TEST_F(Safetensors, BadMetadataThrows) {
  const std::string header =
      R"({"__metadata__":{"k":[1]},"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})";
  expect_load_error(write_raw("meta.safetensors", header, le_i32({1, 2})),
                    "metadata value \"k\" is not a string");
}

TEST_F(Safetensors, SaveRejectsBadArgumentsAndLeavesNoFile) {
  const std::string path = file("bad_save.safetensors");
  EXPECT_THROW(save_safetensors(path, {{"a", ones({1})}, {"a", ones({1})}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"__metadata__", ones({1})}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"", ones({1})}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"u", Tensor()}}), Error);
  EXPECT_FALSE(fs::exists(path));
  const std::string nodir = file("no/such/dir/x.safetensors");
  try {
    save_safetensors(nodir, {{"a", ones({1})}});
    ADD_FAILURE() << "expected loom::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(nodir), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace loom
