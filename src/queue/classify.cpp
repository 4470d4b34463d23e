#include "queue/classify.h"

#include <array>
#include <nlohmann/json.hpp>

#include "util/utf8.h"

namespace resendd {

std::string_view to_string(outcome_kind k) {
  switch (k) {
    case outcome_kind::succeeded:
      return "succeeded";
    case outcome_kind::retry:
    case outcome_kind::not_sent:
      return "retry";
    case outcome_kind::rate_limited:
      return "rate_limited";
    case outcome_kind::refresh_credentials:
      return "refresh_credentials";
    case outcome_kind::dead:
      return "dead";
  }
  return "?";
}

namespace {

struct feishu_rule {
  std::int64_t first, last;
  outcome_kind kind;
  const char* meaning;
};

// Feishu/Lark codes that matter to a retry relay. Sources: the Bitable error tables of
// records/create and records/batch_create, larksuite/cli internal/errclass, and larksuite
// oapi-sdk-go core/apiresp.go (see shared/PROTOCOLS.md §2). First match wins; extend here.
constexpr std::array feishu_rules{
    // gateway rate limit, HTTP 429 (400 on old APIs); honour x-ogw-ratelimit-reset
    feishu_rule{99991400, 99991400, outcome_kind::rate_limited, "rate limited"},
    // Bitable: too many requests / concurrent write to the same table
    feishu_rule{1254290, 1254290, outcome_kind::rate_limited, "too many requests"},
    feishu_rule{1254291, 1254291, outcome_kind::rate_limited, "write conflict on the table"},
    // transient server-side states (Bitable tables)
    feishu_rule{1254607, 1254607, outcome_kind::retry, "data not ready"},
    feishu_rule{1255040, 1255040, outcome_kind::retry, "request timed out, outcome unknown"},
    feishu_rule{1254036, 1254036, outcome_kind::retry, "base is being copied"},
    feishu_rule{1254002, 1254002, outcome_kind::retry, "generic failure"},
    feishu_rule{1255001, 1255005, outcome_kind::retry, "internal error"},
    // tenant/app access token invalid or expired: refreshable when resendd holds credentials
    feishu_rule{99991663, 99991664, outcome_kind::refresh_credentials,
                "access token invalid or expired"},
    // user access token invalid/expired: resendd cannot refresh user tokens
    feishu_rule{99991668, 99991668, outcome_kind::dead, "user access token invalid"},
    feishu_rule{99991677, 99991677, outcome_kind::dead, "user access token expired"},
    feishu_rule{99991661, 99991661, outcome_kind::dead, "Authorization missing"},
    feishu_rule{99991671, 99991671, outcome_kind::dead, "Authorization malformed"},
    feishu_rule{99991672, 99991672, outcome_kind::dead, "scope not granted"},
    feishu_rule{99991676, 99991676, outcome_kind::dead, "scope not granted"},
    feishu_rule{99991679, 99991679, outcome_kind::dead, "scope not granted"},
    feishu_rule{1254302, 1254302, outcome_kind::dead, "permission denied"},
    feishu_rule{1254304, 1254304, outcome_kind::dead, "permission denied or plan limit"},
    feishu_rule{1254306, 1254306, outcome_kind::dead, "permission denied or plan limit"},
    // the bot sent bad data: keep the response for the operator
    feishu_rule{1254000, 1254010, outcome_kind::dead, "bad request body"},
    feishu_rule{1254015, 1254015, outcome_kind::dead, "bad field value"},
    feishu_rule{1254040, 1254045, outcome_kind::dead, "unknown app, table or field"},
    feishu_rule{1254060, 1254074, outcome_kind::dead, "bad field value"},
    feishu_rule{1254104, 1254104, outcome_kind::dead, "too many records in one call"},
    feishu_rule{1254037, 1254037, outcome_kind::dead, "client_token is not a UUIDv4"},
    // the first write may have landed: a person must look before anything is re-sent
    feishu_rule{1255006, 1255006, outcome_kind::dead,
                "needs reconciliation: client_token conflict"},
    feishu_rule{1254608, 1254608, outcome_kind::dead,
                "needs reconciliation: same request submitted repeatedly"},
};

verdict by_status(int status) {
  const std::string what = "HTTP " + std::to_string(status);
  if (status >= 200 && status < 300) return {outcome_kind::succeeded, {}, what};
  if (status == 429) return {outcome_kind::rate_limited, {}, what};
  if (status == 408 || status == 425 || status >= 500) return {outcome_kind::retry, {}, what};
  if (status >= 300 && status < 400)
    return {outcome_kind::dead, {}, what + " (redirects are not followed)"};
  return {outcome_kind::dead, {}, what};
}

verdict by_feishu_code(const attempt_result& r) {
  auto body = nlohmann::json::parse(r.body, nullptr, false);
  // A group bot's webhook may answer in its older form, {"StatusCode": 0, "StatusMessage":
  // "success"} (PROTOCOLS.md §5); read only when there is no "code".
  const bool older = body.is_object() && !body.contains("code") && body.contains("StatusCode");
  const char* code_name = older ? "StatusCode" : "code";
  const char* msg_name = older ? "StatusMessage" : "msg";
  if (body.is_discarded() || !body.is_object() || !body.contains(code_name) ||
      !body[code_name].is_number_integer()) {
    auto v = by_status(r.status);
    if (v.kind == outcome_kind::succeeded) {
      v.kind = outcome_kind::retry;
      v.reason += " without a Feishu code";
    }
    return v;
  }
  const auto code = body[code_name].get<std::int64_t>();
  std::string msg = body.contains(msg_name) && body[msg_name].is_string()
                        ? body[msg_name].get<std::string>()
                        : "";
  msg.resize(utf8_prefix(msg, 200).size());  // never inside a character
  const std::string what = "feishu " + std::to_string(code) + (msg.empty() ? "" : ": " + msg);
  if (code == 0) return {outcome_kind::succeeded, code, what};
  for (const auto& rule : feishu_rules)
    if (code >= rule.first && code <= rule.last)
      return {rule.kind, code, std::string(rule.meaning) + " (" + what + ")"};
  // An unknown code: let the HTTP status speak, but a 2xx with a non-zero code is no success.
  auto v = by_status(r.status);
  if (v.kind == outcome_kind::succeeded) v.kind = outcome_kind::retry;
  return {v.kind, code, "HTTP " + std::to_string(r.status) + ", " + what};
}

}  // namespace

verdict classify(std::string_view profile, const attempt_result& r) {
  if (r.blocked) return {outcome_kind::dead, {}, r.error};
  if (!r.answered()) return {outcome_kind::retry, {}, r.error};
  verdict v = profile == "feishu" ? by_feishu_code(r) : by_status(r.status);
  if (v.kind == outcome_kind::rate_limited || v.kind == outcome_kind::retry) v.wait = r.retry_after;
  return v;
}

}  // namespace resendd
