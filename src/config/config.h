#pragma once
// The daemon's configuration: one struct with the documented defaults built in, read from an
// optional TOML file, then overridden from the environment, then validated as a whole.
// Every key is documented in config/resendd.toml; this header says units and what 0 means.
#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "util/time.h"

namespace resendd {

// Settings a route may override; unset fields fall back to [delivery].
struct delivery_overrides {
  std::optional<int> concurrency;
  std::optional<int> max_attempts;
  std::optional<int> max_rate_limited;
  std::optional<millis> max_age;
  std::optional<millis> request_timeout;
  std::optional<millis> retry_base;
  std::optional<millis> retry_cap;
};

// What one delivery of a job on a route is allowed: [delivery] merged with the route's overrides.
struct route_settings {
  int concurrency = 64;              // deliveries in flight at once on this route
  millis request_timeout{30'000};    // one attempt, connect to last byte
  int max_attempts = 20;             // tries that count (rate-limited tries do not)
  int max_rate_limited = 200;        // rate-limited tries of one job; then it is dead
  millis max_age{48 * 3'600'000LL};  // from creation; then the job is dead
  millis retry_base{2'000};          // first backoff
  millis retry_cap{30 * 60'000};     // largest backoff
  millis rate_limit_cap{3'600'000};  // largest wait a rate-limit answer may ask for
};

struct route_config {
  std::string name = "feishu-bitable";
  // Matched against the normalized URL the client sends (queue/routes.h normalize_location);
  // a segment is `[^/?#%]+`: no query, fragment or percent-encoding hides in it.
  std::string match =
      R"(^https://open\.feishu\.cn/open-apis/bitable/v1/apps/[^/?#%]+/tables/[^/?#%]+/records/batch_create([?].*)?$)";
  std::string profile = "feishu";  // "generic" | "feishu"
  bool profile_inferred = false;   // not written: the match names Feishu/Lark open APIs
  std::vector<std::string> methods = {"POST"};  // upper case; empty = every method
  bool allow_private_networks = false;
  std::string credentials;  // "" | "feishu_tenant" | "coze"
  // Writes that share a key are limited to key_concurrency at once, key_min_gap apart.
  std::string serialize_by = "bitable_table";  // "" (no key) | "host" | "path" | "bitable_table"
  int key_concurrency = 1;
  millis key_min_gap{0};
  delivery_overrides overrides;
  // resendd's own alert route ([alerts] webhook): not written by the operator, never reachable
  // from /resend, and its jobs' deaths are not alerted.
  bool internal = false;
};

// The name of the route alert messages go out on.
inline constexpr const char* alerts_route_name = "resendd-alerts";

struct config {
  struct server_section {
    std::string listen = "127.0.0.1:9000";      // port 0 = any free port
    std::vector<std::string> api_tokens;        // empty = no authentication (loopback only)
    bool allow_unauthenticated_public = false;  // listen beyond loopback with no api_tokens
    std::string tls_cert;    // PEM certificate chain: serve HTTPS (with tls_key)
    std::string tls_key;     // PEM private key
    std::string public_url;  // how bots reach this daemon (OpenAPI servers); "" = the listen address
    bool token_public = false;  // beyond loopback, /token without an api_tokens Bearer (seed's way)
    std::size_t max_body_bytes = 1 << 20;
    int max_connections = 1024;
    int max_connections_per_client = 256;  // from one address (a proxy in front counts as one)
    millis read_timeout{30'000};  // a whole request must arrive within this
  } server;
  struct store_section {
    std::string backend = "sqlite";  // "sqlite" (one daemon) or "postgres" (several share a queue)
    std::string url;                 // postgres: postgresql://user:password@host:port/db
    std::string path = "var/resendd.db";
    std::int64_t max_queue_depth = 1'000'000;  // queued + delivering; then /resend answers 503
    int max_pending_writes = 20'000;  // writes waiting for the writer; then /resend answers 503
    millis commit_timeout{5'000};     // /resend waits this long for its commit, then 503
    millis busy_timeout{5'000};       // a write waits this long for another process's lock
    std::int64_t max_size = 0;        // bytes the database file may grow to; 0 = no limit
  } store;
  struct delivery_section {
    route_settings defaults;
    std::string ca_file;            // extra trusted CA bundle (PEM), added to the system store
    millis shutdown_grace{10'000};  // how long in-flight deliveries may finish on SIGTERM
    std::size_t max_response_bytes = 1 << 20;
    millis idle_timeout{4'000};  // a kept-alive connection idle longer is closed, not reused
  } delivery;
  std::vector<route_config> routes{route_config{}};
  struct coze_section {
    std::string app_id;
    std::string public_key_id;
    std::string private_key_file;
    std::string private_key_pem;  // from JWT_PRIVATE_KEY or the key file; a secret
    std::string token_url = "https://api.coze.cn/api/permission/oauth2/token";
    // Set only by `resendd token ... --aud/--ttl`: the JWT's aud ("" = token_url's host) and
    // lifetime.
    std::string jwt_audience;
    millis jwt_ttl{3'600'000};
  } coze;
  struct feishu_section {
    std::string app_id;
    std::string app_secret;  // a secret
    std::string token_url = "https://open.feishu.cn/open-apis/auth/v3/tenant_access_token/internal";
  } feishu;
  struct log_section {
    std::string level = "info";
    std::string format = "text";  // "text" | "json" (one JSON object a line)
  } log;
  struct retention_section {
    millis succeeded{7 * 86'400'000LL};  // succeeded jobs are deleted this long after; 0 = kept
    millis dead{30 * 86'400'000LL};      // dead and cancelled jobs; 0 = kept
    millis interval{600'000};            // how often the daemon looks
  } retention;
  struct alerts_section {
    // Where a message goes when jobs die: a Feishu/Lark custom-bot URL or any URL taking a JSON
    // POST; "" = no alerts. A secret (the hook's token is in it): masked wherever it is shown.
    std::string webhook;
    std::string secret;       // the custom bot's signing secret, if it has one; a secret
    std::string format;       // "feishu" | "generic"; "" = feishu for a Feishu/Lark bot hook
    millis delay{5'000};      // a message waits this long after the death that starts it
    millis interval{60'000};  // at most one message per route this often
  } alerts;
};

// Every problem found, each naming its key; thrown by load_config.
class config_error : public std::runtime_error {
 public:
  explicit config_error(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

using environment = std::map<std::string, std::string>;
environment process_environment();

// Defaults, then the file (if given), then the environment, then validation. Throws config_error.
config load_config(const std::optional<std::filesystem::path>& file, const environment& env);
// Parses TOML text (for tests); same rules as load_config.
config load_config_text(const std::string& toml_text, const environment& env);

route_settings effective_settings(const config& c, const route_config& r);
// The effective configuration as TOML, secrets masked (for `resendd check-config`).
std::string render_config(const config& c);

// What a reload (SIGHUP) applies: routes, server.api_tokens, server.token_public,
// server.public_url, the TLS files (while HTTPS stays on), log.level, [retention] and [alerts],
// copied from `next` field by field (the rest of `running` is not touched).
void apply_reloadable(config& running, const config& next);
// The keys a reload does not apply that differ between the two ("store.path"), each once.
std::vector<std::string> keys_needing_restart(const config& running, const config& next);

// This daemon as reached from its own machine: http(s)://HOST:PORT from server.listen (https with
// tls_cert), a wildcard address (0.0.0.0, ::) replaced by loopback.
std::string local_base_url(const config& c);

}  // namespace resendd
