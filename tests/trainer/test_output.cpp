#include <png.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "testing.h"
#include "trainer/output/image_grid.h"
#include "trainer/output/metrics.h"
#include "trainer/output/plot.h"
#include "trainer/output/progress.h"

namespace loom::trainer {
namespace {

namespace fs = std::filesystem;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

using loom::testing::expect_error;

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

class Output : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("loom_output_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

// -- metrics.jsonl ------------------------------------------------------------------------------

TEST_F(Output, MetricsRoundTripExactlyWithNullForNonFinite) {
  const std::string path = file("metrics.jsonl");
  const double awkward = 0.1 + 0.2;
  {
    MetricsWriter w(path, false);
    w.write({{"step", 1}, {"loss", 0.1}});
    w.write({{"step", 2}, {"loss", kNaN}, {"grad_norm", kInf}, {"lr", awkward}});
    w.write({{"step", 123456789012.0},
             {"tiny", 4.9e-324},
             {"neg_zero", -0.0},
             {"quote\"back\\slash", -1.5e300}});
    // Flushed per line: the text is on disk while the writer is still open.
    EXPECT_EQ(read_all(path).substr(0, 23), "{\"step\":1,\"loss\":0.1}\n{");
  }
  const auto rows = read_metrics(path);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::map<std::string, double>{{"step", 1}, {"loss", 0.1}}));
  EXPECT_EQ(rows[1].at("step"), 2);
  EXPECT_TRUE(std::isnan(rows[1].at("loss")));
  EXPECT_TRUE(std::isnan(rows[1].at("grad_norm")));
  EXPECT_EQ(std::bit_cast<uint64_t>(rows[1].at("lr")), std::bit_cast<uint64_t>(awkward));
  EXPECT_EQ(rows[2].at("step"), 123456789012.0);
  EXPECT_EQ(rows[2].at("tiny"), 4.9e-324);
  EXPECT_TRUE(std::signbit(rows[2].at("neg_zero")));
  EXPECT_EQ(rows[2].at("quote\"back\\slash"), -1.5e300);
  EXPECT_NE(read_all(path).find("\"loss\":null,\"grad_norm\":null"), std::string::npos);

  {
    MetricsWriter w(path, true);  // resume appends
    w.write({{"step", 3}});
  }
  EXPECT_EQ(read_metrics(path).size(), 4u);
  {
    MetricsWriter w(path, false);  // a fresh run starts over
    w.write({{"step", 1}});
  }
  EXPECT_EQ(read_metrics(path).size(), 1u);
}

TEST_F(Output, MetricsReaderToleratesOnlyACutOffLastLine) {
  const std::string path = file("metrics.jsonl");
  write_all(path, "{\"step\":1,\"loss\":0.5}\n\n{\"step\":2,\"lo");
  const auto rows = read_metrics(path);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].at("loss"), 0.5);

  write_all(path, "{\"step\":1}\n{\"step\":2,\"loss\":inf}\n{\"step\":3}\n");
  expect_error([&] { read_metrics(path); }, {"[metrics] " + path + ":2: "});
  write_all(path, "{\"step\":01}\n");
  expect_error([&] { read_metrics(path); }, {":1: ", "leading zero"});
  write_all(path, "{\"a\":1,\"a\":2}\n");
  expect_error([&] { read_metrics(path); }, {"duplicate key"});
  expect_error([&] { read_metrics(file("absent.jsonl")); }, {"cannot open"});

  MetricsWriter w(path, false);
  expect_error([&] { w.write({{"step", 1}, {"step", 2}}); }, {"given twice"});
  expect_error([&] { w.write({{"", 1}}); }, {"empty field name"});
  expect_error([&] { MetricsWriter(file("no/such/dir/m.jsonl"), false); }, {"cannot open"});
}

// -- PNG grid -----------------------------------------------------------------------------------

struct Png {
  uint32_t width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  uint8_t at(uint32_t x, uint32_t y, uint32_t c = 0) const {
    return pixels[(size_t(y) * width + x) * channels + c];
  }
};

