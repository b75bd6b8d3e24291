#include "trainer/output/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "trainer/output/atomic_write.h"

namespace loom::trainer {

namespace {

constexpr double kWidth = 800, kHeight = 480;
constexpr double kLeft = 80, kRight = 24, kTop = 44, kBottom = 56;
constexpr const char* kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::string xml_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters are not allowed in XML 1.0 text.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n') out += c;
    }
  }
  return out;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// Range of the finite (and, on a log axis, positive) values; widened when empty or flat so the
// scale never divides by zero.
struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  void settle(bool log) {
    if (!(lo <= hi)) {
      lo = log ? 0.1 : 0;
      hi = 1;
    } else if (lo == hi) {
      if (log) {
        lo /= 2;
        hi *= 2;
      } else {
        const double pad = lo == 0 ? 1 : std::abs(lo) * 0.1;
        lo -= pad;
        hi += pad;
      }
    }
  }
};

// A step of 1, 2 or 5 x 10^k giving about `target` intervals over [lo, hi].
double nice_step(double lo, double hi, int target) {
  const double raw = (hi - lo) / target;
  if (!std::isfinite(raw) || raw <= 0) return 0;  // a span beyond double range
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
}

std::vector<double> linear_ticks(double lo, double hi, double step) {
  if (step <= 0) return {lo, hi};
  std::vector<double> ticks;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; ++k) {
    const double t = k * step;
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);  // no "-1.4e-17" instead of 0
  }
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> ticks;
  const int first = int(std::floor(std::log10(lo))), last = int(std::ceil(std::log10(hi)));
  // Less than about two decades shows 2x and 5x marks too, else the axis has one label.
  const bool fine = last - first <= 2;
  for (int e = first; e <= last; ++e)
    for (const double m : {1.0, 2.0, 5.0}) {
      if (m != 1.0 && !fine) continue;
      const double t = m * std::pow(10.0, e);
      if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) ticks.push_back(t);
    }
  return ticks;
}

}  // namespace

