#pragma once
// The deepest nesting of arrays/objects in JSON text, counted without recursion: parsing and
// printing nlohmann::json recurse, so untrusted input is checked against this first.
#include <string_view>

namespace resendd {

inline constexpr int max_json_depth = 64;
bool json_depth_within(std::string_view text, int max_depth = max_json_depth);

}  // namespace resendd
