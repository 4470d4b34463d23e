#include "queue/dispatcher.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/url.hpp>

#include "http/client.h"
#include "queue/alerts.h"
#include "queue/classify.h"
#include "queue/first_answers.h"
#include "queue/forward.h"
#include "queue/intake.h"
#include "queue/retry_policy.h"
#include "queue/routes.h"
#include "store/queue_store.h"
#include "token/credentials.h"
#include "util/await.h"
#include "util/errors.h"
#include "util/log.h"
#include "util/memory.h"
#include "util/metrics.h"
#include "util/random.h"

namespace resendd {

namespace asio = boost::asio;

namespace {
constexpr int max_claim_batch = 256;
constexpr int max_claims_out = 2;
constexpr std::size_t stored_response_bytes = 4096;
constexpr millis idle_poll{1000};  // safety net: look for due jobs at least this often
constexpr millis finish_retry_first{100};
constexpr millis finish_retry_cap{5'000};
}  // namespace

struct dispatcher::impl : std::enable_shared_from_this<dispatcher::impl> {
  asio::io_context& io;
  store::queue_store& store;
  const route_table& routes;
  http_client& client;
  const clock& clk;
  const config& cfg;
  credential_source* credentials;
  first_answers* answers = nullptr;    // Prefer: wait on /resend
  alerter* alerts = nullptr;           // told of deaths
  asio::thread_pool* pool = nullptr;   // large requests are parsed there
  asio::io_context::executor_type ex;  // the io_context runs on one thread
  asio::steady_timer timer;
  std::atomic<int> in_flight{0};
  std::atomic<bool> loop_alive{false};
  bool detached = false;          // the dispatcher is gone: frames destroyed late touch nothing
  bool wake_pending = true;       // io thread only: something may be claimable
  int claiming = 0;               // io thread only: slots asked for by claims in the store
  int claims_out = 0;             // io thread only: claims in the store
  int recording = 0;              // io thread only: outcomes on their first way to the store
  millis next_look{0};            // io thread only: when the last claim said to look again
  bool stopping = false;          // io thread only
  std::function<void()> drained;  // io thread only
  std::vector<store::route_limits> limits;
  std::size_t rotation = 0;  // io thread only
  millis lease{0};

  impl(asio::io_context& i, store::queue_store& s, const route_table& r, http_client& c,
       const clock& k, const config& g, credential_source* cr)
      : io(i),
        store(s),
        routes(r),
        client(c),
        clk(k),
        cfg(g),
        credentials(cr),
        ex(i.get_executor()),
        timer(ex) {
    follow_routes();
  }

