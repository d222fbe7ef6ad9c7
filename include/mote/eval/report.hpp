#pragma once
// The report folder: results.json (every model's Summary, the loss curves per stage, the caller's
// extra JSON) and report.html, one self-contained page (no scripts, no external resources) with
// inline SVG plots: the loss curves, grouped bars of the metrics per model with interval whiskers,
// and a table of the figures. The folder is built under a temporary sibling name and renamed into
// place, so a crash leaves the old folder or the whole new one, never a half-written one.
//
// The page is laid out at fixed positions (report_layout), so a renderer check knows where each plot
// stands: <svg id="loss-plot">, <svg id="percent-plot"> and <svg id="score-plot">.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mote/core/error.hpp"
#include "mote/eval/metrics.hpp"
#include "mote/io/atomic_file.hpp"
#include "mote/io/json.hpp"

namespace mote::eval {

// One stage's training loss as (step, loss) points; a non-finite loss breaks the curve there.
struct LossSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

struct ModelResult {
  std::string name;  // "base", "mote", ...
  Summary summary;
};

struct Report {
  std::string title = "mote evaluation";
  std::vector<ModelResult> models;
  std::vector<LossSeries> loss_curves;
  io::json::Value extra;  // kept under "extra" in results.json and shown on the page when not null
};

// Where the page puts each plot, in CSS pixels from the page's top-left corner.
namespace report_layout {
struct Box {
  const char* id;
  int left, top, width, height;
};
inline constexpr Box loss_plot{"loss-plot", 20, 64, 760, 380};
inline constexpr Box percent_plot{"percent-plot", 20, 464, 760, 340};
inline constexpr Box score_plot{"score-plot", 20, 824, 760, 340};
inline constexpr int table_top = 1184;
inline constexpr int page_width = 800;
}  // namespace report_layout

// Text made safe for HTML and SVG content and attribute values; C0 controls other than tab and
// newlines become U+FFFD, since XML forbids them.
inline std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20 && ch != '\t' && ch != '\n' && ch != '\r') out += "\xEF\xBF\xBD";
        else out += ch;
    }
  }
  return out;
}

namespace report_detail {

inline constexpr const char* palette[] = {"#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#b07aa1",
                                          "#76b7b2", "#edc948", "#ff9da7", "#9c755f"};
inline const char* color(std::size_t i) { return palette[i % std::size(palette)]; }

inline std::string fixed(double x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  std::string s = buf;
  // "-0.0" (a tiny negative rounded away) reads as 0.
  if (s[0] == '-' && s.find_first_not_of("-0.") == std::string::npos) s.erase(0, 1);
  return s;
}
inline std::string px(double x) { return fixed(x, 1); }

// Tick positions at 1, 2 or 5 times a power of ten, covering [lo, hi] with about `target` steps.
struct Ticks {
  double first = 0, step = 1;
  int count = 0, decimals = 0;
  double last() const { return first + step * (count - 1); }
  double at(int i) const { return first + step * i; }
};
inline Ticks nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) {
    const double pad = lo == 0.0 ? 0.5 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / magnitude;
  Ticks t;
  t.step = (norm < 1.5 ? 1.0 : norm < 3.0 ? 2.0 : norm < 7.0 ? 5.0 : 10.0) * magnitude;
  t.first = std::floor(lo / t.step) * t.step;
  // Clamped: for a range tiny against its values the division loses precision, and an axis needs two ticks.
  t.count = std::clamp(static_cast<int>(std::ceil(hi / t.step - 1e-9) - std::floor(lo / t.step)) + 1, 2, 50);
  t.decimals = std::clamp(static_cast<int>(-std::floor(std::log10(t.step) + 1e-9)), 0, 12);
  return t;
}

inline std::string text(double x, double y, std::string_view content, std::string_view extra_attributes = "") {
  return "<text x=\"" + px(x) + "\" y=\"" + px(y) + "\"" + (extra_attributes.empty() ? "" : " ") +
         std::string(extra_attributes) + ">" + html_escape(content) + "</text>";
}
inline std::string line(double x1, double y1, double x2, double y2, std::string_view stroke, double width = 1.0) {
  return "<line x1=\"" + px(x1) + "\" y1=\"" + px(y1) + "\" x2=\"" + px(x2) + "\" y2=\"" + px(y2) + "\" stroke=\"" +
         std::string(stroke) + "\" stroke-width=\"" + px(width) + "\"/>";
}
inline std::string svg_open(const report_layout::Box& box, std::string_view label) {
  return "<svg id=\"" + std::string(box.id) + "\" class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" +
         std::to_string(box.width) + "\" height=\"" + std::to_string(box.height) + "\" viewBox=\"0 0 " +
         std::to_string(box.width) + " " + std::to_string(box.height) + "\" role=\"img\" aria-label=\"" +
         html_escape(label) + "\" style=\"position:absolute;left:" + std::to_string(box.left) +
         "px;top:" + std::to_string(box.top) + "px\">\n<rect class=\"background\" x=\"0\" y=\"0\" width=\"" +
         std::to_string(box.width) + "\" height=\"" + std::to_string(box.height) + "\" fill=\"#ffffff\"/>\n" +
         text(12, 22, label, "class=\"title\"") + "\n";
}