// Decoded with libpng directly, independently of the writer.
Png read_png(const std::string& path) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  EXPECT_TRUE(png_image_begin_read_from_file(&image, path.c_str())) << image.message;
  Png out;
  out.width = image.width;
  out.height = image.height;
  out.channels = PNG_IMAGE_PIXEL_CHANNELS(image.format);
  // Keep the stored layout: gray stays one channel, RGB three.
  image.format = out.channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  out.channels = PNG_IMAGE_PIXEL_CHANNELS(image.format);
  out.pixels.resize(PNG_IMAGE_SIZE(image));
  EXPECT_TRUE(png_image_finish_read(&image, nullptr, out.pixels.data(), 0, nullptr))
      << image.message;
  return out;
}

TEST_F(Output, GrayGridHasTheLayoutAndValues) {
  // 3 images of 2x3, two per row, padding 1: 2 * (3 + 1) + 1 wide, 2 * (2 + 1) + 1 high.
  std::vector<float> v(3 * 2 * 3, 0.0f);  // 0 -> 127.5 -> 128 unless set below
  v[0] = 1.0f;                            // image 0 (0, 0): white
  v[1] = -1.0f;                           // image 0 (0, 1): black
  v[2] = 3.0f;                            // clamped to white
  v[6 + 5] = 0.5f;                        // image 1 (1, 2): 191.25 -> 191
  v[12 + 0] = -0.5f;                      // image 2 (0, 0): 63.75 -> 64
  v[12 + 3] = -7.0f;                      // image 2 (1, 0): clamped to black
  v[12 + 4] = std::nanf("");              // image 2 (1, 1): NaN -> black
  const std::string path = file("grid.png");
  save_png(path, from_vector<float>(v, {3, 1, 2, 3}), 2, 1);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const Png png = read_png(path);
  ASSERT_EQ(png.width, 9u);
  ASSERT_EQ(png.height, 7u);
  ASSERT_EQ(png.channels, 1u);
  EXPECT_EQ(png.at(1, 1), 255);  // image 0 starts after one padding pixel
  EXPECT_EQ(png.at(2, 1), 0);
  EXPECT_EQ(png.at(3, 1), 255);
  EXPECT_EQ(png.at(1, 2), 128);
  EXPECT_EQ(png.at(5, 1), 128);  // image 1 at x0 = 1 + 3 + 1 = 5
  EXPECT_EQ(png.at(7, 2), 191);
  EXPECT_EQ(png.at(1, 4), 64);  // image 2 on the second row at y0 = 1 + 2 + 1 = 4
  EXPECT_EQ(png.at(1, 5), 0);
  EXPECT_EQ(png.at(2, 5), 0);
  EXPECT_EQ(png.at(3, 5), 128);
  EXPECT_EQ(png.at(4, 1), 0);  // padding between images
  EXPECT_EQ(png.at(0, 0), 0);  // border
  EXPECT_EQ(png.at(6, 5), 0);  // the empty fourth slot
}

TEST_F(Output, RgbGridKeepsChannelOrderAndAcceptsOtherDtypes) {
  // One 2x2 image: red, green / blue, white; f64 input.
  const std::vector<double> v = {1,  -1, -1, 1,   // R
                                 -1, 1,  -1, 1,   // G
                                 -1, -1, 1,  1};  // B
  const std::string path = file("rgb.png");
  save_png(path, from_vector<double>(v, {1, 3, 2, 2}), 8);
  const Png png = read_png(path);
  ASSERT_EQ(png.width, 2u + 2 * 2);  // a single column despite nrow 8
  ASSERT_EQ(png.height, 2u + 2 * 2);
  ASSERT_EQ(png.channels, 3u);
  EXPECT_EQ(std::vector<uint8_t>({png.at(2, 2, 0), png.at(2, 2, 1), png.at(2, 2, 2)}),
            std::vector<uint8_t>({255, 0, 0}));
  EXPECT_EQ(std::vector<uint8_t>({png.at(3, 2, 0), png.at(3, 2, 1), png.at(3, 2, 2)}),
            std::vector<uint8_t>({0, 255, 0}));
  EXPECT_EQ(std::vector<uint8_t>({png.at(2, 3, 0), png.at(2, 3, 1), png.at(2, 3, 2)}),
            std::vector<uint8_t>({0, 0, 255}));
  EXPECT_EQ(std::vector<uint8_t>({png.at(3, 3, 0), png.at(3, 3, 1), png.at(3, 3, 2)}),
            std::vector<uint8_t>({255, 255, 255}));
}

