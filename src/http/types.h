#pragma once
// Small types shared by the HTTP server, the HTTP client and their users. No Beast here: only
// http/server.cpp and http/client.cpp include Beast, so the rest of the code compiles fast.
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/time.h"

namespace resendd {

// A URL's path and query as Boost.URL's encoded_target() gives them, as a request line's
// origin-form (RFC 9112 §3.2.1): "/" in front when the path is empty ("?q" → "/?q", "" → "/").
inline std::string origin_form_target(std::string_view encoded_target) {
  std::string out(encoded_target);
  if (out.empty() || out.front() != '/') out.insert(0, "/");
  return out;
}

// Without the optional whitespace (spaces and tabs, RFC 9110 §5.6.3) around a field value or a
// list element.
inline std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// A request the server received, already read whole (within the configured limits).
struct incoming_request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // "/jobs?state=dead"
  // Names lower-cased; a field given on several lines holds their values joined by ", " (RFC
  // 9110 §5.3), and its name is in `repeated`.
  std::map<std::string, std::string> headers;
  std::vector<std::string> repeated;
  std::string body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
  bool given_twice(std::string_view lower_name) const {
    return std::find(repeated.begin(), repeated.end(), lower_name) != repeated.end();
  }
};

struct outgoing_response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string content_type = "application/json";
};

// One outbound request as the delivery path builds it.
struct outbound_request {
  std::string method = "POST";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  millis timeout{30'000};
  bool allow_private = false;  // may reach loopback/private addresses
};

// What the HTTP client reports about one attempt.
struct attempt_result {
  std::string error;  // transport failure ("connect: Connection refused"); empty = answered
  bool timed_out = false;
  bool blocked = false;  // the address policy refused every address of the host (permanent)
  bool tls_failed = false;
  int status = 0;                     // HTTP status when answered
  std::string body;                   // the response body, possibly truncated
  std::optional<millis> retry_after;  // Retry-After or x-ogw-ratelimit-reset, when given
  // How the destination names this answer for its support: "X-Tt-Logid 2026…" (Feishu), else
  // "X-Request-Id …"; empty when it gave none, or none of up to 128 visible ASCII characters.
  std::string answer_id;
  bool answered() const { return error.empty(); }
};

}  // namespace resendd