// Legend entries down the right-hand side: a colour swatch and the name.
inline std::string legend(const std::vector<std::string>& names, double x, double y, bool swatch_is_line) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) {
    const double row = y + 20.0 * static_cast<double>(i);
    if (swatch_is_line) out += line(x, row - 4, x + 22, row - 4, color(i), 3);
    else out += "<rect x=\"" + px(x) + "\" y=\"" + px(row - 11) + "\" width=\"14\" height=\"14\" fill=\"" + color(i) + "\"/>";
    out += text(x + 28, row, names[i], "class=\"legend\"") + "\n";
  }
  return out;
}

inline std::string loss_svg(const std::vector<LossSeries>& curves) {
  const auto& box = report_layout::loss_plot;
  std::string svg = svg_open(box, "Training loss per stage");
  const double x0 = 64, x1 = box.width - 180, y0 = 40, y1 = box.height - 48;
  constexpr double inf = std::numeric_limits<double>::infinity();
  double xmin = inf, xmax = -inf, ymin = inf, ymax = -inf;
  for (const auto& c : curves)
    for (const auto& [step, loss] : c.points)
      if (std::isfinite(step) && std::isfinite(loss)) {
        xmin = std::min(xmin, step), xmax = std::max(xmax, step);
        ymin = std::min(ymin, loss), ymax = std::max(ymax, loss);
      }
  if (!std::isfinite(xmin)) return svg + text(x0 + 40, (y0 + y1) / 2, "no loss curves recorded", "class=\"empty\"") + "\n</svg>\n";
  const Ticks xt = nice_ticks(xmin, xmax, 6), yt = nice_ticks(ymin, ymax, 5);
  const auto sx = [&](double v) { return x0 + (v - xt.first) / (xt.last() - xt.first) * (x1 - x0); };
  const auto sy = [&](double v) { return y1 - (v - yt.first) / (yt.last() - yt.first) * (y1 - y0); };
  for (int i = 0; i < xt.count; ++i) {
    const double x = sx(xt.at(i));
    svg += line(x, y0, x, y1, "#e6e6e6") + line(x, y1, x, y1 + 5, "#444") +
           text(x, y1 + 19, fixed(xt.at(i), xt.decimals), "text-anchor=\"middle\" class=\"tick\"") + "\n";
  }
  for (int i = 0; i < yt.count; ++i) {
    const double y = sy(yt.at(i));
    svg += line(x0, y, x1, y, "#e6e6e6") + line(x0 - 5, y, x0, y, "#444") +
           text(x0 - 8, y + 4, fixed(yt.at(i), yt.decimals), "text-anchor=\"end\" class=\"tick\"") + "\n";
  }
  svg += line(x0, y1, x1, y1, "#444") + line(x0, y0, x0, y1, "#444") + "\n";
  svg += text((x0 + x1) / 2, box.height - 10, "step", "text-anchor=\"middle\" class=\"axis-label\"");
  svg += text(16, (y0 + y1) / 2, "loss", "text-anchor=\"middle\" class=\"axis-label\" transform=\"rotate(-90 16 " +
                                             px((y0 + y1) / 2) + ")\"") + "\n";
  std::vector<std::string> names;
  for (std::size_t i = 0; i < curves.size(); ++i) {
    names.push_back(curves[i].name);
    std::string d;
    bool pen_down = false;
    std::size_t drawn = 0;
    for (const auto& [step, loss] : curves[i].points) {
      if (!std::isfinite(step) || !std::isfinite(loss)) {
        pen_down = false;
        continue;
      }
      d += (pen_down ? " L" : (d.empty() ? "M" : " M")) + px(sx(step)) + " " + px(sy(loss));
      pen_down = true;
      ++drawn;
    }
    if (drawn >= 2)
      svg += "<path class=\"series\" d=\"" + d + "\" fill=\"none\" stroke=\"" + color(i) +
             "\" stroke-width=\"2\" stroke-linejoin=\"round\"><title>" + html_escape(curves[i].name) + "</title></path>\n";
    // A curve with under two finite points gets dots, since a one-point path draws nothing.
    if (drawn < 2)
      for (const auto& [step, loss] : curves[i].points)
        if (std::isfinite(step) && std::isfinite(loss))
          svg += "<circle cx=\"" + px(sx(step)) + "\" cy=\"" + px(sy(loss)) + "\" r=\"3\" fill=\"" + color(i) + "\"/>";
  }
  svg += legend(names, x1 + 20, y0 + 10, true);
  return svg + "</svg>\n";
}

