#include "queue/alerts.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/url/parse.hpp>
#include <nlohmann/json.hpp>
#include <set>

#include "queue/forward.h"
#include "queue/intake.h"
#include "queue/queue_service.h"
#include "queue/routes.h"
#include "util/errors.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/random.h"
#include "util/utf8.h"

namespace resendd {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr std::size_t bill_bytes = 300;
constexpr millis requeue_after{5'000};  // an alert the store refused is tried again this soon

std::string cut(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  return std::string(utf8_prefix(s, max)) + "…";
}

template <class J>
std::string compact(const J& j) {
  return j.dump(-1, ' ', false, J::error_handler_t::replace);
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

}  // namespace

std::string describe_bill(std::string_view stored_request) {
  auto parts = forward_request(stored_request);
  auto* f = std::get_if<forwarded>(&parts);
  if (!f || !f->body) return "";
  // In the bot's order of keys.
  const auto body = nlohmann::ordered_json::parse(*f->body, nullptr, false);
  // Bitable: records[].fields is the bill (json_parse has made it an object).
  if (body.is_object() && body.contains("records") && body["records"].is_array()) {
    std::string out;
    for (const auto& r : body["records"]) {
      if (!r.is_object() || !r.contains("fields")) continue;
      if (!out.empty()) out += "; ";
      out += compact(r["fields"]);
      if (out.size() > bill_bytes) break;
    }
    if (!out.empty()) return cut(out, bill_bytes);
  }
  return cut(body.is_discarded() ? *f->body : compact(body), bill_bytes);
}

std::string describe_target(std::string_view location) {
  auto u = boost::urls::parse_absolute_uri(location);
  if (!u) return cut(location, 200);
  const auto path = u->encoded_path();
  if (auto t = bitable_table_of(path)) return "Bitable table " + t->table + " of base " + t->app;
  // A bot's /hook/ token in the path is a credential: the group chat never sees it.
  return cut(mask_location(std::string(u->encoded_host_and_port()) + std::string(path)), 200);
}

std::string alert_text(std::string_view host, std::string_view route,
                       const std::vector<dead_job>& listed, int count) {
  std::string t = "resendd on " + std::string(host) + ": " + std::to_string(count) +
                  (count == 1 ? " job" : " jobs") + " died on route " + std::string(route) + "\n";
  int n = 0;
  for (const auto& d : listed) {
    t += "\n" + std::to_string(++n) + ". job " + d.id + " → " + describe_target(d.location) + "\n";
    t += "   why: " + cut(d.reason, 400) + " (after " + std::to_string(d.attempts) +
         (d.attempts == 1 ? " attempt" : " attempts") + ")\n";
    if (auto bill = describe_bill(d.request); !bill.empty())
      t += "   bill: " + bill + "\n";
    else if (d.request.empty() && d.request_bytes > 0)
      t += "   bill: a request of " + std::to_string(d.request_bytes) +
           " bytes: resendd jobs show " + d.id + "\n";
    t += "   retry: resendd jobs retry " + d.id + "\n";
  }
  if (count > int(listed.size()))
    t += "\n… and " + std::to_string(count - int(listed.size())) +
         " more (resendd jobs list --state dead)\n";
  t += "\nEvery dead job but those needing reconciliation: resendd jobs retry --state dead";
  return t;
}

std::string alert_body(std::string_view format, std::string_view host, std::string_view route,
                       const std::vector<dead_job>& listed, int count) {
  const auto text = alert_text(host, route, listed, count);
  if (format == "feishu") return compact(json{{"msg_type", "text"}, {"content", {{"text", text}}}});
  json jobs = json::array();
  for (const auto& d : listed)
    jobs.push_back({{"id", d.id},
                    {"location", mask_location(d.location)},  // as the admin API shows it
                    {"reason", d.reason},
                    {"attempts", d.attempts},
                    {"bill", describe_bill(d.request)}});
  return compact(json{{"text", text},
                      {"host", host},
                      {"route", route},
                      {"count", count},
                      {"jobs", std::move(jobs)}});
}

std::string feishu_bot_sign(std::string_view secret, std::int64_t unix_seconds) {
  const std::string key = std::to_string(unix_seconds) + "\n" + std::string(secret);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), nullptr, 0, md, &len);
  return base64_encode(std::string_view(reinterpret_cast<const char*>(md), len));
}

std::optional<std::string> sign_feishu_bot_body(std::string_view body, std::string_view secret,
                                                sys_time now) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  const auto ts = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  j["timestamp"] = std::to_string(ts);
  j["sign"] = feishu_bot_sign(secret, ts);
  return compact(j);
}

struct alerter::impl : std::enable_shared_from_this<alerter::impl> {
  struct batch {
    std::vector<dead_job> listed;
    int count = 0;
    bool open = false;  // a message is due (its timer runs)
    std::optional<sys_time> last_sent;
    std::unique_ptr<asio::steady_timer> timer;
  };

  asio::io_context& io;
  queue_service& queue;
  const config& cfg;
  const clock& clk;
  const std::string host = this_host();
  std::map<std::string, batch> batches;  // by route
  int storing = 0;                       // messages on their way to the store
  std::function<void()> flushed;         // flush's `done`, once storing is 0
  bool flushing = false;
  // The start-up look reads the store while deliveries already run: a job that dies meanwhile
  // can be both in what it reads and reported by the dispatcher. Each is told once: deaths the
  // dispatcher reports while the look is out are remembered, and what the look reported is.
  bool looking = false;
  std::set<std::string> died_while_looking;
  std::set<std::string> looked_up;  // at most catch_up_limit ids

  impl(asio::io_context& i, queue_service& q, const config& c, const clock& k)
      : io(i), queue(q), cfg(c), clk(k) {}

