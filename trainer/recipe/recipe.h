#pragma once
// Recipes: the TOML files that describe a training job (DESIGN.md "Trainer and recipes").
//
// Every key is declared once, in recipe_schema(): dotted name ("train.steps"), type, default,
// range or allowed values, and a one-line doc. Nothing else in loom names a default: the trainer
// and the CLI read a resolved Recipe, in which every schema key has a value (the file's, an
// override's, or the default). docs/RECIPES.md is generated from the same schema.
//
// Recipe::load parses a file, validates it against the schema, then applies `--set a.b=value`
// overrides. Every problem throws loom::Error before any work starts, with a location prefix:
//   "<path>:<line>: <key>: <message>"      a problem in the file (TOML syntax, unknown key with a
//                                          did-you-mean and the section's accepted keys, wrong
//                                          type, out of range, not one of the choices)
//   "--set <text>: <key>: <message>"       a problem in an override (unknown key, bad value)
// An integer is accepted for a number key. An override's value is parsed as a TOML value; for a
// string key a value that is not a TOML string is taken verbatim (`--set model.name=DiT-B/2`).
// Cross-key consistency (top_k <= num_experts, dp * tp * sp == ranks, ...) is the trainer's job;
// Recipe::check reports such failures with the same prefix, locating the key where it was set
// ("<path>:default: ..." when the default was used).
//
// to_toml() writes the resolved recipe (every key, grouped by section, each with its doc as a
// comment); load() of that text gives a recipe with the same hash(). hash() depends only on the
// resolved key/value pairs, not on where they came from, and is the same on every platform.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace loom::trainer {

enum class KeyType { integer, number, boolean, string };

// "integer", "number", "boolean", "string".
const char* key_type_name(KeyType type);

struct KeySpec {
  std::string key;  // dotted: "train.steps"; a key without a dot is top level ("task")
  KeyType type;
  std::string default_value;  // TOML literal text: "1000", "0.0001", "true", "\"adamw\""
  std::string doc;
  std::optional<double> min, max;    // integer/number keys: inclusive bounds
  std::vector<std::string> choices;  // string keys: allowed values (empty = any)
};

// The one declaration of every recipe key, in the order they are documented and written.
const std::vector<KeySpec>& recipe_schema();

// docs/RECIPES.md: a table per section (key, type, default, range/choices, doc).
std::string recipe_reference_markdown();

class Recipe {
 public:
  // Reads and resolves `path`, then applies `overrides` ("a.b=value") in order.
  static Recipe load(const std::string& path, const std::vector<std::string>& overrides = {});
  // As load, from text; `name_for_errors` stands for the path in messages and source().
  static Recipe from_string(const std::string& toml_text, const std::string& name_for_errors,
                            const std::vector<std::string>& overrides = {});

  // Values by dotted key. Asking for a key outside the schema, or with the wrong type, is a bug
  // in the caller and throws loom::Error naming the key.
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;

  // Throws "<where key was set>: <key>: <message>" unless `cond`.
  void check(bool cond, const std::string& key, const std::string& message) const;

  std::string to_toml() const;
  uint64_t hash() const;
  const std::string& source() const { return source_; }

  // Where `key` got its value: "<path>:<line>", "<path>:default" or "--set <text>".
  std::string location(const std::string& key) const;

 private:
  using Value = std::variant<int64_t, double, bool, std::string>;
  struct Entry {
    Value value;
    int line = 0;          // line in source_; 0 = default
    std::string set_text;  // the override that set it, if any (takes precedence over line)
  };

  Recipe() = default;
  const Entry& entry(const std::string& key, KeyType type, const char* getter) const;

  std::string source_;
  std::map<std::string, Entry> values_;

  friend class RecipeBuilder;
};

}  // namespace loom::trainer