  // Per-route limits and the lease from the current routes (at start and after a reload).
  void follow_routes() {
    limits.clear();
    millis longest{0};
    for (const auto& rt : routes.all()) {
      limits.push_back({rt->cfg.name, rt->settings.concurrency, rt->cfg.key_concurrency});
      longest = std::max(longest, rt->settings.request_timeout);
    }
    // Longer than any attempt: a live delivery never loses its lease. It never shrinks, so a
    // delivery that started under the old routes keeps its lease too.
    lease = std::max(lease, longest + millis{60'000});
  }

  void start_claim_loop() {
    loop_alive = true;
    wake_pending = true;
    asio::co_spawn(ex, claim_loop(), [self = shared_from_this()](std::exception_ptr e) {
      if (!e) return;
      self->loop_alive = false;
      spdlog::error("dispatcher: the claim loop failed ({}); restarting it in 1s",
                    exception_message(e));
      auto t = std::make_shared<asio::steady_timer>(self->ex, std::chrono::seconds(1));
      t->async_wait([self, t](const boost::system::error_code&) {
        if (!self->stopping) self->start_claim_loop();
      });
    });
  }

  // Claims run in the store while deliveries go on; up to two at once, so slots freed while
  // one claim is in the store are filled by the next without waiting for the first to return.
  // Two claims never take the same job or overrun a limit: the store runs them one after the
  // other, and each counts what the one before it took.
  asio::awaitable<void> claim_loop() {
    auto self = shared_from_this();
    const int concurrency = cfg.delivery.defaults.concurrency;
    while (!stopping) {
      const int free = concurrency - in_flight.load() - claiming;
      if (wake_pending && free > 0 && claims_out < max_claims_out) {
        issue_claim(std::min(free, max_claim_batch));
        continue;
      }
      // Sleep until something may be claimable: a wake, a freed slot, a claim's answer, or the
      // next due time the last answer gave.
      timer.expires_after(claims_out > 0 ? idle_poll : next_look);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (!ec) wake_pending = true;  // the due time came, or the idle poll
    }
    maybe_drained();
  }

  // A stop is done when no delivery, claim or first try of an outcome is left.
  void maybe_drained() {
    if (stopping && in_flight.load() == 0 && claims_out == 0 && recording == 0 && drained)
      std::exchange(drained, nullptr)();
  }

  void issue_claim(int want) {
    wake_pending = false;
    claiming += want;
    ++claims_out;
    store::claim_request req{clk.now(), lease, want, limits, rotation++};
    store.claim(std::move(req), [self = shared_from_this(), want](store::claim_result r) {
      asio::post(self->ex,
                 [self, want, r = std::move(r)]() mutable { self->claimed(want, std::move(r)); });
    });
  }

  void claimed(int want, store::claim_result r) {
    claiming -= want;
    --claims_out;
    if (detached) return;
    if (!r.error.empty()) spdlog::error("dispatcher: claim failed: {}", r.error);
    if (r.reclaimed)
      spdlog::warn("dispatcher: {} job(s) whose lease expired are queued again", r.reclaimed);
    if (stopping) {
      // Not delivered: they stay 'delivering' and shutdown queues them again.
      maybe_drained();
      return;
    }
    for (auto& j : r.jobs) spawn_delivery(std::move(j));
    if (!r.jobs.empty() && int(r.jobs.size()) >= want) {
      wake_pending = true;  // it filled what was free: more may be due
    } else {
      const auto now = clk.now();
      next_look = r.next_due ? std::clamp(*r.next_due - now, millis{0}, idle_poll) : idle_poll;
      if (r.next_due && *r.next_due <= now) wake_pending = true;
    }
    timer.cancel();
  }

  void spawn_delivery(store::claimed_job j) {
    ++in_flight;
    auto slot = std::make_shared<bool>(false);  // true once released
    const std::string id = j.id;
    asio::co_spawn(ex, deliver(std::move(j), slot), [id](std::exception_ptr e) {
      if (e)
        spdlog::error(
            "job {}: delivery failed inside resendd: {}; its lease expires and it is "
            "delivered again",
            id, exception_message(e));
    });
  }

  // Frees the slot when the delivery's frame goes, however it goes: finished, thrown, or
  // destroyed with an operation that threw inside the io loop (see app's run_io).
  struct slot_guard {
    impl& d;
    std::shared_ptr<bool> slot;
    ~slot_guard() { d.release(*slot); }
  };

  // Frees one delivery slot (once) and lets the claim loop look again.
  void release(bool& slot) {
    if (detached || std::exchange(slot, true)) return;
    --in_flight;
    if (stopping) {
      maybe_drained();
      return;
    }
    wake_pending = true;
    timer.cancel();
  }

  // Runs `f` on the work pool when the job's request is large, here otherwise.
  template <class T, class F>
  asio::awaitable<T> parse(const store::claimed_job& job, F f) {
    if (!pool || job.request.size() < large_request_bytes) co_return f();
    co_return co_await await_callback<T>([&](auto done) {
      asio::post(*pool, [&f, done = std::move(done)] {
        done(f());
        release_free_memory();  // the parsed document's memory goes back to the system
      });
    });
  }

  // Builds the outbound request from the stored one's parts; an error here is permanent for the
  // job.
  std::optional<std::string> build(const store::claimed_job& job, const route& r,
                                   std::variant<forwarded, std::string> parts,
                                   outbound_request& out) {
    if (auto* err = std::get_if<std::string>(&parts)) return *err;
    auto& f = std::get<forwarded>(parts);
    out.method = job.method;
    out.url = job.location;
    if (job.client_token) {
      boost::urls::url u(job.location);
      u.params().set("client_token", *job.client_token);
      out.url = std::string(u.buffer());
    }
    out.headers = std::move(f.headers);
    if (f.body) out.body = std::move(*f.body);
    out.timeout = r.settings.request_timeout;
    out.allow_private = r.cfg.allow_private_networks;
    // A signed custom-bot message is signed at each attempt: a signature is good for an hour.
    if (r.cfg.internal && cfg.alerts.format == "feishu" && !cfg.alerts.secret.empty()) {
      auto body = sign_feishu_bot_body(out.body, cfg.alerts.secret, clk.now());
      if (!body) return std::string("alert message is not a JSON object");
      out.body = std::move(*body);
    }
    return std::nullopt;
  }

  // Sends the job (unless it cannot be sent) and returns what happened.
  asio::awaitable<verdict> attempt(const store::claimed_job& job, const route* r,
                                   attempt_result& result, std::string& used_token) {
    outbound_request out;
    // On a shared queue (PostgreSQL) another daemon may have a route this one lacks (a change of
    // routes rolled out one daemon at a time): the job is left for it, no attempt used, instead
    // of killed here; max_age still ends it. On SQLite this daemon is the only one.
    const bool shared = cfg.store.backend == "postgres";
    const auto unroutable = [shared](const std::string& why) {
      return shared ? verdict{outcome_kind::not_sent,
                              {},
                              why + " in this daemon; left for a daemon whose routes take it"}
                    : verdict{outcome_kind::dead, {}, why + " any more"};
    };
    if (!r) co_return unroutable("location matches no configured route");
    if (!allows_method(r->cfg, job.method))
      co_return unroutable("route " + r->cfg.name + " does not allow method " + job.method);
    if (job.attempts - 1 >= r->settings.max_attempts)
      co_return verdict{outcome_kind::dead,
                        {},
                        "max_attempts (" + std::to_string(r->settings.max_attempts) +
                            ") used up: deliveries were cut off by the daemon stopping"};
    const auto forward = [&job] { return forward_request(job.request); };
    auto parts = co_await parse<std::variant<forwarded, std::string>>(job, forward);
    if (auto err = build(job, *r, std::move(parts), out))
      co_return verdict{outcome_kind::dead, {}, *err};
    if (!r->cfg.credentials.empty()) {
      if (!credentials)
        co_return verdict{outcome_kind::not_sent,
                          {},
                          "credentials \"" + r->cfg.credentials + "\" not configured"};
      auto b = co_await credentials->bearer(r->cfg.credentials);
      if (b.token.empty())
        co_return verdict{outcome_kind::not_sent, {}, "minting credentials: " + b.error};
      std::erase_if(out.headers, [](const auto& h) {
        return h.first.size() == 13 && strncasecmp(h.first.c_str(), "authorization", 13) == 0;
      });
      out.headers.emplace_back("Authorization", "Bearer " + b.token);
      used_token = std::move(b.token);
    }
    result = co_await client.send(std::move(out));
    co_return classify(r->cfg.profile, result);
  }

  asio::awaitable<void> deliver(store::claimed_job job, std::shared_ptr<bool> slot) {
    auto self = shared_from_this();
    slot_guard guard{*this, slot};
    const auto started = clk.now();
    const auto t0 = std::chrono::steady_clock::now();
    const auto routes_held = routes.hold();  // a reload meanwhile leaves `r` valid
    const route* r = routes.match(job.location);
    attempt_result result;
    std::string used_token;
    verdict v;
    try {
      v = co_await attempt(job, r, result, used_token);
    } catch (const std::exception& e) {
      // A bug, not the destination's doing: retry like a transport failure.
      spdlog::error("job {}: delivery threw: {}", job.id, e.what());
      v = {outcome_kind::retry, {}, std::string("internal error: ") + e.what()};
    }
    const bool can_refresh = r && !r->cfg.credentials.empty() && credentials &&
                             credentials->can_mint(r->cfg.credentials);
    // A token resendd minted itself and the destination refused with 401 (the Coze API's answer
    // to a revoked or unknown token): dropped and minted again, as for Feishu's 99991663, at most
    // max_auth_refreshes times a job, instead of the job dying at once.
    if (can_refresh && !used_token.empty() && result.status == 401 && v.kind == outcome_kind::dead)
      v = {outcome_kind::refresh_credentials,
           v.feishu_code,
           v.reason + ": the minted token was refused",
           {}};
    if (v.kind == outcome_kind::refresh_credentials && can_refresh && !used_token.empty())
      credentials->invalidate(r->cfg.credentials, used_token);
    // The answer's id (Feishu's X-Tt-Logid) goes with the reason into the log line, the
    // attempt's error, last_error and an alert: what the destination's support asks for.
    if (!result.answer_id.empty()) v.reason += "; " + result.answer_id;
    const route_settings settings = r ? r->settings : cfg.delivery.defaults;
    const auto now = clk.now();
    // The attempt was counted when the job was claimed: the policy sees the count before it.
    const auto step =
        next_retry(v, {job.attempts - 1, job.free_attempts, job.auth_refreshes, job.age_start}, now,
                   settings, can_refresh, random_u64());
    store::job_finish f;
    f.id = job.id;
    f.route = job.route;
    f.claim_no = job.claim_no;
    f.attempt.started_at = started;
    f.attempt.duration = std::chrono::duration_cast<millis>(std::chrono::steady_clock::now() - t0);
    if (result.answered() && result.status) f.attempt.http_status = result.status;
    f.attempt.feishu_code = v.feishu_code;
    f.attempt.outcome = std::string(to_string(v.kind));
    f.attempt.error = v.kind == outcome_kind::succeeded ? "" : v.reason;
    f.attempt.response = mask_response(result.body, stored_response_bytes);
    f.next_state = step.to == next_step::state::queued      ? "queued"
                   : step.to == next_step::state::succeeded ? "succeeded"
                                                            : "dead";
    f.next_attempt_at = step.to == next_step::state::queued ? step.next_attempt_at : now;
    f.counted = step.counted;
    f.auth_refresh = step.auth_refresh;
    f.last_error = step.reason;
    f.resource_key = job.resource_key;
    if (r) f.key_min_gap = r->cfg.key_min_gap;
    // A succeeded job keeps no bot credentials in clear (its request is never sent again).
    if (step.to == next_step::state::succeeded) {
      const auto scrub = [&job] { return scrub_request_secrets(job.request); };
      f.scrubbed_request = co_await parse<std::optional<std::string>>(job, scrub);
    }
    // A /resend waiting for this job's first answer (Prefer: wait) hears it once it commits. A
    // try that sent nothing, or that is retried at once with a fresh token, is not that answer.
    std::shared_ptr<first_answer> answer;
    if (answers && v.kind != outcome_kind::not_sent &&
        v.kind != outcome_kind::refresh_credentials && answers->wanted(job.id)) {
      answer = std::make_shared<first_answer>();
      answer->status = result.answered() ? result.status : 0;
      answer->body = result.body;
    }
    std::shared_ptr<dead_job> died;
    if (alerts && step.to == next_step::state::dead)
      died = std::make_shared<dead_job>(
          dead_job{job.id, job.route, job.location, step.reason,
                   // a large one is not parsed for the message (on this thread)
                   job.request.size() < large_request_bytes ? job.request : std::string(),
                   job.attempts, job.request.size()});
    co_await record(std::move(f), v, step, slot, answer, died);
  }

  // Commits the attempt's outcome, retrying with backoff until it commits: the outcome exists
  // only here. The slot (a delivery in flight) is freed as the outcome goes to the store: the
  // job stays fenced and counted as busy, for its route and its key, in the store until its
  // outcome commits or its lease expires, and the next claim can ride in the same commit.
  asio::awaitable<void> record(store::job_finish f, verdict v, next_step step,
                               std::shared_ptr<bool> slot, std::shared_ptr<first_answer> answer,
                               std::shared_ptr<dead_job> died) {
    millis backoff = finish_retry_first;
    asio::steady_timer wait(ex);
    ++recording;
    release(*slot);
    for (int tries = 1;; ++tries) {
      const auto now = clk.now();
      auto res = co_await await_callback<store::finish_result>(
          [&](auto done) { store.finish(f, now, std::move(done)); });
      if (tries == 1 && !detached) {
        --recording;  // a stop waits for first tries only, not for a store that fails
        maybe_drained();
      }
      if (res.error.empty()) {
        log_finish(f, v, step, res, tries);
        metrics().count("resendd_attempts_total",
                        "Attempts whose outcome committed, by route and outcome.",
                        {{"route", f.route}, {"outcome", f.attempt.outcome}});
        metrics().observe("resendd_attempt_duration_seconds",
                          "One attempt, from connect to the answer's last byte, by route.",
                          {{"route", f.route}},
                          std::chrono::duration<double>(f.attempt.duration).count());
        if (res.applied && f.next_state != "queued")
          metrics().count("resendd_jobs_finished_total", "Jobs that ended, by route and state.",
                          {{"route", f.route}, {"state", f.next_state}});
        if (answer) {
          answer->state = res.state;
          answers->report(f.id, std::move(*answer));
        }
        if (died && res.applied && !detached) alerts->job_died(std::move(*died));
        break;
      }
      if (tries == 1)
        spdlog::error("job {}: recording attempt outcome failed ({}); retrying until it commits",
                      f.id, res.error);
      wait.expires_after(backoff);
      boost::system::error_code ec;
      co_await wait.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min(backoff * 2, finish_retry_cap);
    }
  }

  // Logged after the commit, so a line here means the database already says so.
  static void log_finish(const store::job_finish& f, const verdict& v, const next_step& step,
                         const store::finish_result& res, int tries) {
    const auto n = res.attempt_no;
    // Every line ends with where the job goes and what the attempt saw.
    const std::string seen =
        " [route " + f.route +
        (f.attempt.http_status ? ", HTTP " + std::to_string(*f.attempt.http_status) : "") + ", " +
        std::to_string(f.attempt.duration.count()) + " ms]";
    if (tries > 1) spdlog::info("job {}: attempt {} recorded after {} tries", f.id, n, tries);
    if (!res.applied) {
      if (res.state == "succeeded")
        spdlog::info("job {} attempt {}: succeeded after it was cancelled", f.id, n);
      else
        spdlog::warn(
            "job {} attempt {}: outcome {} not applied: the job was cancelled or "
            "claimed again meanwhile",
            f.id, n, to_string(v.kind));
    } else if (step.to == next_step::state::dead) {
      spdlog::warn("job {} attempt {}: dead: {}{}", f.id, n, step.reason, seen);
    } else if (step.to == next_step::state::succeeded) {
      spdlog::info("job {} attempt {}: succeeded ({}){}", f.id, n, v.reason, seen);
    } else {
      spdlog::info("job {} attempt {}: {} ({}), next at {}{}", f.id, n, to_string(v.kind), v.reason,
                   to_iso8601(step.next_attempt_at), seen);
    }
  }
};

dispatcher::dispatcher(asio::io_context& io, store::queue_store& store, const route_table& routes,
                       http_client& client, const clock& clk, const config& cfg,
                       credential_source* credentials)
    : impl_(std::make_shared<impl>(io, store, routes, client, clk, cfg, credentials)) {}

dispatcher::~dispatcher() { impl_->detached = true; }

void dispatcher::start() {
  asio::post(impl_->ex, [self = impl_] { self->start_claim_loop(); });
}

void dispatcher::report_first_answers(first_answers* answers) { impl_->answers = answers; }
void dispatcher::report_deaths(alerter* alerts) { impl_->alerts = alerts; }
void dispatcher::parse_large_on(asio::thread_pool* pool) { impl_->pool = pool; }
void dispatcher::routes_changed() { impl_->follow_routes(); }

void dispatcher::wake() {
  asio::post(impl_->ex, [self = impl_] {
    self->wake_pending = true;
    self->timer.cancel();
  });
}

void dispatcher::stop(std::function<void()> drained) {
  asio::post(impl_->ex, [self = impl_, drained = std::move(drained)]() mutable {
    self->stopping = true;
    self->drained = std::move(drained);
    self->timer.cancel();
    self->maybe_drained();
  });
}

int dispatcher::in_flight() const { return impl_->in_flight.load(); }
bool dispatcher::healthy() const { return impl_->loop_alive.load(); }

}  // namespace resendd