  void add(batch& b, dead_job d, int count) {
    if (b.listed.size() < std::size_t(max_listed)) b.listed.push_back(std::move(d));
    b.count += count;
  }

  void arm(const std::string& route, batch& b, millis wait) {
    b.open = true;
    if (!b.timer) b.timer = std::make_unique<asio::steady_timer>(io);
    b.timer->expires_after(std::max(wait, millis{0}));
    b.timer->async_wait([self = shared_from_this(), route](const boost::system::error_code& e) {
      if (!e) self->send(route);
    });
  }

  void died(dead_job d) {
    const std::string route = d.route;
    auto& b = batches[route];
    add(b, std::move(d), 1);
    if (b.open) return;
    const auto now = clk.now();
    auto wait = cfg.alerts.delay;
    if (b.last_sent) wait = std::max(wait, *b.last_sent + cfg.alerts.interval - now);
    if (flushing) wait = millis{0};
    arm(route, b, wait);
  }

  void send(const std::string& route) {
    auto& b = batches[route];
    if (!b.open || b.count == 0) return;
    b.open = false;
    b.last_sent = clk.now();
    auto listed = std::exchange(b.listed, {});
    const int count = std::exchange(b.count, 0);
    store::new_job job;
    job.id = uuid_v7(clk.now());
    job.route = alerts_route_name;
    job.method = "POST";
    job.location = normalize_location(cfg.alerts.webhook).url;
    job.resource_key = "alerts:" + route;  // how start() tells what was reported
    job.request = compact(
        json{{"location", job.location},
             {"method", "POST"},
             {"headers", {{"Content-Type", "application/json; charset=utf-8"}}},
             {"params", json::parse(alert_body(cfg.alerts.format, host, route, listed, count))}});
    ++storing;
    auto self = shared_from_this();
    asio::co_spawn(
        io,
        [self, job = std::move(job), route, listed, count]() mutable -> asio::awaitable<void> {
          const std::string id = job.id;
          const auto r = co_await self->queue.enqueue(std::move(job));
          if (r.what == store::enqueue_result::status::queued) {
            spdlog::info("alert: {} dead job(s) on route {} reported in job {}", count, route, id);
            metrics().count("resendd_alerts_total", "Alert messages queued for the webhook.", {});
            co_return;
          }
          // Not stored (the queue is full or the store fails): the deaths go back into the
          // route's batch and are tried again shortly.
          spdlog::error(
              "alert: the message for {} dead job(s) on route {} could not be queued "
              "({}){}",
              count, route, r.error.empty() ? "the queue is full" : r.error,
              self->flushing ? "; shutting down: the jobs stay dead in the store"
                             : "; trying again in " + format_duration(requeue_after));
          if (self->flushing) co_return;
          auto& back = self->batches[route];
          for (auto& d : listed) self->add(back, std::move(d), 0);
          back.count += count;
          if (!back.open) self->arm(route, back, requeue_after);
        },
        [self](std::exception_ptr e) {
          if (e) spdlog::error("alert: queuing a message failed: {}", exception_message(e));
          if (--self->storing == 0 && self->flushed) std::exchange(self->flushed, nullptr)();
        });
  }
};

alerter::alerter(asio::io_context& io, queue_service& queue, const config& cfg, const clock& clk)
    : impl_(std::make_shared<impl>(io, queue, cfg, clk)) {}

alerter::~alerter() {
  for (auto& [route, b] : impl_->batches)
    if (b.timer) b.timer->cancel();
}

void alerter::start() {
  if (impl_->cfg.alerts.webhook.empty()) return;
  auto self = impl_;
  self->looking = true;
  asio::co_spawn(
      self->io,
      [self]() -> asio::awaitable<void> {
        const auto r = co_await self->queue.unalerted_dead(
            alerts_route_name, self->clk.now() - catch_up, catch_up_limit);
        self->looking = false;
        const auto reported = std::exchange(self->died_while_looking, {});
        if (!r.value) {
          spdlog::error("alert: looking for dead jobs no alert reported failed: {}", r.error);
          co_return;
        }
        std::vector<const json*> missed;
        for (const auto& j : *r.value)
          if (!reported.count(j["id"].get<std::string>())) missed.push_back(&j);
        if (missed.empty()) co_return;
        spdlog::warn(
            "alert: {} dead job(s) of the last {} were not reported (resendd stopped "
            "before their alert was queued); reporting them now",
            missed.size(), format_duration(catch_up));
        for (const json* p : missed) {
          const auto& j = *p;
          self->looked_up.insert(j["id"].get<std::string>());
          const auto& request = j["request"].get_ref<const std::string&>();
          self->died({j["id"], j["route"], j["location"], j["last_error"],
                      request.size() < large_request_bytes ? request : std::string(),
                      j["attempts"].get<int>(), request.size()});
        }
      },
      [](std::exception_ptr e) {
        if (e) spdlog::error("alert: the start-up look failed: {}", exception_message(e));
      });
}

void alerter::job_died(dead_job d) {
  if (impl_->cfg.alerts.webhook.empty() || d.route == alerts_route_name) return;
  if (impl_->looking) impl_->died_while_looking.insert(d.id);
  if (impl_->looked_up.erase(d.id)) return;  // the start-up look told it already
  impl_->died(std::move(d));
}

void alerter::flush(std::function<void()> done) {
  auto& s = *impl_;
  s.flushing = true;
  for (auto& [route, b] : s.batches)
    if (b.open) {
      b.timer->cancel();
      s.send(route);
    }
  if (s.storing == 0)
    asio::post(s.io, std::move(done));
  else
    s.flushed = std::move(done);
}

}  // namespace resendd
