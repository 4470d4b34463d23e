#include "queue/dispatcher.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/url.hpp>
#include <nlohmann/json.hpp>

#include "http/client.h"
#include "queue/classify.h"
#include "queue/json_path.h"
#include "queue/retry_policy.h"
#include "queue/routes.h"
#include "store/job_store.h"
#include "token/credentials.h"
#include "util/await.h"
#include "util/log.h"
#include "util/random.h"

namespace resendd {

namespace asio = boost::asio;
using nlohmann::json;

namespace {
constexpr int max_claim_batch = 256;
constexpr std::size_t stored_response_bytes = 4096;
constexpr millis idle_poll{1000};  // safety net: look for due jobs at least this often
}  // namespace

struct dispatcher::impl : std::enable_shared_from_this<dispatcher::impl> {
  asio::io_context& io;
  store::job_store& store;
  const route_table& routes;
  http_client& client;
  const clock& clk;
  const config& cfg;
  credential_source* credentials;
  asio::io_context::executor_type ex;  // the io_context runs on one thread
  asio::steady_timer timer;
  std::atomic<int> in_flight{0};
  std::atomic<std::uint64_t> delivered{0};
  bool wake_pending = false;      // io thread only
  bool stopping = false;          // io thread only
  std::function<void()> drained;  // io thread only
  std::vector<store::route_limits> limits;
  millis lease{0};

