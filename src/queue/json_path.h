#pragma once
// json_parse paths (the seed's `commands.json_parse`): `$` followed by any number of `.name`,
// `['name']`, `["name"]`, `[n]` and `[*]` (`.*` too), rooted at the whole /resend request object,
// e.g. `$.params.records[*].fields`. Applying a path replaces each string it reaches by the JSON
// value that string holds. Pure code, no I/O; thread-safe.
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "util/json_depth.h"

namespace resendd {

struct json_path {
  struct wildcard {};
  using step = std::variant<std::string, std::size_t, wildcard>;  // key, index, [*]
  std::string text;
  std::vector<step> steps;
};

// nullopt and a reason in *error when the text is not a path.
std::optional<json_path> parse_json_path(std::string_view text, std::string* error);

// Replaces every string that `path` reaches in `doc` by the JSON it holds. A step that finds
// nothing (missing key, index out of range, wrong container), a target that is not a string, or a
// string that is not JSON (or nests deeper than max_json_depth) is an error; then `doc` may be
// partly changed, so callers apply to a copy. [*] over an empty container reaches nothing, fine.
// With `replace` false the targets are only checked: the same errors, `doc` unchanged.
std::optional<std::string> apply_json_parse(nlohmann::json& doc, const json_path& path,
                                            bool replace = true);

// Parses and applies every path in order; the first error wins.
std::optional<std::string> apply_json_parse(nlohmann::json& doc,
                                            const std::vector<std::string>& paths);

// The same answer as apply_json_parse(doc, paths) for less work, when only the answer is wanted
// (intake): the last path's targets are checked, not replaced, since no later path walks into
// them. `doc` is left with the other paths applied.
std::optional<std::string> check_json_parse(nlohmann::json& doc,
                                            const std::vector<std::string>& paths);

}  // namespace resendd
