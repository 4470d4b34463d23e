#pragma once
// The token service: Coze OAuth access tokens (JWT bearer flow) and Feishu tenant access tokens,
// each cached and refreshed single-flight.
//
// Duties: serve POST /token (seed-compatible); hand fresh bearer tokens to routes with
// `credentials = "coze"` or "feishu_tenant"; never cache an error; never log a token or key.
// A cached token is reused while it has at least max(60 s, 10 % of its lifetime) left; then the
// next caller refreshes it, and the old token keeps serving (everyone else, and that caller if
// the refresh fails) until its successor arrives or it has less than 30 s left. A failed refresh
// is backed off (1 s doubling to 60 s) while the old token serves.
// Thread-safe: the cache is guarded by a mutex; concurrent requests for one key share one
// exchange (the first caller runs it, the others wait for its result).
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "token/credentials.h"
#include "token/jwt.h"
#include "util/time.h"

namespace resendd {

class http_client;

// What an exchange produced: a token with its expiry, or an error with its HTTP answer.
struct token_grant {
  int status = 0;       // 0 = ok; else the HTTP status /token should answer
  nlohmann::json body;  // Coze's JSON (ok) or the error body
  std::string token;    // access_token
  sys_time expires_at;
  sys_time obtained_at;
  std::string error;  // for logs; no secrets
};

class token_service final : public credential_source {
 public:
  token_service(const config& cfg, http_client& client, const clock& clk);
  ~token_service() override;

  bool coze_configured() const { return key_.has_value() && !cfg_.coze.app_id.empty(); }
  bool feishu_configured() const {
    return !cfg_.feishu.app_id.empty() && !cfg_.feishu.app_secret.empty();
  }
  // A Coze access token for (kid, app id, duration): cached or freshly exchanged.
  boost::asio::awaitable<token_grant> coze_token(std::string kid, int duration_seconds);
  boost::asio::awaitable<token_grant> feishu_tenant_token();

  // credential_source
  boost::asio::awaitable<bearer_result> bearer(std::string_view kind) override;
  void invalidate(std::string_view kind, const std::string& token) override;
  bool can_mint(std::string_view kind) const override;

  std::uint64_t exchanges() const;  // exchanges started (tests, metrics)

 private:
  struct flight;
  // The cache's answer for a key: a usable token, or the exchange in flight to join or to run.
  struct lookup {
    std::optional<token_grant> hit;
    std::shared_ptr<flight> exchange;
    bool leader = false;
    std::optional<token_grant> fallback;  // the leader's old token, still usable
  };
  struct cached {
    token_grant grant;
    sys_time next_refresh{};  // after a failed refresh: not before this
    millis backoff{0};
  };
  // Runs the exchange as the leader and completes the flight; the old token if it failed.
  template <class Exchange>
  // (By reference: GCC 12 may destroy a by-value coroutine argument twice.)
  boost::asio::awaitable<token_grant> lead(const std::string& key, lookup& l, Exchange& exchange);
  lookup begin(const std::string& key);
  void complete(const std::string& key, const std::shared_ptr<flight>& f, const token_grant& g);
  boost::asio::awaitable<token_grant> join(std::shared_ptr<flight> f);
  boost::asio::awaitable<token_grant> exchange_coze(std::string kid, int duration_seconds);
  boost::asio::awaitable<token_grant> exchange_feishu();

  const config& cfg_;
  http_client& client_;
  const clock& clk_;
  std::optional<rsa_private_key> key_;
  mutable std::mutex mutex_;
  std::map<std::string, cached> cache_;
  std::map<std::string, std::shared_ptr<flight>> flights_;
  std::uint64_t exchanges_ = 0;
};

// The JWT resendd exchanges with Coze for `kid`: iss = coze.app_id, aud = coze.jwt_audience or
// the token URL's host, lifetime coze.jwt_ttl, a fresh jti. nullopt if signing fails.
std::optional<std::string> coze_jwt(const config& cfg, const rsa_private_key& key,
                                    const std::string& kid, sys_time now);

// The configured Coze signing key; nullopt when none is configured. A key that cannot sign
// RS256 throws config_error, so that check-config refuses what serve would refuse.
std::optional<rsa_private_key> coze_signing_key(const config& cfg);

// Seconds asked for when /token names none: the seed asked 86400; Coze documents 86399 at most.
inline constexpr int coze_default_token_seconds = 86399;

// Seconds of a Coze access token's life asked for when a route uses credentials = "coze".
inline constexpr int coze_route_token_seconds = 3600;

}  // namespace resendd