TEST_F(Output, PngRejectsBadInputWithoutWriting) {
  const std::string path = file("bad.png");
  expect_error([&] { save_png(path, zeros({2, 3, 4}), 1); }, {"[png] " + path, "[N, C, H, W]"});
  expect_error([&] { save_png(path, zeros({1, 2, 4, 4}), 1); }, {"1 or 3 channels"});
  expect_error([&] { save_png(path, zeros({1, 1, 4, 4}, DType::i64), 1); }, {"floating"});
  expect_error([&] { save_png(path, zeros({1, 1, 4, 4}), 0); }, {"nrow"});
  expect_error([&] { save_png(path, zeros({1, 1, 4, 4}), 1, -1); }, {"padding"});
  expect_error([&] { save_png(file("no/dir/x.png"), zeros({1, 1, 4, 4}), 1); }, {"cannot create"});
  EXPECT_FALSE(fs::exists(path));
}

// -- SVG plot -----------------------------------------------------------------------------------

// Checks that every tag is closed in order (a small well-formedness test) and returns the
// number of elements named `name`.
::testing::AssertionResult well_formed(const std::string& svg) {
  if (svg.rfind("<svg", 0) != 0) return ::testing::AssertionFailure() << "does not start <svg";
  std::vector<std::string> stack;
  size_t pos = 0;
  while ((pos = svg.find('<', pos)) != std::string::npos) {
    const size_t end = svg.find('>', pos);
    if (end == std::string::npos) return ::testing::AssertionFailure() << "unclosed '<'";
    const std::string tag = svg.substr(pos + 1, end - pos - 1);
    pos = end + 1;
    if (tag.empty()) return ::testing::AssertionFailure() << "empty tag";
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1))
        return ::testing::AssertionFailure() << "mismatched </" << tag.substr(1) << ">";
      stack.pop_back();
    } else if (tag.back() != '/') {
      stack.push_back(tag.substr(0, tag.find_first_of(" \n")));
    }
    if (stack.empty() && svg.find('<', pos) != std::string::npos)
      return ::testing::AssertionFailure() << "content after the root element";
  }
  if (!stack.empty()) return ::testing::AssertionFailure() << "<" << stack.back() << "> not closed";
  for (const char* bad : {"nan", "inf"})
    if (svg.find(bad) != std::string::npos)
      return ::testing::AssertionFailure() << "non-finite number in the output";
  return ::testing::AssertionSuccess();
}

TEST_F(Output, SvgPlotHasOnePathPerSeriesAxesAndLabels) {
  std::vector<double> steps, loss, ema;
  for (int i = 0; i < 50; ++i) {
    steps.push_back(10.0 * i);
    loss.push_back(1.0 / (1 + i));
    ema.push_back(0.8 / (1 + i) + 0.01);
  }
  const std::string path = file("loss.svg");
  save_loss_plot_svg(path, steps, {loss, ema}, {"loss", "ema <smoothed>"}, "run \"a\" & b");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  const std::string svg = read_all(path);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, "<path class=\"series\""), 2u);
  EXPECT_NE(svg.find("run &quot;a&quot; &amp; b"), std::string::npos);
  EXPECT_NE(svg.find("ema &lt;smoothed&gt;"), std::string::npos);
  EXPECT_NE(svg.find(">step</text>"), std::string::npos);
  EXPECT_NE(svg.find(">400</text>"), std::string::npos);  // step ticks every 100
  EXPECT_NE(svg.find(">0.2</text>"), std::string::npos);  // value ticks every 0.2 ...
  EXPECT_NE(svg.find(">1</text>"), std::string::npos);    // ... up to the widened top
  EXPECT_EQ(count(svg, " L"), 2u * 49);                   // every point after the first is joined

  save_loss_plot_svg(path, steps, {loss}, {"loss"}, "log", true);
  const std::string log_svg = read_all(path);
  EXPECT_TRUE(well_formed(log_svg));
  EXPECT_NE(log_svg.find(">0.01</text>"), std::string::npos);
  EXPECT_NE(log_svg.find(">1</text>"), std::string::npos);
}

