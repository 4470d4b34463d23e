#include "api/handlers.h"

#include <spdlog/spdlog.h>

#include <boost/url/parse.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "http/server.h"
#include "queue/dispatcher.h"
#include "queue/intake.h"
#include "store/job_store.h"
#include "util/await.h"
#include "util/log.h"

namespace resendd {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

outgoing_response json_ok(int status, const json& body) {
  outgoing_response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

std::string path_of(const std::string& target) { return target.substr(0, target.find('?')); }

}  // namespace

bool api::authorized(const incoming_request& req) const {
  const auto& tokens = s_.cfg.server.api_tokens;
  if (tokens.empty()) return true;
  const std::string h = req.header("authorization");
  if (h.size() < 8 || strncasecmp(h.c_str(), "Bearer ", 7) != 0) return false;
  const std::string given = h.substr(7);
  bool ok = false;
  for (const auto& t : tokens) ok = secret_equals(given, t) || ok;
  return ok;
}

asio::awaitable<outgoing_response> api::handle(incoming_request req) {
  const std::string path = path_of(req.target);
  const auto& m = req.method;
  if (path == "/healthz" && m == "GET") co_return json_ok(200, {{"status", "ok"}});
  if (path == "/readyz" && m == "GET") {
    if (s_.store.writable()) co_return json_ok(200, {{"status", "ready"}});
    co_return json_error(503, "store_unavailable", "the store is not writable");
  }
  if (path == "/metrics" && m == "GET") co_return metrics();
  if (path == "/token") {
    if (m != "POST") co_return json_error(405, "method_not_allowed", "use POST");
    if (!s_.token)
      co_return json_error(503, "not_configured", "the token module is not configured");
    co_return co_await s_.token(req);
  }
  const bool is_jobs = path == "/jobs" || path.starts_with("/jobs/");
  if (path != "/resend" && !is_jobs) co_return json_error(404, "not_found", "no such endpoint");
  if (!authorized(req)) {
    spdlog::info("http: {} {} refused: bad or missing bearer token", m, path);
    outgoing_response r = json_error(401, "unauthorized", "a valid Bearer token is required");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    co_return r;
  }
  if (path == "/resend") {
    if (m != "POST") co_return json_error(405, "method_not_allowed", "use POST");
    co_return co_await resend(req);
  }
  if (path == "/jobs") {
    if (m != "GET") co_return json_error(405, "method_not_allowed", "use GET");
    const auto q = req.target.find('?');
    co_return jobs(q == std::string::npos ? "" : req.target.substr(q + 1));
  }
  // /jobs/{id} and /jobs/{id}/{action}
  const std::string rest = path.substr(6);
  const auto slash = rest.find('/');
  const std::string id = rest.substr(0, slash);
  if (slash == std::string::npos) {
    if (m != "GET") co_return json_error(405, "method_not_allowed", "use GET");
    co_return job(id);
  }
  if (m != "POST") co_return json_error(405, "method_not_allowed", "use POST");
  co_return job_action(id, rest.substr(slash + 1));
}

asio::awaitable<outgoing_response> api::resend(const incoming_request& req) {
  const auto now = s_.clk.now();
  auto prepared = prepare_job(req.body, req.header("idempotency-key"), s_.routes, now);
  if (auto* e = std::get_if<intake_error>(&prepared)) {
    spdlog::info("resend refused ({} {}): {}", e->status, e->code, e->message);
    co_return json_error(e->status, e->code, e->message);
  }
  auto& job = std::get<store::new_job>(prepared);
  const std::string route = job.route;
  // The answer waits for the commit that holds the job: a 202 means it is on disk.
  auto r = co_await await_callback<store::enqueue_result>(
      [&](auto done) { s_.store.enqueue(std::move(job), now, std::move(done)); });
  using st = store::enqueue_result::status;
  switch (r.what) {
    case st::queued:
    case st::existing: {
      if (r.what == st::queued) {
        s_.dispatch.wake();
        spdlog::info("job {} queued on route {}", r.id, route);
      }
      auto res = json_ok(202, {{"id", r.id}, {"state", r.state}});
      res.headers.emplace_back("Location", "/jobs/" + r.id);
      co_return res;
    }
    case st::full: {
      spdlog::warn("resend refused: the queue is full ({} jobs)", s_.store.active());
      auto res = json_error(503, "queue_full", "the queue is full; try again later");
      res.headers.emplace_back("Retry-After", "30");
      co_return res;
    }
    case st::failed:
      spdlog::error("resend: storing the job failed: {}", r.error);
      auto res = json_error(503, "store_failed", "the job could not be stored; try again");
      res.headers.emplace_back("Retry-After", "5");
      co_return res;
  }
  co_return json_error(500, "internal", "internal error");
}

outgoing_response api::job(const std::string& id) {
  auto j = s_.store.job(id);
  if (!j) return json_error(404, "not_found", "no job with that id");
  mask_job_secrets(*j);
  return json_ok(200, *j);
}

outgoing_response api::jobs(const std::string& query) {
  std::string state;
  int limit = 50;
  auto target = boost::urls::parse_origin_form("/jobs?" + query);
  if (!target) return json_error(400, "bad_query", "malformed query string");
  for (const auto& p : target->params()) {
    if (p.key == "state")
      state = p.value;
    else if (p.key == "limit") {
      try {
        limit = std::stoi(p.value);
      } catch (...) {
        return json_error(400, "bad_query", "limit must be a number");
      }
    }
  }
  static const std::set<std::string> states = {"",          "queued", "delivering",
                                               "succeeded", "dead",   "cancelled"};
  if (!states.count(state)) return json_error(400, "bad_query", "unknown state");
  limit = std::clamp(limit, 1, 1000);
  auto list = s_.store.list(state, limit);
  return json_ok(200, {{"jobs", list}});
}

outgoing_response api::job_action(const std::string& id, const std::string& action) {
  const auto now = s_.clk.now();
  if (action == "retry") {
    if (!s_.store.retry(id, now))
      return json_error(409, "not_retryable", "only dead or cancelled jobs can be retried");
    s_.dispatch.wake();
    spdlog::info("job {} queued again by an operator", id);
    return json_ok(200, {{"id", id}, {"state", "queued"}});
  }
  if (action == "cancel") {
    if (!s_.store.cancel(id, now))
      return json_error(409, "not_cancellable", "only queued or delivering jobs can be cancelled");
    spdlog::info("job {} cancelled by an operator", id);
    return json_ok(200, {{"id", id}, {"state", "cancelled"}});
  }
  return json_error(404, "not_found", "no such action");
}

outgoing_response api::metrics() {
  std::ostringstream o;
  o << "# HELP resendd_jobs Jobs in the store by state.\n# TYPE resendd_jobs gauge\n";
  const auto counts = s_.store.counts();
  for (const auto& [state, n] : counts.items())
    o << "resendd_jobs{state=\"" << state << "\"} " << n.get<std::int64_t>() << "\n";
  o << "# HELP resendd_deliveries_in_flight Deliveries in flight.\n# TYPE "
       "resendd_deliveries_in_flight gauge\n"
    << "resendd_deliveries_in_flight " << s_.dispatch.in_flight() << "\n"
    << "# HELP resendd_attempts_total Attempts finished since start.\n# TYPE "
       "resendd_attempts_total counter\n"
    << "resendd_attempts_total " << s_.dispatch.delivered() << "\n"
    << "# HELP resendd_store_commits_total Store transactions committed since start.\n"
    << "# TYPE resendd_store_commits_total counter\nresendd_store_commits_total "
    << s_.store.batches() << "\n";
  outgoing_response r;
  r.body = o.str();
  r.content_type = "text/plain; version=0.0.4";
  return r;
}

}  // namespace resendd
