#include "token/token_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <cmath>

#include "http/client.h"
#include "util/await.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/random.h"

namespace resendd {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr millis exchange_timeout{15'000};

millis refresh_margin(const token_grant& g) {
  return std::max(millis{60'000}, (g.expires_at - g.obtained_at) / 10);
}

// A token with less left than this is not handed out: it could expire on its way.
constexpr millis min_left{30'000};
constexpr millis refresh_backoff_first{1'000};
constexpr millis refresh_backoff_cap{60'000};

constexpr std::int64_t feishu_token_max = 2 * 3600;

// Coze's expires_in: an absolute Unix time in seconds (all official SDKs read it so). A number
// that is not one (negative, not finite, past the year 9999) is no time to cache a token by.
std::optional<sys_time> unix_time(const json& v) {
  constexpr std::int64_t year_9999_end = 253'402'300'799;
  std::int64_t s = -1;
  if (v.is_number_unsigned())
    s = std::int64_t(std::min<std::uint64_t>(v.get<std::uint64_t>(), year_9999_end + 1));
  else if (v.is_number_integer())
    s = v.get<std::int64_t>();
  else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (d >= 0 && d <= double(year_9999_end)) s = std::int64_t(std::floor(d));
  }
  if (s < 0 || s > year_9999_end) return std::nullopt;
  return sys_time{std::chrono::seconds{s}};
}

// Token cache lookups for /metrics: hit (a cached token served), miss (an exchange started),
// failure (an exchange failed). The key's first line is the kind (coze, feishu).
void count_lookup(const std::string& key, const char* result) {
  metrics().count("resendd_token_cache_total", "Token cache lookups by kind and result.",
                  {{"kind", key.substr(0, key.find('\n'))}, {"result", result}});
}

token_grant failure(int status, std::string error, json body = nullptr) {
  token_grant g;
  g.status = status;
  g.error = std::move(error);
  g.body = body.is_null()
               ? json{{"error", g.error}, {"code", status == 502 ? "upstream_error" : "internal"}}
               : std::move(body);
  return g;
}

std::string host_of(const std::string& url) {
  auto u = boost::urls::parse_absolute_uri(url);
  return u ? std::string(u->host()) : std::string();
}

}  // namespace

std::optional<std::string> coze_jwt(const config& cfg, const rsa_private_key& key,
                                    const std::string& kid, sys_time now) {
  const std::string aud =
      cfg.coze.jwt_audience.empty() ? host_of(cfg.coze.token_url) : cfg.coze.jwt_audience;
  return mint_jwt(key, {kid, cfg.coze.app_id, aud, now, cfg.coze.jwt_ttl, uuid_v4()});
}

struct token_service::flight {
  bool done = false;
  token_grant result;
  std::vector<std::function<void(token_grant)>> waiters;
};

std::optional<rsa_private_key> coze_signing_key(const config& cfg) {
  if (cfg.coze.private_key_pem.empty()) return std::nullopt;
  std::string err;
  auto key = rsa_private_key::from_pem(cfg.coze.private_key_pem, &err);
  if (!key)
    throw config_error(
        {"coze.private_key_file (or JWT_PRIVATE_KEY, JWT_PRIVATE_KEY_FILE): " + err});
  return key;
}

token_service::token_service(const config& cfg, http_client& client, const clock& clk)
    : cfg_(cfg), client_(client), clk_(clk), key_(coze_signing_key(cfg)) {}

token_service::~token_service() = default;

std::uint64_t token_service::exchanges() const {
  std::lock_guard lock(mutex_);
  return exchanges_;
}

// Coroutines here take no temporaries with destructors as arguments: GCC 12 may destroy such
// an argument twice (a double free seen under ASan), so callers pass named values.
token_service::lookup token_service::begin(const std::string& key) {
  std::lock_guard lock(mutex_);
  const auto now = clk_.now();
  std::optional<token_grant> fallback;
  if (auto it = cache_.find(key); it != cache_.end()) {
    const auto& c = it->second;
    const auto left = c.grant.expires_at - now;
    if (left >= refresh_margin(c.grant)) {
      count_lookup(key, "hit");
      return {c.grant, nullptr, false};
    }
    if (left < min_left) {
      cache_.erase(it);
    } else {
      // Due for refresh but still good: it serves while someone refreshes, or while a failed
      // refresh is backed off; the caller who finds it due and idle refreshes it.
      if (flights_.count(key) || now < c.next_refresh) {
        count_lookup(key, "hit");
        return {c.grant, nullptr, false};
      }
      fallback = c.grant;
    }
  }
  auto& slot = flights_[key];
  if (slot) return {std::nullopt, slot, false};
  slot = std::make_shared<flight>();
  ++exchanges_;
  count_lookup(key, "miss");
  return {std::nullopt, slot, true, std::move(fallback)};
}

void token_service::complete(const std::string& key, const std::shared_ptr<flight>& f,
                             const token_grant& g) {
  std::vector<std::function<void(token_grant)>> waiters;
  {
    std::lock_guard lock(mutex_);
    if (g.status == 0) {
      cache_[key] = cached{g, {}, millis{0}};  // errors are never cached ...
    } else {
      count_lookup(key, "failure");
      if (auto it = cache_.find(key); it != cache_.end()) {
        // ... but a token with time left stays, and its refresh waits before trying again.
        auto& c = it->second;
        c.backoff = std::clamp(c.backoff * 2, refresh_backoff_first, refresh_backoff_cap);
        c.next_refresh = clk_.now() + c.backoff;
      }
    }
    f->done = true;
    f->result = g;
    waiters.swap(f->waiters);
    flights_.erase(key);
  }
  for (auto& w : waiters) w(g);
}

asio::awaitable<token_grant> token_service::join(std::shared_ptr<flight> f) {
  spdlog::debug("token: joined an exchange in flight");
  co_return co_await await_callback<token_grant>([this, &f](auto done) {
    std::unique_lock lock(mutex_);
    if (f->done) {
      lock.unlock();
      done(f->result);
    } else {
      f->waiters.push_back(std::move(done));
    }
  });
}

asio::awaitable<token_grant> token_service::coze_token(std::string kid, int duration_seconds) {
  const std::string key =
      "coze\n" + kid + "\n" + cfg_.coze.app_id + "\n" + std::to_string(duration_seconds);
  auto l = begin(key);
  if (l.hit) co_return *l.hit;
  if (!l.leader) co_return co_await join(l.exchange);
  auto exchange = [this, &kid, duration_seconds] { return exchange_coze(kid, duration_seconds); };
  co_return co_await lead(key, l, exchange);
}

template <class Exchange>
asio::awaitable<token_grant> token_service::lead(const std::string& key, lookup& l,
                                                 Exchange& exchange) {
  token_grant g;
  try {
    g = co_await exchange();
  } catch (const std::exception& e) {  // the waiters must hear an answer whatever happens
    g = failure(500, std::string("token exchange failed: ") + e.what());
  }
  complete(key, l.exchange, g);
  if (g.status != 0 && l.fallback) {
    spdlog::warn("token refresh failed ({}); the cached token serves until {}", g.error,
                 to_iso8601(l.fallback->expires_at));
    co_return *l.fallback;
  }
  co_return g;
}

asio::awaitable<token_grant> token_service::feishu_tenant_token() {
  const std::string key = "feishu\n" + cfg_.feishu.app_id;
  auto l = begin(key);
  if (l.hit) co_return *l.hit;
  if (!l.leader) co_return co_await join(l.exchange);
  auto exchange = [this] { return exchange_feishu(); };
  co_return co_await lead(key, l, exchange);
}

asio::awaitable<token_grant> token_service::exchange_coze(std::string kid, int duration_seconds) {
  if (!key_) co_return failure(500, "no Coze private key configured");
  const auto now = clk_.now();
  auto jwt = coze_jwt(cfg_, *key_, kid, now);
  if (!jwt) co_return failure(500, "signing the JWT failed");
  outbound_request req;
  req.url = cfg_.coze.token_url;
  req.headers = {{"Authorization", "Bearer " + *jwt}, {"Content-Type", "application/json"}};
  req.body = json{{"grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"},
                  {"duration_seconds", duration_seconds}}
                 .dump();
  req.timeout = exchange_timeout;
  req.allow_private = true;  // the token URL is the operator's configuration, not request input
  auto r = co_await client_.send(std::move(req));
  if (!r.answered()) co_return failure(502, "Coze token endpoint: " + r.error);
  auto body = json::parse(r.body, nullptr, false);
  if (r.status < 200 || r.status >= 300) {
    if (body.is_discarded())
      body = {{"error", "Coze answered HTTP " + std::to_string(r.status)},
              {"code", "upstream_error"}};
    const std::string code =
        body.is_object() && body.contains("error_code") ? body["error_code"].dump() : "";
    // Logged with the answer's X-Tt-Logid, which Coze's support asks for; the caller gets
    // Coze's JSON as it came.
    co_return failure(502,
                      "Coze refused the token exchange: HTTP " + std::to_string(r.status) + " " +
                          code + (r.answer_id.empty() ? "" : "; " + r.answer_id),
                      body);
  }
  if (body.is_discarded() || !body.is_object() || !body.contains("access_token") ||
      !body["access_token"].is_string() ||
      body["access_token"].get_ref<const std::string&>().empty() || !body.contains("expires_in") ||
      !body["expires_in"].is_number())
    co_return failure(502, "Coze answered without access_token/expires_in");
  const auto expires = unix_time(body["expires_in"]);
  if (!expires)
    co_return failure(
        502, "Coze answered an expires_in that is not a Unix time: " + body["expires_in"].dump());
  token_grant g;
  g.body = body;
  g.token = body["access_token"].get<std::string>();
  g.obtained_at = clk_.now();
  // Never cached longer than asked for, whatever the answer says (Coze's own clock may run a
  // little ahead; then the token is refreshed a little early).
  g.expires_at = std::min(*expires, g.obtained_at + std::chrono::seconds{duration_seconds});
  if (g.expires_at <= g.obtained_at)
    spdlog::warn(
        "coze: the access token's expires_in ({}) is already past: it is handed out "
        "once and not cached",
        to_iso8601(*expires));
  spdlog::info("coze: exchanged a JWT for an access token (kid {}, expires {})", kid,
               to_iso8601(g.expires_at));
  co_return g;
}

asio::awaitable<token_grant> token_service::exchange_feishu() {
  outbound_request req;
  req.url = cfg_.feishu.token_url;
  req.headers = {{"Content-Type", "application/json; charset=utf-8"}};
  req.body = json{{"app_id", cfg_.feishu.app_id}, {"app_secret", cfg_.feishu.app_secret}}.dump();
  req.timeout = exchange_timeout;
  req.allow_private = true;
  auto r = co_await client_.send(std::move(req));
  if (!r.answered()) co_return failure(502, "Feishu token endpoint: " + r.error);
  auto body = json::parse(r.body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("code") || body["code"] != 0 ||
      !body.contains("tenant_access_token") || !body["tenant_access_token"].is_string() ||
      body["tenant_access_token"].get_ref<const std::string&>().empty() ||
      !body.contains("expire") || !body["expire"].is_number_integer()) {
    std::string what = "HTTP " + std::to_string(r.status);
    if (body.is_object() && body.contains("code")) what += ", code " + body["code"].dump();
    if (body.is_object() && body.contains("msg") && body["msg"].is_string())
      what += ": " + body["msg"].get<std::string>();
    if (!r.answer_id.empty()) what += "; " + r.answer_id;
    co_return failure(502, "Feishu refused the tenant token request: " + what);
  }
  token_grant g;
  g.token = body["tenant_access_token"].get<std::string>();
  g.obtained_at = clk_.now();
  // A duration, at most 2 h (Feishu's documented lifetime); held to that, so a peer's number
  // can neither overflow the clock nor keep a token cached for longer.
  g.expires_at = g.obtained_at + std::chrono::seconds{std::clamp<std::int64_t>(
                                     body["expire"].get<std::int64_t>(), 0, feishu_token_max)};
  spdlog::info("feishu: minted a tenant access token (expires {})", to_iso8601(g.expires_at));
  co_return g;
}

asio::awaitable<bearer_result> token_service::bearer(std::string_view kind) {
  token_grant g;
  if (kind == "feishu_tenant" && feishu_configured())
    g = co_await feishu_tenant_token();
  else if (kind == "coze" && coze_configured()) {
    const std::string kid = cfg_.coze.public_key_id;
    g = co_await coze_token(kid, coze_route_token_seconds);
  } else
    co_return bearer_result{{}, "credentials \"" + std::string(kind) + "\" are not configured"};
  if (g.status != 0) co_return bearer_result{{}, g.error};
  co_return bearer_result{g.token, {}};
}

void token_service::invalidate(std::string_view kind, const std::string& token) {
  std::lock_guard lock(mutex_);
  const std::string prefix = kind == "coze" ? "coze\n" : "feishu\n";
  std::erase_if(cache_, [&](const auto& kv) {
    return kv.first.starts_with(prefix) && kv.second.grant.token == token;
  });
  spdlog::info("{}: a token was refused by the destination; the next attempt mints a new one",
               kind);
}

bool token_service::can_mint(std::string_view kind) const {
  return (kind == "feishu_tenant" && feishu_configured()) || (kind == "coze" && coze_configured());
}

}  // namespace resendd
