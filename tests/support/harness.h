#pragma once
// Helpers shared by the integration tests: configs for a daemon delivering to fake destinations
// on 127.0.0.1, and /resend bodies.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "support/daemon.h"
#include "support/fake_server.h"
#include "support/temp_dir.h"

namespace resendd::test {

// A daemon config: a free port, fast retries, and one route to 127.0.0.1 (`match`) allowed to
// reach loopback; `route_keys` go into the route, `extra` after it (other sections).
inline std::string test_config(const std::string& match, const std::string& route_keys,
                               const std::string& extra) {
  return R"([server]
listen = "127.0.0.1:0"
[delivery]
retry_base = "10ms"
retry_cap = "40ms"
request_timeout = "10s"
shutdown_grace = "2s"
[[routes]]
name = "local"
match = ')" +
         match + R"('
allow_private_networks = true
)" + route_keys +
         "\n" + extra;
}

// A generic route for every http://127.0.0.1:PORT/ location.
inline std::string local_config(const std::string& route_keys = "", const std::string& extra = "") {
  return test_config(R"(^http://127\.0\.0\.1:\d+/.*$)", route_keys, extra);
}

// A destination that keeps a job queued for a while: the request that brings `n` to 1 is answered
// 503 with `Retry-After: retry_after` (seconds), every other one 200. Setting `n` back to 0 makes
// the next request a 503 again.
inline fake_server::handler busy_once(std::atomic<int>& n, std::string retry_after) {
  return [&n, retry_after = std::move(retry_after)](const received&) {
    fake_reply r{};
    if (++n == 1) {
      r = fake_reply{503, "{}"};
      r.headers.emplace_back("Retry-After", retry_after);
    }
    return r;
  };
}

// The seed's request: Bitable fields sent as a JSON string, with a json_parse command.
inline nlohmann::json resend_body(const std::string& location, const std::string& marker = "m") {
  return {
      {"location", location},
      {"headers", {{"Authorization", "Bearer t-secret-token-value-123456"}, {"X-Trace", marker}}},
      {"params",
       {{"records", {{{"fields", nlohmann::json{{"备注", marker}, {"金额", 12.5}}.dump()}}}}}},
      {"commands", {{"json_parse", {"$.params.records[*].fields"}}}}};
}

inline http_answer post_resend(const daemon_process& d, const nlohmann::json& body,
                               const std::map<std::string, std::string>& headers = {}) {
  return http_call(d.port(), "POST", "/resend", body.dump(), headers);
}

inline std::string job_id(const http_answer& a) {
  auto j = nlohmann::json::parse(a.body, nullptr, false);
  return j.is_object() && j.contains("id") ? j["id"].get<std::string>() : "";
}

// The attempt log of one job, in order: the given columns of table attempts.
inline std::vector<std::vector<std::string>> attempt_rows(const daemon_process& d,
                                                          const std::string& id,
                                                          const std::string& columns) {
  return sql_rows(d.db_path(),
                  "select " + columns + " from attempts where job_id = '" + id + "' order by n");
}

}  // namespace resendd::test

namespace resendd::test {

// GET /metrics, read by scripts/parse_metrics.py (prometheus_client's parser plus stricter
// checks): every sample as "name{k=v,...}" -> value. Empty when the text does not parse.
inline std::map<std::string, double> scrape_metrics(const daemon_process& d, const temp_dir& dir) {
  const auto a = http_call(d.port(), "GET", "/metrics");
  dir.write("metrics.txt", a.body);
  const std::string cmd = std::string(RESENDD_SOURCE_DIR) + "/scripts/parse_metrics.py < " +
                          dir.file("metrics.txt") + " > " + dir.file("metrics.json");
  if (std::system(cmd.c_str()) != 0) return {};
  std::ifstream in(dir.file("metrics.json"));
  std::map<std::string, double> out;
  const auto parsed = nlohmann::json::parse(in);
  for (const auto& [k, v] : parsed.items()) out[k] = v.is_number() ? v.get<double>() : std::nan("");
  return out;
}

}  // namespace resendd::test
