#pragma once
// The loss curve of a run as a self-contained SVG (no scripts, fonts or external references),
// viewable in any browser.
//
// save_loss_plot_svg draws series[k][i] against steps[i], one polyline per series (an SVG
// <path> with class "series", drawn even when empty so every series is present), with axes,
// grid, "nice" ticks (1, 2, 5 x 10^k; decades on a log axis), axis labels, the title and a
// legend of `names`. Non-finite values, and values <= 0 when log_y, leave a gap in their line.
// Degenerate data still gives a valid plot: no steps or no finite values fall back to the unit
// range and a constant series gets a band around its value. Every series must have
// steps.size() values and names.size() must equal series.size(); otherwise loom::Error
// "[plot] <path>: ..." is thrown. The file is written atomically (path.tmp, fsync, rename).
#include <string>
#include <vector>

namespace loom::trainer {

void save_loss_plot_svg(const std::string& path, const std::vector<double>& steps,
                        const std::vector<std::vector<double>>& series,
                        const std::vector<std::string>& names, const std::string& title,
                        bool log_y = false);

}  // namespace loom::trainer
