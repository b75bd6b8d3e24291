// Recipe parsing, validation against the schema, overrides and serialization.
#include "trainer/recipe/recipe.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include <toml++/toml.h>

#include "core/error.h"

namespace loom::trainer {
namespace {

using Value = std::variant<int64_t, double, bool, std::string>;

// -- schema lookups ------------------------------------------------------------------------------

std::string section_of(const std::string& key) {
  const auto dot = key.find('.');
  return dot == std::string::npos ? "" : key.substr(0, dot);
}

std::string leaf_of(const std::string& key) {
  const auto dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

const KeySpec* find_spec(const std::string& key) {
  for (const KeySpec& spec : recipe_schema())
    if (spec.key == key) return &spec;
  return nullptr;
}

// Sections in schema order.
const std::vector<std::string>& sections() {
  static const std::vector<std::string> list = [] {
    std::vector<std::string> out;
    for (const KeySpec& spec : recipe_schema()) {
      const std::string sec = section_of(spec.key);
      if (!sec.empty() && std::find(out.begin(), out.end(), sec) == out.end()) out.push_back(sec);
    }
    return out;
  }();
  return list;
}

bool is_section(const std::string& name) {
  return std::find(sections().begin(), sections().end(), name) != sections().end();
}

// -- formatting ----------------------------------------------------------------------------------

// Shortest text that parses back to the same double, always with a '.' or exponent so that TOML
// reads it as a float again.
std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::trunc(v) && std::abs(v) < 1e15) {
    std::string s = std::to_string(int64_t(v));
    if (v == 0 && std::signbit(v)) s = "-0";
    return s + ".0";
  }
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  std::string s(buf, res.ptr);
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

// Bounds print as integers when they are integers ("[1, 1000000]", not "[1.0, 1e+06]").
std::string format_bound(double v) {
  if (v == std::trunc(v) && std::abs(v) < 1e16) return std::to_string(int64_t(v));
  return format_double(v);
}

// A TOML basic string: quotes, backslashes and control characters escaped.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04X", unsigned(c));
          out += buf;
        } else {
          out += char(c);
        }
    }
  }
  return out + "\"";
}

std::string format_value(const Value& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) return format_double(*d);
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return quote(std::get<std::string>(v));
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

std::string choices_text(const KeySpec& spec) {
  std::vector<std::string> quoted;
  for (const std::string& c : spec.choices) quoted.push_back(quote(c));
  return join(quoted, ", ");
}

// What a TOML node holds, for "expected integer, got string \"abc\"".
std::string describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "string " + quote(*node.value<std::string>());
    case toml::node_type::integer:
      return "integer " + std::to_string(*node.value<int64_t>());
    case toml::node_type::floating_point:
      return "float " + format_double(*node.value<double>());
    case toml::node_type::boolean:
      return *node.value<bool>() ? "boolean true" : "boolean false";
    case toml::node_type::array:
      return "array";
    case toml::node_type::table:
      return "table";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    default:
      return "nothing";
  }
}

// -- suggestions ---------------------------------------------------------------------------------

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// Typos get more slack in longer names; a 2-letter key allows one edit only.
size_t typo_budget(const std::string& leaf) {
  return leaf.size() <= 3 ? 1 : leaf.size() <= 7 ? 2 : 3;
}

// The schema key (or "[section]") closest to `unknown`, or "" when nothing is close. A key of the
// right name in another section (the common slip) costs one edit.
std::string closest(const std::string& unknown, bool is_table) {
  const std::string sec = section_of(unknown), leaf = leaf_of(unknown);
  std::string best;
  size_t best_score = typo_budget(leaf) + 1;
  auto consider = [&](const std::string& candidate, size_t score) {
    if (score < best_score) best_score = score, best = candidate;
  };
  // A table may be a misspelt section, or a section nested in another one by mistake.
  if (is_table)
    for (const std::string& s : sections())
      consider("[" + s + "]", edit_distance(leaf, s) + (sec.empty() ? 0 : 1));
  for (const KeySpec& spec : recipe_schema()) {
    const std::string spec_sec = section_of(spec.key), spec_leaf = leaf_of(spec.key);
    size_t score = edit_distance(unknown, spec.key);
    if (spec_sec != sec) score = std::min(score, edit_distance(leaf, spec_leaf) + 1);
    consider(spec.key, score);
  }
  return best;
}