void save_loss_plot_svg(const std::string& path, const std::vector<double>& steps,
                        const std::vector<std::vector<double>>& series,
                        const std::vector<std::string>& names, const std::string& title,
                        bool log_y) {
  LOOM_CHECK(names.size() == series.size(), "[plot] ", path, ": ", series.size(), " series but ",
             names.size(), " names");
  for (size_t k = 0; k < series.size(); ++k)
    LOOM_CHECK(series[k].size() == steps.size(), "[plot] ", path, ": series \"", names[k],
               "\" has ", series[k].size(), " values for ", steps.size(), " steps");

  const auto usable = [&](size_t i, double v) {
    return std::isfinite(steps[i]) && std::isfinite(v) && (!log_y || v > 0);
  };
  Range xr, yr;
  for (const double s : steps)
    if (std::isfinite(s)) xr.add(s);
  for (const auto& values : series)
    for (size_t i = 0; i < values.size(); ++i)
      if (usable(i, values[i])) yr.add(values[i]);
  xr.settle(false);
  yr.settle(log_y);
  // The value axis is widened to whole ticks (decades on a log axis) so its ends are labelled.
  std::vector<double> yticks;
  if (log_y) {
    yr.lo = std::pow(10.0, std::floor(std::log10(yr.lo)));
    yr.hi = std::pow(10.0, std::ceil(std::log10(yr.hi)));
    yticks = log_ticks(yr.lo, yr.hi);
  } else if (const double step = nice_step(yr.lo, yr.hi, 5); step > 0) {
    yr.lo = std::floor(yr.lo / step + 1e-9) * step;
    yr.hi = std::ceil(yr.hi / step - 1e-9) * step;
    yticks = linear_ticks(yr.lo, yr.hi, step);
  } else {
    yticks = {yr.lo, yr.hi};
  }
  const std::vector<double> xticks = linear_ticks(xr.lo, xr.hi, nice_step(xr.lo, xr.hi, 6));

  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  const auto px = [&](double x) { return kLeft + (x - xr.lo) / (xr.hi - xr.lo) * pw; };
  const auto py = [&](double y) {
    const double f =
        log_y ? (std::log10(y) - std::log10(yr.lo)) / (std::log10(yr.hi) - std::log10(yr.lo))
              : (y - yr.lo) / (yr.hi - yr.lo);
    return kTop + (1 - f) * ph;
  };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
    << "\" viewBox=\"0 0 " << kWidth << " " << kHeight
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"" << kWidth << "\" height=\"" << kHeight << "\" fill=\"white\"/>\n";
  o << "<text x=\"" << kLeft + pw / 2 << "\" y=\"26\" text-anchor=\"middle\" font-size=\"16\">"
    << xml_escape(title) << "</text>\n";

  o << "<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n";
  for (const double t : xticks)
    o << "<line x1=\"" << fmt("%.2f", px(t)) << "\" y1=\"" << kTop << "\" x2=\""
      << fmt("%.2f", px(t)) << "\" y2=\"" << kTop + ph << "\"/>\n";
  for (const double t : yticks)
    o << "<line x1=\"" << kLeft << "\" y1=\"" << fmt("%.2f", py(t)) << "\" x2=\"" << kLeft + pw
      << "\" y2=\"" << fmt("%.2f", py(t)) << "\"/>\n";
  o << "</g>\n";

  o << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  o << "<g text-anchor=\"middle\">\n";
  for (const double t : xticks)
    o << "<text x=\"" << fmt("%.2f", px(t)) << "\" y=\"" << kTop + ph + 18 << "\">"
      << fmt("%.6g", t) << "</text>\n";
  o << "</g>\n<g text-anchor=\"end\">\n";
  for (const double t : yticks)
    o << "<text x=\"" << kLeft - 6 << "\" y=\"" << fmt("%.2f", py(t) + 4) << "\">" << fmt("%.4g", t)
      << "</text>\n";
  o << "</g>\n";
  o << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kHeight - 14
    << "\" text-anchor=\"middle\">step</text>\n";
  o << "<text transform=\"translate(18 " << kTop + ph / 2
    << ") rotate(-90)\" text-anchor=\"middle\">" << (log_y ? "value (log scale)" : "value")
    << "</text>\n";

  // Round caps make a zero-length subpath (an isolated point between gaps) show as a dot.
  o << "<g fill=\"none\" stroke-width=\"1.5\" stroke-linejoin=\"round\" "
       "stroke-linecap=\"round\">\n";
  for (size_t k = 0; k < series.size(); ++k) {
    std::string d;
    bool pen_down = false;
    for (size_t i = 0; i < steps.size(); ++i) {
      if (!usable(i, series[k][i])) {
        pen_down = false;
        continue;
      }
      const std::string xy = fmt("%.2f", px(steps[i])) + " " + fmt("%.2f", py(series[k][i]));
      d += pen_down ? " L" + xy : (d.empty() ? "M" : " M") + xy + " l0 0";
      pen_down = true;
    }
    o << "<path class=\"series\" stroke=\"" << kPalette[k % std::size(kPalette)] << "\" d=\"" << d
      << "\"><title>" << xml_escape(names[k]) << "</title></path>\n";
  }
  o << "</g>\n";

  o << "<g font-size=\"12\">\n";
  if (!series.empty())  // keeps the legend readable where it covers a line
    o << "<rect x=\"" << kLeft + pw - 158 << "\" y=\"" << kTop + 4 << "\" width=\"152\" height=\""
      << 18 * double(series.size()) + 6 << "\" fill=\"white\" fill-opacity=\"0.8\"/>\n";
  for (size_t k = 0; k < series.size(); ++k) {
    const double y = kTop + 16 + 18 * double(k);
    const double x = kLeft + pw - 150;
    o << "<line x1=\"" << x << "\" y1=\"" << y - 4 << "\" x2=\"" << x + 24 << "\" y2=\"" << y - 4
      << "\" stroke=\"" << kPalette[k % std::size(kPalette)] << "\" stroke-width=\"2\"/>\n";
    o << "<text x=\"" << x + 30 << "\" y=\"" << y << "\">" << xml_escape(names[k]) << "</text>\n";
  }
  o << "</g>\n</svg>\n";
  write_file_atomic(path, o.str(), "plot");
}

}  // namespace loom::trainer
