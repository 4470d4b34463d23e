#include "api/handlers.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/url/parse.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api/openapi.h"
#include "http/server.h"
#include "queue/dispatcher.h"
#include "queue/first_answers.h"
#include "queue/intake.h"
#include "queue/queue_service.h"
#include "token/token_service.h"
#include "util/await.h"
#include "util/json_depth.h"
#include "util/log.h"
#include "util/memory.h"
#include "util/metrics.h"

namespace resendd {

namespace asio = boost::asio;
using nlohmann::json;
using store::action_result;

namespace {

outgoing_response json_ok(int status, const json& body) {
  outgoing_response r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

std::string path_of(const std::string& target) { return target.substr(0, target.find('?')); }

// The query parameters of a request target (decoded); nullopt when it does not parse or names
// a parameter twice (`state=queued&state=dead` asks for two things; neither wins silently).
std::optional<std::map<std::string, std::string>> query_of(const std::string& target) {
  auto parsed = boost::urls::parse_origin_form(target);
  if (!parsed) return std::nullopt;
  std::map<std::string, std::string> out;
  for (const auto& p : parsed->params())
    if (!out.emplace(std::string(p.key), std::string(p.value)).second) return std::nullopt;
  return out;
}

constexpr std::string_view bad_query_message = "malformed query string, or a parameter given twice";

// 405 with the Allow header RFC 9110 §15.5.6 requires; a resource that answers GET answers HEAD.
outgoing_response method_not_allowed(const std::string& allow) {
  const std::string methods = allow.starts_with("GET") ? "GET, HEAD" + allow.substr(3) : allow;
  auto r = json_error(405, "method_not_allowed", "use " + methods);
  r.headers.emplace_back("Allow", methods);
  return r;
}

outgoing_response unavailable(std::string_view code, const std::string& message, int retry_after) {
  auto r = json_error(503, code, message);
  r.headers.emplace_back("Retry-After", std::to_string(retry_after));
  return r;
}

// Maps an admin action's result to HTTP.
outgoing_response action_answer(const action_result& r, const std::string& id) {
  switch (r.what) {
    case action_result::status::done:
      return json_ok(200,
                     id.empty() ? json{{"count", r.count}} : json{{"id", id}, {"state", r.state}});
    case action_result::status::not_found:
      return json_error(404, "not_found", "no job with that id");
    case action_result::status::conflict:
      return json_error(409, "conflict", r.message);
    case action_result::status::failed:
      break;
  }
  spdlog::error("admin action failed: {}", r.message);
  return unavailable("store_failed", "the store could not do it: " + r.message, 5);
}

// Prefer: wait=N (RFC 7240; N capped at 10 s) or ?wait=N (0 to 10, else nullopt: 400). Other
// preferences, and a wait preference that does not parse, are ignored, as RFC 7240 allows.
std::optional<millis> preferred_wait(const incoming_request& req, sys_time now) {
  constexpr millis max_wait{10'000};
  // Whole seconds, parsed as a destination's wait hint is (util/time.h).
  const auto seconds = [now](std::string_view v) { return parse_wait_hint(v, false, now); };
  if (req.target.find('?') != std::string::npos)
    if (auto q = query_of(req.target); q && q->count("wait")) {
      const auto w = seconds(q->at("wait"));
      if (!w || *w > max_wait) return std::nullopt;
      return w;
    }
  // preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] ), in a list; a word
  // is a token or a quoted-string (RFC 7240 §2). Parameters are not preferences.
  const std::string prefer = req.header("prefer");
  for (std::size_t pos = 0; pos < prefer.size();) {
    const auto end = std::min(prefer.find(',', pos), prefer.size());
    std::string_view item(prefer.data() + pos, end - pos);
    pos = end + 1;
    item = item.substr(0, item.find(';'));
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) continue;
    const auto name = trim_ows(item.substr(0, eq));
    auto value = trim_ows(item.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    if (name.size() == 4 && strncasecmp(name.data(), "wait", 4) == 0)
      if (const auto w = seconds(value)) return std::min(*w, max_wait);
  }
  return millis{0};
}

// 401 with the challenge, for a missing or wrong api_tokens Bearer.
outgoing_response unauthorized(const std::string& what) {
  spdlog::info("http: {} refused: bad or missing bearer token", what);
  outgoing_response r = json_error(401, "unauthorized", "a valid Bearer token is required");
  r.headers.emplace_back("WWW-Authenticate", "Bearer");
  return r;
}

// The seed's synchronous answer: the destination's status, its body under "response" (as JSON
// when it is JSON), and the job.
outgoing_response first_answer_response(const std::string& id, const first_answer& a, millis wait) {
  json response = json::parse(a.body, nullptr, false);
  if (response.is_discarded() || !json_depth_within(a.body)) response = a.body;
  // A status that cannot carry a body (1xx, 204, 304) is reported in it, under 200.
  const bool bodiless = a.status < 200 || a.status == 204 || a.status == 304;
  auto r = json_ok(bodiless ? 200 : a.status,
                   {{"id", id}, {"state", a.state}, {"status", a.status}, {"response", response}});
  r.headers.emplace_back("Location", "/jobs/" + id);
  r.headers.emplace_back("Preference-Applied", "wait=" + std::to_string(wait.count() / 1000));
  return r;
}

bool is_true(const std::map<std::string, std::string>& q, const std::string& key) {
  auto it = q.find(key);
  return it != q.end() && (it->second == "true" || it->second == "1");
}

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

namespace {
// The path as a metrics label: the endpoint, with job ids folded.
std::string endpoint_of(const std::string& path) {
  for (const char* p : {"/resend", "/token", "/jobs", "/healthz", "/readyz", "/metrics",
                        "/jobs/retry", "/jobs/purge", "/openapi.json"})
    if (path == p) return path;
  if (path.starts_with("/jobs/")) return "/jobs/{id}";
  return "other";
}
}  // namespace

asio::awaitable<outgoing_response> api::handle(incoming_request req) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string endpoint = endpoint_of(path_of(req.target));
  auto r = co_await route(std::move(req));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  metrics().count("resendd_http_requests_total", "HTTP requests answered, by endpoint and status.",
                  {{"path", endpoint}, {"status", std::to_string(r.status)}});
  metrics().observe("resendd_http_request_duration_seconds",
                    "Time to answer an HTTP request (for /resend: up to its commit).",
                    {{"path", endpoint}}, seconds);
  co_return r;
}

asio::awaitable<outgoing_response> api::route(incoming_request req) {
  const std::string path = path_of(req.target);
  const auto& m = req.method;  // HEAD arrives as GET (the server sends no body back)
  if (path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/openapi.json") {
    if (m != "GET") co_return method_not_allowed("GET");
    if (path == "/healthz") co_return json_ok(200, {{"status", "ok"}});
    if (path == "/readyz") co_return co_await readyz();
    if (path == "/metrics") co_return co_await render_metrics();
    outgoing_response r;
    r.body = openapi_document(s_.cfg);
    co_return r;
  }
  if (path == "/token") {
    if (m != "POST") co_return method_not_allowed("POST");
    // Anyone who knows the app id (it is the JWT's iss) could mint tokens: beyond loopback the
    // caller needs an api_tokens Bearer too, unless token_public says otherwise (the seed's way).
    if (s_.public_listener && !s_.cfg.server.token_public && !authorized(req))
      co_return unauthorized("POST /token on a public listener");
    if (!s_.tokens || !s_.tokens->coze_configured())
      co_return json_error(503, "not_configured", "the token module is not configured");
    co_return co_await token(req);
  }
  const bool is_jobs = path == "/jobs" || path.starts_with("/jobs/");
  if (path != "/resend" && !is_jobs) co_return json_error(404, "not_found", "no such endpoint");
  if (!authorized(req)) co_return unauthorized(m + " " + path);
  if (path == "/resend") {
    if (m != "POST") co_return method_not_allowed("POST");
    co_return co_await resend(req);
  }
  co_return co_await jobs(req, path);
}

asio::awaitable<outgoing_response> api::readyz() {
  const auto r = co_await s_.queue.ready();
  if (r.ready) co_return json_ok(200, {{"status", "ready"}});
  co_return json_error(503, "not_ready", r.reason);
}

asio::awaitable<outgoing_response> api::resend(const incoming_request& req) {
  if (req.given_twice("idempotency-key")) {
    const std::string why = "Idempotency-Key given more than once: which one is meant?";
    spdlog::info("resend refused (400 bad_idempotency_key): {}", why);
    co_return json_error(400, "bad_idempotency_key", why);
  }
  const std::string key = req.header("idempotency-key");
  // A large body is read on the work pool: parsing megabytes of JSON would hold every other
  // connection and every delivery on this thread for that long.
  using checked_t = std::variant<checked_body, intake_error>;
  checked_t checked;
  if (s_.work_pool && req.body.size() >= large_request_bytes) {
    checked = co_await await_callback<checked_t>([&](auto done) {
      asio::post(*s_.work_pool, [&req, &key, done = std::move(done)] {
        auto r = check_body(req.body, key);
        done(std::move(r));
        release_free_memory();  // the parsed document's memory goes back to the system
      });
    });
  } else {
    checked = check_body(req.body, key);
  }
  auto prepared = std::holds_alternative<intake_error>(checked)
                      ? std::variant<store::new_job, intake_error>(std::get<intake_error>(checked))
                      : prepare_job(std::move(std::get<checked_body>(checked)), req.body, key,
                                    s_.routes, s_.clk.now());
  if (auto* e = std::get_if<intake_error>(&prepared)) {
    spdlog::info("resend refused ({} {}): {}", e->status, e->code, e->message);
    co_return json_error(e->status, e->code, e->message);
  }
  auto& job = std::get<store::new_job>(prepared);
  const std::string route = job.route;
  const std::string id = job.id;
  if (req.target.find('?') != std::string::npos && !query_of(req.target))
    co_return json_error(400, "bad_query", bad_query_message);
  const auto wait = preferred_wait(req, s_.clk.now());
  if (!wait)
    co_return json_error(400, "bad_query", "wait must be a whole number of seconds, 0 to 10");
  // Registered before the commit: the first attempt may finish before a 202 would go out.
  if (*wait > millis{0} && s_.answers) s_.answers->expect(id);
  // The answer waits for the commit that holds the job: a 202 means it is on disk.
  auto r = co_await s_.queue.enqueue(std::move(job));
  using st = store::enqueue_result::status;
  std::optional<first_answer> got;
  if (*wait > millis{0} && s_.answers) {
    if (r.what == st::queued && r.id == id) {
      const std::function<bool()> give_up = [] { return true; };
      got = co_await await_callback_for<first_answer>(
          [this, &id](auto done) { s_.answers->listen(id, std::move(done)); }, *wait, give_up);
    }
    s_.answers->forget(id);
  }
  switch (r.what) {
    case st::queued:
    case st::existing: {
      if (r.what == st::queued) {
        spdlog::info("job {} queued on route {}", r.id, route);
        metrics().count("resendd_accepted_total", "Jobs accepted by /resend, by route.",
                        {{"route", route}});
      }
      if (got && got->status > 0) co_return first_answer_response(r.id, *got, *wait);
      auto res = json_ok(202, {{"id", r.id}, {"state", r.state}});
      res.headers.emplace_back("Location", "/jobs/" + r.id);
      co_return res;
    }
    case st::conflict:
      spdlog::info("resend refused (422 idempotency_key_reused): the key belongs to job {}", r.id);
      co_return json_error(422, "idempotency_key_reused",
                           "this Idempotency-Key was used for a different request (job " + r.id +
                               "); use a new key for a new request");
    case st::full:
      spdlog::warn("resend refused: the queue is full ({} jobs)", s_.queue.active());
      co_return unavailable("queue_full", "the queue is full; try again later", 30);
    case st::busy:
      spdlog::warn("resend refused: {}", r.error);
      co_return unavailable("store_busy", "the store is busy (" + r.error + "); nothing was stored",
                            1);
    case st::failed:
      spdlog::error("resend: storing the job failed: {}", r.error);
      co_return unavailable("store_failed", "the job could not be stored; try again", 5);
  }
  co_return json_error(500, "internal", "internal error");
}

asio::awaitable<outgoing_response> api::jobs(const incoming_request& req, const std::string& path) {
  const auto& m = req.method;
  if (path == "/jobs") {
    if (m != "GET") co_return method_not_allowed("GET");
    co_return co_await list(req.target);
  }
  // /jobs/{id}, /jobs/{id}/{action}, /jobs/retry, /jobs/purge
  const std::string rest = path.substr(6);
  const auto slash = rest.find('/');
  const std::string id = rest.substr(0, slash);
  if (slash == std::string::npos) {
    if (m == "POST" && (id == "retry" || id == "purge"))
      co_return co_await bulk_action(id, req.target);
    if (m != "GET")
      co_return method_not_allowed(id == "retry" || id == "purge" ? "GET, POST" : "GET");
    co_return co_await job(id);
  }
  if (m != "POST") co_return method_not_allowed("POST");
  co_return co_await job_action(id, rest.substr(slash + 1), req.target);
}

asio::awaitable<outgoing_response> api::job(const std::string& id) {
  auto r = co_await s_.queue.job(id);
  if (!r.error.empty()) co_return unavailable("store_failed", r.error, 1);
  if (!r.value) co_return json_error(404, "not_found", "no job with that id");
  mask_job_secrets(*r.value, alerts_route_name);
  co_return json_ok(200, *r.value);
}

asio::awaitable<outgoing_response> api::list(const std::string& target) {
  const auto q = query_of(target);
  if (!q) co_return json_error(400, "bad_query", bad_query_message);
  std::string state;
  int limit = 50;
  for (const auto& [key, value] : *q) {
    if (key == "state") {
      state = value;
    } else if (key == "limit") {
      std::size_t used = 0;
      try {
        limit = std::stoi(value, &used);
      } catch (...) {
        used = 0;
      }
      if (used == 0 || used != value.size() || limit < 1 || limit > 1000)
        co_return json_error(400, "bad_query", "limit must be a whole number from 1 to 1000");
    } else {
      co_return json_error(400, "bad_query", "unknown parameter (state and limit are known)");
    }
  }
  if (!state.empty() && std::find(store::job_states.begin(), store::job_states.end(), state) ==
                            store::job_states.end())
    co_return json_error(400, "bad_query",
                         "state must be queued, delivering, succeeded, dead or cancelled");
  auto r = co_await s_.queue.list(state, limit);
  if (!r.value) co_return unavailable("store_failed", r.error, 1);
  for (auto& job : *r.value) mask_job_secrets(job, alerts_route_name);
  co_return json_ok(200, {{"jobs", *r.value}});
}

asio::awaitable<outgoing_response> api::job_action(const std::string& id, const std::string& action,
                                                   const std::string& target) {
  const auto q = query_of(target);
  if (!q) co_return json_error(400, "bad_query", bad_query_message);
  if (action == "retry") {
    auto r = co_await s_.queue.retry(id, is_true(*q, "force"));
    if (r.what == action_result::status::done)
      spdlog::info("job {} queued again by an operator", id);
    co_return action_answer(r, id);
  }
  if (action == "cancel") {
    auto r = co_await s_.queue.cancel(id);
    if (r.what == action_result::status::done) spdlog::info("job {} cancelled by an operator", id);
    co_return action_answer(r, id);
  }
  co_return json_error(404, "not_found", "no such action");
}

asio::awaitable<outgoing_response> api::bulk_action(const std::string& action,
                                                    const std::string& target) {
  const auto q = query_of(target);
  if (!q) co_return json_error(400, "bad_query", bad_query_message);
  if (action == "retry") {
    if (!q->count("state") || q->at("state") != "dead")
      co_return json_error(400, "bad_query", "POST /jobs/retry takes state=dead");
    auto r = co_await s_.queue.retry_dead();
    if (r.what == action_result::status::done)
      spdlog::info("{} dead job(s) queued again by an operator", r.count);
    co_return action_answer(r, "");
  }
  // purge: older_than=DURATION, state=succeeded,cancelled (default) | any of them and dead
  const auto older = q->count("older_than") ? parse_duration(q->at("older_than")) : std::nullopt;
  if (!older) co_return json_error(400, "bad_query", "older_than takes a duration like 7d");
  std::vector<std::string> states;
  std::string list = q->count("state") ? q->at("state") : "succeeded,cancelled";
  for (std::size_t pos = 0; pos <= list.size();) {
    const auto comma = std::min(list.find(',', pos), list.size());
    const std::string s = list.substr(pos, comma - pos);
    if (s != "succeeded" && s != "dead" && s != "cancelled")
      co_return json_error(400, "bad_query", "state lists succeeded, dead or cancelled");
    states.push_back(s);
    pos = comma + 1;
  }
  spdlog::info("purge of {} jobs older than {} started by an operator", list,
               format_duration(*older));
  co_return action_answer(co_await s_.queue.purge(*older, states), "");
}

asio::awaitable<outgoing_response> api::token(const incoming_request& req) {
  auto body = json_depth_within(req.body) ? json::parse(req.body, nullptr, false)
                                          : json(json::value_t::discarded);
  if (body.is_discarded() || !body.is_object())
    co_return json_error(400, "bad_json", "body must be a JSON object");
  if (!body.contains("public_key") || !body["public_key"].is_string() ||
      body["public_key"].get<std::string>().empty())
    co_return json_error(400, "bad_request", "public_key is required (the Coze public key id)");
  if (!body.contains("coze_api_key") || !body["coze_api_key"].is_string())
    co_return json_error(400, "bad_request", "coze_api_key is required");
  int duration = coze_default_token_seconds;
  if (body.contains("duration_seconds") && !body["duration_seconds"].is_null()) {
    // nlohmann::json reads every integer from 0 up as unsigned, and one past 2^63 only so.
    const auto& d = body["duration_seconds"];
    if (!d.is_number_unsigned() || d.get<std::uint64_t>() < 1)
      co_return json_error(400, "bad_request", "duration_seconds must be a positive integer");
    duration = int(std::min<std::uint64_t>(d.get<std::uint64_t>(), coze_default_token_seconds));
  }
  if (!secret_equals(body["coze_api_key"].get<std::string>(), s_.cfg.coze.app_id)) {
    spdlog::info("token: refused a request with a wrong coze_api_key");
    co_return json_error(401, "unauthorized", "coze_api_key does not match");
  }
  const std::string kid = body["public_key"].get<std::string>();
  auto g = co_await s_.tokens->coze_token(kid, duration);
  outgoing_response r;
  if (g.status != 0) {
    spdlog::warn("token: {}", g.error);
    r.status = g.status;
    r.body = g.body.dump();
    co_return r;
  }
  r.body = json{{"access_token", g.token},
                {"expires_in", g.body.value("expires_in", json(nullptr))},
                {"token_type", g.body.value("token_type", std::string("Bearer"))}}
               .dump();
  co_return r;
}

// From counters kept in memory (moved at every commit), plus one index seek for the oldest
// queued job; no table scan.
asio::awaitable<outgoing_response> api::render_metrics() {
  std::ostringstream o;
  // The age of the oldest queued job (one index seek; omitted when the store does not answer).
  const auto oldest = co_await s_.queue.oldest_queued();
  if (oldest.error.empty() && oldest.value) {
    double age = 0;
    if (oldest.value->is_string())
      if (auto t = from_iso8601(oldest.value->get<std::string>()))
        age = std::max(0.0, std::chrono::duration<double>(s_.clk.now() - *t).count());
    metrics().set("resendd_oldest_queued_age_seconds",
                  "Age of the oldest queued job (0 when none is queued).", {}, age);
  }
  metrics().render(o);
  o << "# HELP resendd_jobs Jobs in the store by state and route.\n# TYPE resendd_jobs gauge\n";
  const auto counts = s_.queue.counts();
  std::map<std::string, std::int64_t> by_state;
  for (const auto* st : store::job_states) by_state[st] = 0;
  for (const auto& [k, n] : counts) {
    o << "resendd_jobs{state=\"" << k.first << "\",route=\"" << k.second << "\"} " << n << "\n";
    by_state[k.first] += n;
  }
  o << "# HELP resendd_jobs_total_by_state Jobs in the store by state, all routes.\n"
    << "# TYPE resendd_jobs_total_by_state gauge\n";
  for (const auto& [state, n] : by_state)
    o << "resendd_jobs_total_by_state{state=\"" << state << "\"} " << n << "\n";
  o << "# HELP resendd_deliveries_in_flight Deliveries in flight.\n# TYPE "
       "resendd_deliveries_in_flight gauge\n"
    << "resendd_deliveries_in_flight " << s_.dispatch.in_flight() << "\n"
    << "# HELP resendd_store_commits_total Store transactions committed since start.\n"
    << "# TYPE resendd_store_commits_total counter\nresendd_store_commits_total "
    << s_.queue.commits() << "\n";
  outgoing_response r;
  r.body = o.str();
  r.content_type = "text/plain; version=0.0.4";
  co_return r;
}

}  // namespace resendd
