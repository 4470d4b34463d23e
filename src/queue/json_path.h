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

namespace boost::json {
class value;
}  // namespace boost::json
namespace boost::container::pmr {
class memory_resource;  // boost::json::memory_resource
}  // namespace boost::container::pmr

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

// Intake reads bodies with Boost.JSON, several times faster than nlohmann::json, which delivery
// uses to build what it sends. So that intake accepts exactly what delivery can read, this parse
// takes what nlohmann::json::parse(text, nullptr, false) takes: one leading UTF-8 BOM is skipped,
// a NUL byte ends the input, and when Boost.JSON refuses the text or reads a number as infinite,
// nlohmann::json has the last word (it refuses 1e400; it reads 0e5555 as 0). `mr` holds the
// document; nullopt when the text is not such JSON.
std::optional<boost::json::value> parse_as_delivery_would(
    std::string_view text, boost::container::pmr::memory_resource* mr);
bool accepted_as_delivery_would(std::string_view text);  // the same answer, nothing kept

// check_json_parse on a Boost.JSON document: the same paths, the same answers.
std::optional<std::string> check_json_parse_boost(boost::json::value& doc,
                                                  const std::vector<std::string>& paths);

}  // namespace resendd