// "[train] accepts: steps, batch_size, ..." or, for the top level, its keys and the sections.
std::string accepted(const std::string& section) {
  std::vector<std::string> names;
  for (const KeySpec& spec : recipe_schema())
    if (section_of(spec.key) == section) names.push_back(leaf_of(spec.key));
  if (!section.empty()) return "[" + section + "] accepts: " + join(names, ", ");
  for (const std::string& s : sections()) names.push_back("[" + s + "]");
  return "the top level accepts: " + join(names, ", ");
}

std::string unknown_key_message(const std::string& key, bool is_table) {
  const std::string sec = section_of(key);
  std::string msg = is_table && sec.empty() ? "unknown section" : "unknown key";
  const std::string guess = closest(key, is_table);
  msg += guess.empty() ? "; " : "; did you mean " + guess + "? ";
  return msg + accepted(sec);
}

// -- conversion ----------------------------------------------------------------------------------

std::string range_message(const KeySpec& spec, const std::string& got) {
  if (spec.min && spec.max)
    return "must be in [" + format_bound(*spec.min) + ", " + format_bound(*spec.max) + "], got " +
           got;
  if (spec.min) return "must be >= " + format_bound(*spec.min) + ", got " + got;
  return "must be <= " + format_bound(*spec.max) + ", got " + got;
}

bool in_range(const KeySpec& spec, double v) {
  return (!spec.min || v >= *spec.min) && (!spec.max || v <= *spec.max);
}

// Checks `node` against `spec`; on success stores the value and returns "", else the message.
std::string convert(const KeySpec& spec, const toml::node& node, Value& out) {
  const std::string expected = std::string("expected ") + key_type_name(spec.type) + ", got ";
  switch (spec.type) {
    case KeyType::integer: {
      if (!node.is_integer()) return expected + describe(node);
      const int64_t v = *node.value<int64_t>();
      // Doubles hold every bound exactly, and an int64 beyond 2^53 is past every bound anyway.
      if (!in_range(spec, double(v))) return range_message(spec, std::to_string(v));
      out = v;
      return "";
    }
    case KeyType::number: {
      if (!node.is_number()) return expected + describe(node);
      const double v = *node.value<double>();
      if (!std::isfinite(v)) return "must be a finite number, got " + format_double(v);
      if (!in_range(spec, v)) return range_message(spec, format_double(v));
      out = v;
      return "";
    }
    case KeyType::boolean: {
      if (!node.is_boolean()) return expected + describe(node);
      out = *node.value<bool>();
      return "";
    }
    case KeyType::string: {
      if (!node.is_string()) return expected + describe(node);
      std::string v = *node.value<std::string>();
      if (!spec.choices.empty() &&
          std::find(spec.choices.begin(), spec.choices.end(), v) == spec.choices.end())
        return "must be one of " + choices_text(spec) + "; got " + quote(v);
      out = std::move(v);
      return "";
    }
  }
  return "unknown key type";
}

// Parses "v = <text>" so that a lone value goes through the same conversion as one in a file.
// Returns false when the text is not exactly one TOML value.
bool parse_lone_value(const std::string& text, toml::table& holder) {
  if (text.find_first_of("\r\n") != std::string::npos) return false;
  try {
    holder = toml::parse("v = " + text);
  } catch (const toml::parse_error&) {
    return false;
  }
  return holder.size() == 1 && holder.contains("v");
}

