#pragma once
// Alerts: when jobs die, a message to [alerts] webhook says which bill, which table, why, and
// how to retry. A message is itself a durable job on resendd's alert route (queue/routes.h), so
// it is retried like any job and outlives a restart once queued; an alert job that dies is
// logged, never alerted.
//
// Batching, per route of the dead jobs: a death with no batch open starts one, which is queued
// `alerts.delay` later but never sooner than `alerts.interval` after that route's previous
// message; deaths meanwhile join the batch and are counted (the first few are listed). At
// shutdown open batches are queued at once (flush), so a SIGTERM loses none; after a crash,
// start() finds the deaths no alert job covers (each alert job carries its route in its
// resource_key, "alerts:ROUTE", and deaths after the newest one are not yet reported).
//
// Thread-safety: job_died and flush run on the io thread (the dispatcher's).
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "util/time.h"

namespace resendd {

class queue_service;

// What an alert says of one dead job.
struct dead_job {
  std::string id;
  std::string route;
  std::string location;
  std::string reason;   // the job's last error
  std::string request;  // the stored /resend body (for the bill); "" when too large to read
  int attempts = 0;
  std::size_t request_bytes = 0;  // the stored body's size
};

// The pure parts (unit tested).
// One line naming the bill: a Bitable batch's records' fields (json_parse applied), else the
// body sent, cut to about 300 bytes on a character boundary; "" when there is none.
std::string describe_bill(std::string_view stored_request);
// Where the job was going: "Bitable table T of base A" for Bitable URLs, else host and path.
std::string describe_target(std::string_view location);
// The message text: `listed` jobs in detail, `count` deaths in all (count ≥ listed.size()).
std::string alert_text(std::string_view host, std::string_view route,
                       const std::vector<dead_job>& listed, int count);
// The webhook body. "feishu": a custom bot's text message; "generic": {"text", "route", "count",
// "host", "jobs": [{"id", "location", "reason", "attempts"}]} ("text" as Slack-style hooks read).
std::string alert_body(std::string_view format, std::string_view host, std::string_view route,
                       const std::vector<dead_job>& listed, int count);
// Feishu/Lark custom-bot signature: Base64(HMAC-SHA256, key timestamp + "\n" + secret, over
// nothing) (shared/PROTOCOLS.md §5).
std::string feishu_bot_sign(std::string_view secret, std::int64_t unix_seconds);
// The body with "timestamp" and "sign" for `now` (a signature is good for an hour, so it is made
// at each attempt, not stored). nullopt when the body is not a JSON object.
std::optional<std::string> sign_feishu_bot_body(std::string_view body, std::string_view secret,
                                                sys_time now);

class alerter {
 public:
  // `cfg` is the daemon's live configuration ([alerts] may change on reload).
  alerter(boost::asio::io_context& io, queue_service& queue, const config& cfg, const clock& clk);
  ~alerter();
  alerter(const alerter&) = delete;
  alerter& operator=(const alerter&) = delete;

  // At start: dead jobs of the last `catch_up` that no alert reported (a crash within `delay`
  // of a death, or a webhook set since) are reported like new deaths.
  void start();
  static constexpr millis catch_up{3'600'000};
  static constexpr int catch_up_limit = 1000;
  // A job died (its outcome committed). Ignored without a webhook and for alert jobs.
  void job_died(dead_job d);
  // Queues every open batch now; `done` runs once they are stored (or given up).
  void flush(std::function<void()> done);

  static constexpr int max_listed = 5;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace resendd