inline std::string interval_text(const Interval& iv, bool percent) {
  if (iv.empty()) return "n = 0";
  const int d = percent ? 1 : 2;
  return fixed(iv.value, d) + " [" + fixed(iv.low, d) + ", " + fixed(iv.high, d) + "] n=" + std::to_string(iv.n);
}

// Grouped bars: one group per metric, one bar per model, whiskers from low to high.
inline std::string bars_svg(const report_layout::Box& box, std::string_view title, bool percent,
                            const std::vector<ModelResult>& models) {
  std::string svg = svg_open(box, title);
  std::vector<const MetricInfo*> metrics;
  for (const auto& m : metric_table)
    if (m.percent == percent) metrics.push_back(&m);
  const double x0 = 64, x1 = box.width - 180, y0 = 40, y1 = box.height - 56;
  const double top = percent ? 100.0 : 10.0;
  if (models.empty()) return svg + text(x0 + 40, (y0 + y1) / 2, "no models to show", "class=\"empty\"") + "\n</svg>\n";
  const auto sy = [&](double v) { return y1 - std::clamp(v, 0.0, top) / top * (y1 - y0); };
  for (int i = 0; i <= 5; ++i) {
    const double v = top * i / 5.0, y = sy(v);
    svg += line(x0, y, x1, y, "#e6e6e6") + line(x0 - 5, y, x0, y, "#444") +
           text(x0 - 8, y + 4, fixed(v, 0), "text-anchor=\"end\" class=\"tick\"") + "\n";
  }
  svg += line(x0, y1, x1, y1, "#444") + line(x0, y0, x0, y1, "#444") + "\n";
  svg += text(16, (y0 + y1) / 2, percent ? "%" : "score", "text-anchor=\"middle\" class=\"axis-label\" transform=\"rotate(-90 16 " +
                                                               px((y0 + y1) / 2) + ")\"") + "\n";
  const double group = (x1 - x0) / static_cast<double>(metrics.size());
  const double bar = group * 0.75 / static_cast<double>(models.size());
  std::vector<std::string> names;
  for (const auto& model : models) names.push_back(model.name);
  for (std::size_t g = 0; g < metrics.size(); ++g) {
    const double gx = x0 + group * static_cast<double>(g) + group * 0.125;
    svg += text(x0 + group * (static_cast<double>(g) + 0.5), y1 + 20, metrics[g]->label,
                "text-anchor=\"middle\" class=\"group-label\"") + "\n";
    for (std::size_t m = 0; m < models.size(); ++m) {
      const Interval& iv = models[m].summary.*(metrics[g]->field);
      const double bx = gx + bar * static_cast<double>(m), cx = bx + bar / 2;
      const std::string tip = "<title>" + html_escape(models[m].name + ", " + metrics[g]->label + ": " + interval_text(iv, percent)) + "</title>";
      if (iv.empty()) {
        svg += text(cx, y1 - 6, "n=0", "text-anchor=\"middle\" class=\"empty\"") + "\n";
        continue;
      }
      const double y = sy(iv.value);
      svg += "<rect class=\"bar\" x=\"" + px(bx + 1) + "\" y=\"" + px(y) + "\" width=\"" + px(std::max(bar - 2, 1.0)) +
             "\" height=\"" + px(y1 - y) + "\" fill=\"" + color(m) + "\">" + tip + "</rect>\n";
      const double lo = sy(iv.low), hi = sy(iv.high), cap = std::min(bar / 4, 6.0);
      svg += "<g class=\"whisker\">" + line(cx, lo, cx, hi, "#222", 1.5) + line(cx - cap, lo, cx + cap, lo, "#222", 1.5) +
             line(cx - cap, hi, cx + cap, hi, "#222", 1.5) + "</g>\n";
    }
  }
  svg += legend(names, x1 + 20, y0 + 10, false);
  return svg + "</svg>\n";
}

inline std::string table_html(const std::vector<ModelResult>& models) {
  std::string out = "<table>\n<thead><tr><th>metric</th>";
  for (const auto& m : models) out += "<th>" + html_escape(m.name) + "</th>";
  out += "</tr></thead>\n<tbody>\n";
  for (const auto& metric : metric_table) {
    out += "<tr><th>" + html_escape(metric.label) + "</th>";
    for (const auto& m : models) out += "<td>" + html_escape(interval_text(m.summary.*metric.field, metric.percent)) + "</td>";
    out += "</tr>\n";
  }
  out += "<tr><th>items (harmful / benign / lookalike)</th>";
  for (const auto& m : models)
    out += "<td>" + std::to_string(m.summary.harmful) + " / " + std::to_string(m.summary.benign) + " / " +
           std::to_string(m.summary.lookalike) + "</td>";
  return out + "</tr>\n</tbody>\n</table>\n";
}