// The defaults, parsed once; a default that fails its own spec is a bug in the schema.
const std::map<std::string, Value>& default_values() {
  static const std::map<std::string, Value> defaults = [] {
    std::map<std::string, Value> out;
    bool seen_section = false;
    for (const KeySpec& spec : recipe_schema()) {
      // to_toml() writes top-level keys before the first [section] header.
      seen_section = seen_section || !section_of(spec.key).empty();
      LOOM_ASSERT(!seen_section || !section_of(spec.key).empty(), "top-level recipe key ", spec.key,
                  " is declared after a sectioned key");
      LOOM_ASSERT(std::count(spec.key.begin(), spec.key.end(), '.') <= 1, "recipe key ", spec.key,
                  " is nested more than one section deep");
      LOOM_ASSERT(!is_section(spec.key), "recipe key ", spec.key, " is also a section name");
      LOOM_ASSERT(!out.count(spec.key), "recipe key ", spec.key, " is declared twice");
      LOOM_ASSERT(spec.choices.empty() || spec.type == KeyType::string, spec.key,
                  ": choices on a non-string key");
      LOOM_ASSERT(
          (!spec.min && !spec.max) || spec.type == KeyType::integer || spec.type == KeyType::number,
          spec.key, ": a range on a non-numeric key");
      toml::table holder;
      LOOM_ASSERT(parse_lone_value(spec.default_value, holder), spec.key, ": default ",
                  spec.default_value, " is not a TOML value");
      Value v;
      const std::string err = convert(spec, *holder.get("v"), v);
      LOOM_ASSERT(err.empty(), spec.key, ": default ", spec.default_value, ": ", err);
      out.emplace(spec.key, std::move(v));
    }
    return out;
  }();
  return defaults;
}

// Wraps `text` into "# " comment lines of at most `width` columns.
std::string comment_lines(const std::string& text, size_t width = 100) {
  std::istringstream words(text);
  std::string word, line, out;
  while (words >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > width - 2) {
      out += "# " + line + "\n";
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) out += "# " + line + "\n";
  return out;
}

// -- reference page ------------------------------------------------------------------------------

// Markdown table cells must not contain a bare '|'.
std::string cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

std::string range_text(const KeySpec& spec) {
  if (!spec.choices.empty()) {
    std::vector<std::string> items;
    for (const std::string& c : spec.choices) items.push_back("`" + quote(c) + "`");
    return join(items, ", ");
  }
  std::ostringstream out;
  if (spec.min && spec.max)
    out << "[" << format_bound(*spec.min) << ", " << format_bound(*spec.max) << "]";
  else if (spec.min)
    out << ">= " << format_bound(*spec.min);
  else if (spec.max)
    out << "<= " << format_bound(*spec.max);
  return out.str();
}

}  // namespace

// Builds Recipes; a friend so that Recipe's constructor and storage stay private.
class RecipeBuilder {
 public:
  struct Problem {
    int line;
    std::string key, message;
  };

  static Recipe build(const std::string& text, const std::string& source,
                      const std::vector<std::string>& overrides) {
    Recipe recipe;
    recipe.source_ = source;
    for (const auto& [key, value] : default_values()) recipe.values_[key].value = value;

    toml::table root;
    try {
      root = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
      const auto& where = e.source().begin;
      throw Error(source + ":" + std::to_string(where.line) + ": syntax error: " +
                  std::string(e.description()) + " (column " + std::to_string(where.column) + ")");
    }

    // toml++ iterates keys in sorted order, so every problem is collected and the first in the
    // file is reported: the one a reader fixing the file top to bottom meets first.
    std::vector<Problem> problems;
    walk(root, "", recipe, problems);
    if (!problems.empty()) {
      const Problem& first =
          *std::min_element(problems.begin(), problems.end(),
                            [](const Problem& a, const Problem& b) { return a.line < b.line; });
      throw Error(source + ":" + std::to_string(first.line) + ": " + first.key + ": " +
                  first.message);
    }
    for (const std::string& text_set : overrides) apply_override(recipe, text_set);
    return recipe;
  }