  impl(asio::io_context& i, store::job_store& s, const route_table& r, http_client& c,
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
    for (const auto& rt : routes.all()) {
      limits.push_back({rt->cfg.name, rt->settings.concurrency, rt->cfg.key_concurrency});
      lease = std::max(lease, rt->settings.request_timeout);
    }
    lease += millis{60'000};  // longer than any attempt: a live delivery never loses its lease
  }

  asio::awaitable<void> claim_loop() {
    auto self = shared_from_this();
    const int concurrency = cfg.delivery.defaults.concurrency;
    while (!stopping) {
      wake_pending = false;
      const int free = concurrency - in_flight.load();
      int want = std::min(free, max_claim_batch);
      if (want > 0) {
        auto jobs = co_await await_callback<std::vector<store::claimed_job>>(
            [&](auto done) { store.claim(clk.now(), lease, want, limits, std::move(done)); });
        for (auto& j : jobs) {
          ++in_flight;
          asio::co_spawn(io, deliver(std::move(j)), asio::detached);
        }
        // Claim again while claims return jobs: more may be due (a key yields one per claim).
        if (!jobs.empty() && int(jobs.size()) < free) continue;
      }
      if (wake_pending || stopping) continue;
      const auto now = clk.now();
      millis wait = idle_poll;
      try {
        if (auto next = store.next_wakeup(now))
          wait = std::clamp(*next - now, millis{0}, idle_poll);
      } catch (const std::exception& e) {
        spdlog::error("dispatcher: reading the next due time failed: {}", e.what());
      }
      timer.expires_after(wait);
      boost::system::error_code ec;
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (in_flight.load() == 0 && drained) std::exchange(drained, nullptr)();
  }

  void on_delivery_done() {
    ++delivered;
    --in_flight;
    asio::post(ex, [self = shared_from_this()] {
      if (self->stopping) {
        if (self->in_flight.load() == 0 && self->drained) std::exchange(self->drained, nullptr)();
        return;
      }
      self->wake_pending = true;
      self->timer.cancel();
    });
  }

  // Builds the outbound request from the stored one; an error here is permanent for the job.
  std::optional<std::string> build(const store::claimed_job& job, const route& r,
                                   outbound_request& out) {
    json req = json::parse(job.request, nullptr, false);
    if (req.is_discarded() || !req.is_object()) return "stored request is not a JSON object";
    std::vector<std::string> paths;
    if (req.contains("commands") && req["commands"].is_object() &&
        req["commands"].contains("json_parse") && req["commands"]["json_parse"].is_array())
      for (const auto& p : req["commands"]["json_parse"]) paths.push_back(p.get<std::string>());
    if (auto err = apply_json_parse(req, paths)) return *err;
    out.method = job.method;
    out.url = job.location;
    if (job.client_token) {
      boost::urls::url u(job.location);
      u.params().set("client_token", *job.client_token);
      out.url = std::string(u.buffer());
    }
    if (req.contains("headers") && req["headers"].is_object())
      for (const auto& [k, v] : req["headers"].items())
        if (v.is_string()) out.headers.emplace_back(k, v.get<std::string>());
    if (req.contains("params") && !req["params"].is_null()) out.body = req["params"].dump();
    out.timeout = r.settings.request_timeout;
    out.allow_private = r.cfg.allow_private_networks;
    return std::nullopt;
  }

  asio::awaitable<void> deliver(store::claimed_job job) {
    auto self = shared_from_this();
    const auto started = clk.now();
    const auto t0 = std::chrono::steady_clock::now();
    const route* r = routes.match(job.location);
    attempt_result result;
    verdict v;
    std::string used_token;
    outbound_request out;
    if (!r) {
      v = {outcome_kind::dead, {}, "location matches no configured route any more"};
    } else if (auto err = build(job, *r, out)) {
      v = {outcome_kind::dead, {}, *err};
    } else {
      bool ready = true;
      if (!r->cfg.credentials.empty()) {
        if (!credentials) {
          v = {
              outcome_kind::retry, {}, "credentials \"" + r->cfg.credentials + "\" not configured"};
          ready = false;
        } else {
          auto b = co_await credentials->bearer(r->cfg.credentials);
          if (b.token.empty()) {
            v = {outcome_kind::retry, {}, "minting credentials: " + b.error};
            ready = false;
          } else {
            std::erase_if(out.headers, [](const auto& h) {
              return h.first.size() == 13 && strncasecmp(h.first.c_str(), "authorization", 13) == 0;
            });
            out.headers.emplace_back("Authorization", "Bearer " + b.token);
            used_token = std::move(b.token);
          }
        }
      }
      if (ready) {
        result = co_await client.send(std::move(out));
        v = classify(r->cfg.profile, result);
      }
    }
    const bool can_refresh = r && !r->cfg.credentials.empty() && credentials &&
                             credentials->can_mint(r->cfg.credentials);
    if (v.kind == outcome_kind::refresh_credentials && can_refresh && !used_token.empty())
      credentials->invalidate(r->cfg.credentials, used_token);
    const route_settings settings = r ? r->settings : cfg.delivery.defaults;
    const auto now = clk.now();
    const auto step =
        next_retry(v, {job.attempts, job.free_attempts, job.auth_refreshes, job.created_at}, now,
                   settings, can_refresh, random_u64());
    store::job_finish f;
    f.id = job.id;
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
    const std::string id = f.id;
    const auto to = step.to;
    const int n = co_await await_callback<int>(
        [&](auto done) { store.finish(std::move(f), now, std::move(done)); });
    // Logged after the commit, so a line here means the database already says so; n is the
    // attempt's number in the attempt log.
    if (n == 0)
      spdlog::error(
          "job {}: an attempt could not be recorded; it is delivered again after a restart", id);
    else if (to == next_step::state::dead)
      spdlog::warn("job {} attempt {}: dead: {}", id, n, step.reason);
    else if (to == next_step::state::succeeded)
      spdlog::info("job {} attempt {}: succeeded ({})", id, n, v.reason);
    else
      spdlog::info("job {} attempt {}: {} ({}), next at {}", id, n, to_string(v.kind), v.reason,
                   to_iso8601(step.next_attempt_at));
    on_delivery_done();
  }
};

dispatcher::dispatcher(asio::io_context& io, store::job_store& store, const route_table& routes,
                       http_client& client, const clock& clk, const config& cfg,
                       credential_source* credentials)
    : impl_(std::make_shared<impl>(io, store, routes, client, clk, cfg, credentials)) {}

dispatcher::~dispatcher() = default;

void dispatcher::start() { asio::co_spawn(impl_->ex, impl_->claim_loop(), asio::detached); }

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
    if (self->in_flight.load() == 0 && self->drained) std::exchange(self->drained, nullptr)();
  });
}

int dispatcher::in_flight() const { return impl_->in_flight.load(); }
std::uint64_t dispatcher::delivered() const { return impl_->delivered.load(); }

}  // namespace resendd
