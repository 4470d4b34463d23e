#pragma once
// What a delivery sends, taken from the stored /resend body: its headers, and its `params` text
// byte for byte except at the `commands.json_parse` targets, where each string is replaced by the
// JSON text it holds, verbatim. Numbers, key order, duplicate keys and spacing survive (the seed
// re-serialized the document: 123456789012345678901234567890 went out as 1.2345678901234568e+29).
//
// The text is scanned once for the byte spans of its values; nothing is re-serialized. Paths
// that only exist after an earlier path has been applied (a path into a parsed target), a target
// reached twice, or a target outside `params` are done on a parsed document instead, exactly as
// intake checked them (the body is then re-serialized). Pure code, no I/O; thread-safe.
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace resendd {

struct forwarded {
  std::optional<std::string> body;  // none when params is absent or null
  std::vector<std::pair<std::string, std::string>> headers;
  bool verbatim = true;  // false: the fallback re-serialized the body
};

// The parts to send, or why the stored request cannot be sent (a permanent error for the job).
std::variant<forwarded, std::string> forward_request(std::string_view stored_request);

}  // namespace resendd