 private:
  static void walk(const toml::table& table, const std::string& prefix, Recipe& recipe,
                   std::vector<Problem>& problems) {
    for (const auto& [k, node] : table) {
      const std::string key =
          prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
      const int line =
          int(k.source().begin.line ? k.source().begin.line : node.source().begin.line);
      if (const KeySpec* spec = find_spec(key)) {
        Value v;
        const std::string err = convert(*spec, node, v);
        if (!err.empty()) {
          problems.push_back({line, key, err});
        } else {
          Recipe::Entry& entry = recipe.values_[key];
          entry.value = std::move(v);
          entry.line = line;
        }
      } else if (is_section(key)) {
        if (const toml::table* sub = node.as_table())
          walk(*sub, key, recipe, problems);
        else
          problems.push_back(
              {line, key,
               "is a section: expected a table, got " + describe(node) + "; " + accepted(key)});
      } else {
        problems.push_back({line, key, unknown_key_message(key, node.is_table())});
      }
    }
  }

  static void apply_override(Recipe& recipe, const std::string& text) {
    const std::string where = "--set " + text + ": ";
    const auto eq = text.find('=');
    if (eq == std::string::npos) throw Error(where + "expected key=value");
    auto trim = [](std::string s) {
      const auto b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
      return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    const std::string key = trim(text.substr(0, eq)), raw = trim(text.substr(eq + 1));
    if (key.empty()) throw Error(where + "expected key=value");
    const KeySpec* spec = find_spec(key);
    if (!spec) {
      if (is_section(key)) throw Error(where + key + ": is a section, not a key; " + accepted(key));
      throw Error(where + key + ": " + unknown_key_message(key, false));
    }

    toml::table holder;
    const bool parsed = parse_lone_value(raw, holder);
    if (spec->type == KeyType::string && !(parsed && holder.get("v")->is_string())) {
      // A bare word: quote it and parse again, which also rejects text TOML cannot hold
      // (invalid UTF-8), so that to_toml() of the result always loads.
      if (!parse_lone_value(quote(raw), holder))
        throw Error(where + key + ": not a valid string (TOML wants UTF-8 text)");
    } else if (!parsed) {
      throw Error(where + key + ": expected " + key_type_name(spec->type) + ", got '" + raw + "'");
    }
    Value v;
    const std::string err = convert(*spec, *holder.get("v"), v);
    if (!err.empty()) throw Error(where + key + ": " + err);
    Recipe::Entry& entry = recipe.values_[key];
    entry.value = std::move(v);
    entry.line = 0;
    entry.set_text = text;
  }
};

Recipe Recipe::load(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open recipe: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(path + ": cannot read recipe: " + std::strerror(errno));
  return RecipeBuilder::build(text.str(), path, overrides);
}

Recipe Recipe::from_string(const std::string& toml_text, const std::string& name_for_errors,
                           const std::vector<std::string>& overrides) {
  return RecipeBuilder::build(toml_text, name_for_errors, overrides);
}

const Recipe::Entry& Recipe::entry(const std::string& key, KeyType type, const char* getter) const {
  const auto it = values_.find(key);
  if (it == values_.end()) LOOM_FAIL("[recipe] ", getter, "(\"", key, "\"): no such recipe key");
  // Value's alternatives are listed in KeyType's order.
  const auto held = KeyType(it->second.value.index());
  if (held != type)
    LOOM_FAIL("[recipe] ", getter, "(\"", key, "\"): the key is a ", key_type_name(held),
              ", not a ", key_type_name(type));
  return it->second;
}

int64_t Recipe::get_int(const std::string& key) const {
  return std::get<int64_t>(entry(key, KeyType::integer, "get_int").value);
}
double Recipe::get_double(const std::string& key) const {
  return std::get<double>(entry(key, KeyType::number, "get_double").value);
}
bool Recipe::get_bool(const std::string& key) const {
  return std::get<bool>(entry(key, KeyType::boolean, "get_bool").value);
}
std::string Recipe::get_string(const std::string& key) const {
  return std::get<std::string>(entry(key, KeyType::string, "get_string").value);
}

std::string Recipe::location(const std::string& key) const {
  const auto it = values_.find(key);
  if (it == values_.end()) LOOM_FAIL("[recipe] location(\"", key, "\"): no such recipe key");
  const Entry& e = it->second;
  if (!e.set_text.empty()) return "--set " + e.set_text;
  return source_ + ":" + (e.line > 0 ? std::to_string(e.line) : "default");
}

void Recipe::check(bool cond, const std::string& key, const std::string& message) const {
  if (!cond) throw Error(location(key) + ": " + key + ": " + message);
}

std::string Recipe::to_toml() const {
  // The source may be any caller-given name; keep it from breaking out of its comment line.
  std::string src = source_;
  for (char& c : src)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  std::ostringstream out;
  out << "# Resolved loom recipe (every key; docs/RECIPES.md describes them).\n"
      << "# Source: " << src << "\n";
  std::string section;
  for (const KeySpec& spec : recipe_schema()) {
    const std::string sec = section_of(spec.key);
    if (sec != section) {
      section = sec;
      out << "\n[" << sec << "]\n";
    }
    out << "\n"
        << comment_lines(spec.doc) << leaf_of(spec.key) << " = "
        << format_value(values_.at(spec.key).value) << "\n";
  }
  return out.str();
}

uint64_t Recipe::hash() const {
  // FNV-1a over "key = value" lines in schema order: stable across platforms and runs, unlike
  // std::hash, and independent of where each value came from.
  uint64_t h = 14695981039346656037ull;
  for (const KeySpec& spec : recipe_schema()) {
    const std::string line = spec.key + " = " + format_value(values_.at(spec.key).value) + "\n";
    for (unsigned char c : line) {
      h ^= c;
      h *= 1099511628211ull;
    }
  }
  return h;
}

std::string recipe_reference_markdown() {
  std::ostringstream md;
  md << "# Recipe reference\n\n"
     << "<!-- Generated from trainer/recipe/schema.cpp by recipe_reference_markdown(); do not "
        "edit.\n"
     << "     Regenerate: LOOM_UPDATE_DOCS=1 ctest -R trainer/test_recipe -->\n\n"
     << "A recipe is a TOML file (examples in `recipes/`). Every key is optional: a key left out\n"
     << "takes its default. Top-level keys come before the first section; the others live in the\n"
     << "section named in the heading. `--set section.key=value` on the command line overrides "
        "any\n"
     << "key; the value is read as TOML, and a bare word is accepted for a string key\n"
     << "(`--set model.name=DiT-B/2`). An integer may be given for a number key.\n\n"
     << "Unknown keys, wrong types, values out of range and values not among the choices stop the\n"
     << "run before any work, with an error that names the file, line and key:\n\n"
     << "```\n"
     << "recipes/my.toml:7: train.step: unknown key; did you mean train.steps? [train] accepts: "
        "steps, ...\n"
     << "recipes/my.toml:9: optim.lr: expected number, got string \"fast\"\n"
     << "--set train.batch_size=0: train.batch_size: must be in [1, 1048576], got 0\n"
     << "```\n\n"
     << "The resolved recipe (every key, with these descriptions as comments) is written as\n"
     << "`recipe.toml` into each run directory and each checkpoint; it loads as a recipe itself.\n";
  std::optional<std::string> section;
  for (const KeySpec& spec : recipe_schema()) {
    const std::string sec = section_of(spec.key);
    if (sec != section) {
      section = sec;
      md << "\n## " << (sec.empty() ? "Top level" : "[" + sec + "]") << "\n\n"
         << "| key | type | default | range / choices | description |\n"
         << "|---|---|---|---|---|\n";
    }
    md << "| `" << leaf_of(spec.key) << "` | " << key_type_name(spec.type) << " | `"
       << cell(spec.default_value) << "` | " << cell(range_text(spec)) << " | " << cell(spec.doc)
       << " |\n";
  }
  return md.str();
}

}  // namespace loom::trainer