TEST_F(Output, SvgPlotHandlesEmptyConstantAndGappySeries) {
  const std::string path = file("p.svg");
  save_loss_plot_svg(path, {}, {{}}, {"loss"}, "empty");
  std::string svg = read_all(path);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, "<path class=\"series\""), 1u);

  save_loss_plot_svg(path, {}, {}, {}, "nothing at all");
  EXPECT_TRUE(well_formed(read_all(path)));

  save_loss_plot_svg(path, {5, 5, 5}, {{0.25, 0.25, 0.25}, {0, 0, 0}}, {"flat", "zero"}, "const");
  svg = read_all(path);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, "<path class=\"series\""), 2u);

  // NaN breaks the line into two pieces; on a log axis 0 and negatives do too.
  save_loss_plot_svg(path, {1, 2, 3, 4, 5}, {{1, 2, kNaN, 4, 5}}, {"gap"}, "gap");
  svg = read_all(path);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, " M"), 1u);
  save_loss_plot_svg(path, {1, 2, 3, 4, 5}, {{1, 0, 3, -1, 5}}, {"gap"}, "log gap", true);
  svg = read_all(path);
  EXPECT_TRUE(well_formed(svg));
  EXPECT_EQ(count(svg, " L"), 0u);  // three isolated points
  EXPECT_EQ(count(svg, " l0 0"), 3u);

  expect_error(
      [&] {
        save_loss_plot_svg(path, {1, 2}, {{1}}, {"short"}, "t");
      },
      {"[plot] " + path, "\"short\" has 1 values for 2 steps"});
  expect_error([&] { save_loss_plot_svg(path, {1}, {{1}}, {}, "t"); }, {"1 series but 0 names"});
}

// -- console ------------------------------------------------------------------------------------

TEST(FormatDuration, PicksTheUnitByMagnitude) {
  EXPECT_EQ(format_duration(0), "0.0s");
  EXPECT_EQ(format_duration(12.34), "12.3s");
  EXPECT_EQ(format_duration(59.94), "59.9s");
  EXPECT_EQ(format_duration(59.96), "1m00s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3599.4), "59m59s");
  EXPECT_EQ(format_duration(3599.6), "1h00m");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(90000), "25h00m");
  EXPECT_EQ(format_duration(-1), "--");
  EXPECT_EQ(format_duration(kNaN), "--");
  EXPECT_EQ(format_duration(kInf), "--");
}

TEST(ProgressLine, RendersBarCountsEtaAndStatus) {
  EXPECT_EQ(ProgressLine::render(12, 100, 185, "loss 0.5", 200),
            "[##" + std::string(22, '.') + "] 12/100  12%  ETA 3m05s  loss 0.5");
  EXPECT_EQ(ProgressLine::render(100, 100, 0, "", 200),
            "[" + std::string(24, '#') + "] 100/100 100%  ETA 0.0s");
  EXPECT_EQ(ProgressLine::render(0, 0, -1, "", 200),
            "[" + std::string(24, '.') + "] 0/0   0%  ETA --");
  const std::string cut = ProgressLine::render(12, 100, 185, "loss 0.5", 20);
  EXPECT_EQ(cut.size(), 19u);
  EXPECT_EQ(cut, ProgressLine::render(12, 100, 185, "loss 0.5", 200).substr(0, 19));
}

TEST(ProgressLine, DrawsNothingOnAStreamThatIsNotATerminal) {
  std::ostringstream os;
  {
    ProgressLine p(os);
    EXPECT_FALSE(p.enabled());
    p.update(1, 10, 5, "status");
    p.clear();
    p.update(10, 10, 0, "done");
  }
  EXPECT_EQ(os.str(), "");
}

}  // namespace
}  // namespace loom::trainer