inline void check_names(const Report& report) {
  const auto distinct = [](const std::vector<std::string>& names, const char* what) {
    std::set<std::string> seen;
    for (const auto& n : names) {
      if (n.empty()) throw value_error(std::string("mote: eval: report: a ") + what + " has an empty name; expected a name");
      if (!seen.insert(n).second)
        throw value_error(std::string("mote: eval: report: two ") + what + "s are named \"" + n + "\"; expected distinct names");
    }
  };
  std::vector<std::string> models, curves;
  for (const auto& m : report.models) models.push_back(m.name);
  for (const auto& c : report.loss_curves) curves.push_back(c.name);
  distinct(models, "model");
  distinct(curves, "loss curve");
}

}  // namespace report_detail

// results.json's content: {"format", "version", "title", "summaries": {model: Summary},
// "loss_curves": {stage: [[step, loss], ...]}, "extra"}; a non-finite loss is written as null.
inline io::json::Value results_json(const Report& report) {
  using io::json::Value;
  report_detail::check_names(report);
  Value summaries = Value::object();
  for (const auto& m : report.models) summaries.set(m.name, to_json(m.summary));
  Value curves = Value::object();
  for (const auto& c : report.loss_curves) {
    Value points = Value::array();
    for (const auto& [step, loss] : c.points) {
      const bool integral_step = std::isfinite(step) && std::trunc(step) == step && std::abs(step) < 9e15;
      points.push_back(Value::array({integral_step ? Value(static_cast<std::int64_t>(step)) : std::isfinite(step) ? Value(step) : Value(),
                                     std::isfinite(loss) ? Value(loss) : Value()}));
    }
    curves.set(c.name, std::move(points));
  }
  return Value::object({{"format", "mote-eval-report"},
                        {"version", 1},
                        {"title", report.title},
                        {"summaries", std::move(summaries)},
                        {"loss_curves", std::move(curves)},
                        {"extra", report.extra}});
}

// The whole page as one string.
inline std::string render_html(const Report& report) {
  namespace L = report_layout;
  report_detail::check_names(report);
  std::string page =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + html_escape(report.title) +
      "</title>\n<style>\n"
      "body { margin: 0; background: #ffffff; color: #222; font-family: sans-serif; }\n"
      "h1 { position: absolute; left: 20px; top: 14px; margin: 0; font-size: 22px; width: " +
      std::to_string(L::page_width - 40) + "px; white-space: nowrap; overflow: hidden; }\n"
      "svg text { font-family: sans-serif; font-size: 12px; fill: #222; }\n"
      "svg text.title { font-size: 15px; font-weight: bold; }\n"
      "table { border-collapse: collapse; font-size: 13px; }\n"
      "th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }\n"
      "pre { background: #f6f6f6; padding: 8px; overflow-x: auto; }\n"
      "</style>\n</head>\n<body>\n<h1>" +
      html_escape(report.title) + "</h1>\n";
  page += report_detail::loss_svg(report.loss_curves);
  page += report_detail::bars_svg(L::percent_plot, "Safety and helpfulness (%)", true, report.models);
  page += report_detail::bars_svg(L::score_plot, "Help scores (1-10)", false, report.models);
  page += "<div id=\"figures\" style=\"position:absolute;left:20px;top:" + std::to_string(L::table_top) + "px;width:" +
          std::to_string(L::page_width - 40) + "px\">\n<h2>Figures</h2>\n"
          "<p>value [low, high] is the mean with its percentile-bootstrap interval; n is the number of answers it covers.</p>\n";
  page += report_detail::table_html(report.models);
  if (!report.extra.is_null()) page += "<h2>Extra</h2>\n<pre>" + html_escape(io::json::dump(report.extra, 2)) + "</pre>\n";
  return page + "</div>\n</body>\n</html>\n";
}

// Writes <folder>/results.json and <folder>/report.html atomically: built beside `folder` under a
// temporary name, then renamed into place (an existing folder is replaced only once the new one is
// complete). Any failure removes the temporary and leaves `folder` as it was.
inline void write_report(const std::filesystem::path& folder, const Report& report) {
  report_detail::check_names(report);
  io::StagedDirectory staged(folder, "eval report folder '" + folder.string() + "'");
  io::json::write_file(staged.path() / "results.json", results_json(report));
  const std::string html = render_html(report);
  io::atomic_write(staged.path() / "report.html", {html}, "'" + (folder / "report.html").string() + "'");
  staged.publish();
}

}  // namespace mote::eval
