#pragma once
// A fake Feishu Bitable served from the test process. It behaves as the real one is documented
// to (shared/PROTOCOLS.md §2): answers HTTP 200 with a body `code`; stores the records of a
// batch_create; honours client_token idempotency (same token + same body = the first answer, no
// new rows; same token + other body = 1255006); answers 1254291 to a write that overlaps another
// write to the same table. Tests script extra answers per table with `script`.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>

#include "support/fake_server.h"
#include "support/harness.h"

namespace resendd::test {

class fake_feishu {
 public:
  // What to do with the next write to a table, before the normal behaviour.
  struct scripted {
    int status = 200;
    nlohmann::json body;  // answered as is (unless store_then_drop)
    std::vector<std::pair<std::string, std::string>> headers;
    bool store_then_drop = false;  // write the rows, then drop the connection (lost reply)
  };

  // `hold_ms`: how long a write stays "in flight", unless another write to the same table
  // arrives first (then the overlap is detected at once).
  explicit fake_feishu(int hold_ms = 0, std::string accept_token = "")
      : hold_(hold_ms),
        accept_token_(std::move(accept_token)),
        server_([this](const received& r) { return handle(r); }) {}

  std::string url(const std::string& app, const std::string& table) const {
    return server_.url("/open-apis/bitable/v1/apps/" + app + "/tables/" + table +
                       "/records/batch_create");
  }
  void script(const std::string& table, scripted s) {
    std::lock_guard lock(m_);
    scripts_[table].push_back(std::move(s));
  }
  std::size_t rows(const std::string& table) const {
    std::lock_guard lock(m_);
    auto it = rows_.find(table);
    return it == rows_.end() ? 0 : it->second.size();
  }
  std::vector<nlohmann::json> table_rows(const std::string& table) const {
    std::lock_guard lock(m_);
    auto it = rows_.find(table);
    return it == rows_.end() ? std::vector<nlohmann::json>{} : it->second;
  }
  // Waits until the tables hold at least `n` rows in all; false on timeout.
  bool wait_rows(std::size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(m_);
    return changed_.wait_for(lock, timeout, [&] {
      std::size_t all = 0;
      for (const auto& [t, r] : rows_) all += r.size();
      return all >= n;
    });
  }
  int overlaps() const { return overlaps_.load(); }
  int max_in_flight_total() const { return max_total_.load(); }
  const fake_server& server() const { return server_; }

 private:
  // Every answer carries a log id, as Feishu's do.
  fake_reply answer(int status, const nlohmann::json& body) {
    return {status, body.dump(), {{"X-Tt-Logid", "fake-logid-" + std::to_string(++logids_)}}};
  }

  fake_reply handle(const received& r) {
    static const std::regex path(
        R"(/open-apis/bitable/v1/apps/([^/]+)/tables/([^/]+)/records/batch_create(\?.*)?)");
    std::smatch m;
    if (!std::regex_match(r.target, m, path))
      return answer(404, {{"code", 404}, {"msg", "not found"}});
    const std::string table = m[1].str() + "/" + m[2].str();
    static const std::regex token_re(R"([?&]client_token=([^&]*))");
    std::smatch tm;
    const std::string query = m[3].str();
    const std::string token = std::regex_search(query, tm, token_re) ? tm[1].str() : "";
    if (!accept_token_.empty() && r.header("authorization") != "Bearer " + accept_token_)
      return answer(200, {{"code", 99991663}, {"msg", "Invalid access token for authorization"}});

    std::unique_lock lock(m_);
    if (++in_flight_[table] > 1) {
      ++overlaps_;
      --in_flight_[table];
      overlap_seen_[table] = true;
      changed_.notify_all();
      return answer(200, {{"code", 1254291}, {"msg", "Write conflict"}});
    }
    max_total_ = std::max(max_total_.load(), ++total_in_flight_);
    changed_.notify_all();
    // Stay in flight a while: long enough for a second, overlapping write to show up.
    changed_.wait_for(lock, std::chrono::milliseconds(hold_), [&] { return overlap_seen_[table]; });
    overlap_seen_[table] = false;
    auto reply = write(table, token, r.body);
    --in_flight_[table];
    --total_in_flight_;
    return reply;
  }

  // Called with m_ held.
  fake_reply write(const std::string& table, const std::string& token, const std::string& body) {
    auto& queue = scripts_[table];
    bool drop = false;
    if (!queue.empty()) {
      auto s = queue.front();
      queue.pop_front();
      if (!s.store_then_drop) {
        fake_reply f = answer(s.status, s.body);
        f.headers.insert(f.headers.end(), s.headers.begin(), s.headers.end());  // later ones win
        return f;
      }
      drop = true;
    }
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.contains("records") || !j["records"].is_array())
      return answer(400, {{"code", 1254001}, {"msg", "WrongRequestBody"}});
    for (const auto& rec : j["records"])
      if (!rec.contains("fields") || !rec["fields"].is_object())
        return answer(200, {{"code", 1254001}, {"msg", "fields must be an object"}});
    if (!token.empty()) {
      auto seen = tokens_.find(token);
      if (seen != tokens_.end()) {
        if (seen->second != body)
          return answer(400, {{"code", 1255006}, {"msg", "client token conflict"}});
        return answer(200,
                      {{"code", 0}, {"msg", "success"}, {"data", {{"records", j["records"]}}}});
      }
      tokens_[token] = body;
    }
    for (const auto& rec : j["records"]) rows_[table].push_back(rec["fields"]);
    changed_.notify_all();
    if (drop) return fake_reply{0, "", {}, true};
    return answer(200, {{"code", 0}, {"msg", "success"}, {"data", {{"records", j["records"]}}}});
  }

  int hold_;
  std::string accept_token_;
  mutable std::mutex m_;
  std::condition_variable changed_;
  std::map<std::string, std::deque<scripted>> scripts_;
  std::map<std::string, std::vector<nlohmann::json>> rows_;
  std::map<std::string, std::string> tokens_;
  std::map<std::string, int> in_flight_;
  std::map<std::string, bool> overlap_seen_;
  int total_in_flight_ = 0;
  std::atomic<int> overlaps_{0};
  std::atomic<int> max_total_{0};
  std::atomic<int> logids_{0};
  fake_server server_;  // last: it stops (joins its threads) before the state above goes
};

// A Feishu-profile route for Bitable batch_create on 127.0.0.1, serialized per table.
inline std::string feishu_config(const std::string& route_keys = "",
                                 const std::string& extra = "") {
  return test_config(
      R"(^http://127\.0\.0\.1:\d+/open-apis/bitable/v1/apps/[^/]+/tables/[^/]+/records/batch_create([?].*)?$)",
      "profile = \"feishu\"\nserialize_by = \"bitable_table\"\n" + route_keys, extra);
}

}  // namespace resendd::test
