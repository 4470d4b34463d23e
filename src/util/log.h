#pragma once
// Logging set-up and the helpers that keep secrets out of logs and admin output.
// Logging goes through spdlog's default logger, configured once by the composition root (app/);
// log calls never throw (spdlog swallows formatting errors and reports them itself).
#include <optional>
#include <string>
#include <string_view>

namespace resendd {

// Levels: trace, debug, info, warn, error, critical, off. Returns false for an unknown level.
// `format`: "text" (a line of time, level, message) or "json" (one object a line: time, level,
// msg). False for an unknown level or format.
bool setup_logging(std::string_view level, std::string_view format = "text");
// Changes the level of the logger setup_logging made (a reload). False for an unknown level.
bool set_log_level(std::string_view level);

// "Bearer abcd…(41 chars)" style: enough to tell two secrets apart, not enough to use one.
std::string mask_secret(std::string_view secret);
// A PostgreSQL connection URL (or key=value string) with its password replaced by "***".
std::string mask_pg_url(const std::string& url);
// A destination URL as shown to operators: the values of query parameters named like
// credentials (access_token, secret, password, key, sign; not client_token) and the path
// segment after "/hook/" (a custom bot's token) masked as mask_secret does; the rest kept.
std::string mask_location(std::string_view url);
// A URL whose path and query may hold a secret (a custom bot's hook token): scheme and host kept,
// the rest masked ("https://open.feishu.cn/…(41 chars)"); "" stays "".
std::string mask_url_path(const std::string& url);
// Compares a presented secret with the expected one in time independent of where they differ.
bool secret_equals(std::string_view given, std::string_view expected);
// True for header names whose values are credentials (Authorization, Cookie, X-Api-Key, ...).
bool is_secret_header(std::string_view name);

}  // namespace resendd

namespace resendd {
// For stored responses: when `text` is JSON, values of keys that name credentials (token,
// secret, password, authorization; not client_token) are masked; then cut to `max_bytes`.
std::string mask_response(std::string_view text, std::size_t max_bytes);
}  // namespace resendd

#include <nlohmann/json_fwd.hpp>
namespace resendd {
// A stored job as shown to operators, masked in place: the credential headers of its request,
// and in its location (and the request's) the values of credential query parameters and a
// custom bot's hook token (mask_location). A job on `path_secret_route` (the alerts route, whose
// webhook URL is a secret as a whole) shows only its location's scheme and host.
void mask_job_secrets(nlohmann::json& job, std::string_view path_secret_route = {});
// A stored request (the /resend body) with its credential headers' values masked, for a job
// that no longer needs them (it succeeded); nullopt when there is nothing to mask. Every other
// byte is kept (the value is replaced in the text: no document is built); a text the span
// scanner cannot follow goes the re-serialized way below.
std::optional<std::string> scrub_request_secrets(std::string_view request);
// The same, the way versions before 2026-11-28 kept it: parsed and re-serialized by
// nlohmann::json (keys sorted, duplicates dropped, spacing gone). A repeated Idempotency-Key
// compares against this form too (store/queue_store.h, same_request).
std::optional<std::string> scrub_request_secrets_reserialized(std::string_view request);
}  // namespace resendd
