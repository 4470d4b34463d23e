#pragma once
// The byte spans of a JSON text's values, found in one pass without building a document: for
// code that keeps the text as it is and changes a few values in place (a delivery's json_parse
// targets, a succeeded job's credentials). Pure code; thread-safe.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace resendd {

// One value of the document: its kind and the bytes it spans. Containers list their children
// (objects with their decoded keys, in document order, duplicates kept).
struct json_span {
  enum class kind { object, array, string, scalar } k = kind::scalar;
  std::size_t begin = 0, end = 0;
  std::vector<std::size_t> kids;  // indexes into the span list
  std::vector<std::string> keys;  // objects: kids[i]'s key
};

// The spans of every value of `text`, the root first, in document order; nullopt when the text
// cannot be followed. It checks structure, not every detail (numbers are taken as runs of number
// characters, strings are not decoded): use it on text a JSON parser has accepted, and fall back
// to a parsed document when it says nullopt. Nesting deeper than max_json_depth is refused.
std::optional<std::vector<json_span>> scan_json_spans(std::string_view text);

// Decodes the JSON string token s[begin, end) (quotes included) into UTF-8. False on anything
// that is not a valid string.
bool decode_json_string(std::string_view s, std::size_t begin, std::size_t end, std::string& out);

}  // namespace resendd
