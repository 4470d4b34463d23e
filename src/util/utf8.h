#pragma once
// UTF-8 for text that reaches JSON answers, logs and the database: nlohmann::json refuses to
// print invalid UTF-8 and PostgreSQL refuses to store it, so input is checked, cut on character
// boundaries, and bytes that are not text are kept as base64 behind a marker.
#include <cstddef>
#include <string>
#include <string_view>

namespace resendd {

// Well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF).
bool valid_utf8(std::string_view s);

// At most `max_bytes` of `s`, never ending inside a character.
std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes);

// The whole character that starts at byte `i` (one byte when it is not well-formed there).
std::string_view utf8_char_at(std::string_view s, std::size_t i);

// What a stored response body is shown as when it is not UTF-8: this marker, then base64.
inline constexpr std::string_view binary_marker = "(not UTF-8, base64) ";
std::string base64_encode(std::string_view bytes);

}  // namespace resendd
