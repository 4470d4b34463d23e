#include "config/config.h"

#include <arpa/inet.h>
#include <re2/re2.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <toml.hpp>

#include "util/log.h"
#include "util/utf8.h"

extern char** environ;

namespace resendd {

config_error::config_error(std::vector<std::string> problems)
    : std::runtime_error([&] {
        std::string msg = "invalid configuration:";
        for (const auto& p : problems) msg += "\n  " + p;
        return msg;
      }()),
      problems_(std::move(problems)) {}

environment process_environment() {
  environment env;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv(*e);
    if (auto eq = kv.find('='); eq != std::string_view::npos)
      env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

namespace {

using problems = std::vector<std::string>;

// Reads the keys of one TOML table into a struct, recording each problem with the key's full
// name, and at the end every key it was not asked about (unknown keys stop start-up).
class table_reader {
 public:
  table_reader(const toml::value& v, std::string prefix, problems& errs)
      : prefix_(std::move(prefix)), errs_(errs) {
    if (!v.is_table()) {
      bad("", "must be a table");
      return;
    }
    table_ = &v.as_table();
  }

  void string(const char* key, std::string& out) {
    if (auto* v = find(key)) {
      if (v->is_string())
        out = v->as_string().str;
      else
        bad(key, "must be a string");
    }
  }
  void boolean(const char* key, bool& out) {
    if (auto* v = find(key)) {
      if (v->is_boolean())
        out = v->as_boolean();
      else
        bad(key, "must be true or false");
    }
  }
  template <class Int>
  void integer(const char* key, Int& out, std::int64_t min, std::int64_t max) {
    if (auto* v = find(key)) {
      if (!v->is_integer()) return bad(key, "must be an integer");
      const auto n = v->as_integer();
      if (n < min || n > max)
        return bad(key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
      out = static_cast<Int>(n);
    }
  }
  template <class Int>
  void integer(const char* key, std::optional<Int>& out, std::int64_t min, std::int64_t max) {
    if (!has(key)) return;
    Int n{};
    integer(key, n, min, max);
    out = n;
  }
  void duration(const char* key, millis& out, millis min = millis{0}) {
    if (auto* v = find(key)) {
      auto d = v->is_string() ? parse_duration(v->as_string().str) : std::nullopt;
      if (!d)
        return bad(key, "must be a duration like \"500ms\", \"30s\", \"5m\", \"48h\", \"7d\"");
      if (*d < min) return bad(key, "must be at least " + format_duration(min));
      out = *d;
    }
  }
  void duration(const char* key, std::optional<millis>& out, millis min = millis{0}) {
    if (!has(key)) return;
    millis d{};
    duration(key, d, min);
    out = d;
  }
  void string_list(const char* key, std::vector<std::string>& out) {
    if (auto* v = find(key)) {
      if (!v->is_array()) return bad(key, "must be a list of strings");
      out.clear();
      for (const auto& item : v->as_array()) {
        if (!item.is_string()) return bad(key, "must be a list of strings");
        out.push_back(item.as_string().str);
      }
    }
  }
  bool has(const char* key) const { return table_ && table_->count(key); }

  // Reports keys never asked about.
  void finish() {
    if (!table_) return;
    for (const auto& [k, v] : *table_)
      if (!seen_.count(k)) errs_.push_back(name(k) + ": unknown key");
  }

 private:
  const toml::value* find(const char* key) {
    seen_.insert(key);
    if (!table_) return nullptr;
    auto it = table_->find(key);
    return it == table_->end() ? nullptr : &it->second;
  }
  std::string name(const std::string& key) const {
    return key.empty() ? prefix_ : prefix_.empty() ? key : prefix_ + "." + key;
  }
  void bad(const std::string& key, const std::string& why) {
    errs_.push_back(name(key) + ": " + why);
  }

  std::string prefix_;
  problems& errs_;
  const toml::table* table_ = nullptr;
  std::set<std::string> seen_;
};

void read_overrides(table_reader& r, delivery_overrides& o) {
  r.integer("concurrency", o.concurrency, 1, 100000);
  r.integer("max_attempts", o.max_attempts, 1, 1000000);
  r.integer("max_rate_limited", o.max_rate_limited, 1, 1000000);
  r.duration("max_age", o.max_age, millis{1});
  r.duration("request_timeout", o.request_timeout, millis{1});
  r.duration("retry_base", o.retry_base, millis{1});
  r.duration("retry_cap", o.retry_cap, millis{1});
}

route_settings apply_overrides(route_settings s, const delivery_overrides& o) {
  if (o.concurrency) s.concurrency = *o.concurrency;
  if (o.max_attempts) s.max_attempts = *o.max_attempts;
  if (o.max_rate_limited) s.max_rate_limited = *o.max_rate_limited;
  if (o.max_age) s.max_age = *o.max_age;
  if (o.request_timeout) s.request_timeout = *o.request_timeout;
  if (o.retry_base) s.retry_base = *o.retry_base;
  if (o.retry_cap) s.retry_cap = *o.retry_cap;
  return s;
}

// Whether a route pattern is about Feishu / Lark open APIs: it names their hosts or their API
// path prefix.
bool names_feishu(const std::string& match) {
  std::string m(match);
  for (auto& ch : m) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  for (const char* word : {"feishu", "larksuite", "larkoffice", "open-apis"})
    if (m.find(word) != std::string::npos) return true;
  return false;
}

route_config read_route(const toml::value& v, std::size_t index, problems& errs) {
  route_config r;
  r.name.clear();
  r.match.clear();
  r.profile = "generic";
  r.serialize_by.clear();
  r.methods.clear();  // a route written by hand allows every method unless it lists them
  table_reader t(v, "routes[" + std::to_string(index) + "]", errs);
  t.string("name", r.name);
  t.string("match", r.match);
  t.string("profile", r.profile);
  // The safe defaults follow from what the route is for: a route to Feishu's open APIs written
  // without a profile gets "feishu" (Feishu answers many failures with HTTP 200 and a code that a
  // generic route would record as success), and a feishu route serializes by Bitable table
  // unless it says otherwise (two writes to one table at once fail with 1254291).
  if (!t.has("profile") && names_feishu(r.match)) {
    r.profile = "feishu";
    r.profile_inferred = true;
  }
  if (r.profile == "feishu") r.serialize_by = "bitable_table";
  t.string_list("methods", r.methods);
  for (auto& m : r.methods)
    for (auto& ch : m) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  t.boolean("allow_private_networks", r.allow_private_networks);
  t.string("credentials", r.credentials);
  t.string("serialize_by", r.serialize_by);
  t.integer("key_concurrency", r.key_concurrency, 1, 10000);
  t.duration("key_min_gap", r.key_min_gap);
  read_overrides(t, r.overrides);
  t.finish();
  return r;
}

void read_document(const toml::value& root, config& c, problems& errs) {
  table_reader top(root, "", errs);
  static const std::set<std::string> sections = {"server", "store", "delivery",  "routes", "coze",
                                                 "feishu", "log",   "retention", "alerts"};
  if (root.is_table())
    for (const auto& [k, v] : root.as_table())
      if (!sections.count(k)) errs.push_back(k + ": unknown section");
  const auto section = [&](const char* name) -> const toml::value* {
    auto& t = root.as_table();
    auto it = t.find(name);
    return it == t.end() ? nullptr : &it->second;
  };
  if (!root.is_table()) return;
  if (auto* v = section("server")) {
    table_reader t(*v, "server", errs);
    t.string("listen", c.server.listen);
    t.string_list("api_tokens", c.server.api_tokens);
    t.boolean("allow_unauthenticated_public", c.server.allow_unauthenticated_public);
    t.boolean("token_public", c.server.token_public);
    t.string("public_url", c.server.public_url);
    t.string("tls_cert", c.server.tls_cert);
    t.string("tls_key", c.server.tls_key);
    t.integer("max_body_bytes", c.server.max_body_bytes, 1024, 64 << 20);
    t.integer("max_connections", c.server.max_connections, 1, 100000);
    t.integer("max_connections_per_client", c.server.max_connections_per_client, 1, 100000);
    t.duration("read_timeout", c.server.read_timeout, millis{100});
    t.finish();
  }
  if (auto* v = section("store")) {
    table_reader t(*v, "store", errs);
    t.string("backend", c.store.backend);
    t.string("url", c.store.url);
    t.string("path", c.store.path);
    t.integer("max_queue_depth", c.store.max_queue_depth, 1, std::int64_t(1) << 40);
    t.integer("max_pending_writes", c.store.max_pending_writes, 1, 10'000'000);
    t.duration("commit_timeout", c.store.commit_timeout, millis{1});
    t.duration("busy_timeout", c.store.busy_timeout, millis{0});
    t.integer("max_size", c.store.max_size, 0, std::int64_t(1) << 50);
    t.finish();
  }
  if (auto* v = section("delivery")) {
    table_reader t(*v, "delivery", errs);
    // The keys a route may override are read by the same code, then applied to the defaults.
    delivery_overrides o;
    read_overrides(t, o);
    c.delivery.defaults = apply_overrides(c.delivery.defaults, o);
    t.duration("rate_limit_cap", c.delivery.defaults.rate_limit_cap, millis{1});
    t.string("ca_file", c.delivery.ca_file);
    t.duration("shutdown_grace", c.delivery.shutdown_grace);
    t.integer("max_response_bytes", c.delivery.max_response_bytes, 1024, 64 << 20);
    t.duration("idle_timeout", c.delivery.idle_timeout, millis{0});
    t.finish();
  }
  if (auto* v = section("routes")) {
    if (!v->is_array()) {
      errs.push_back("routes: must be a list of tables ([[routes]])");
    } else {
      c.routes.clear();
      std::size_t i = 0;
      for (const auto& item : v->as_array()) c.routes.push_back(read_route(item, i++, errs));
    }
  }
  if (auto* v = section("coze")) {
    table_reader t(*v, "coze", errs);
    t.string("app_id", c.coze.app_id);
    t.string("public_key_id", c.coze.public_key_id);
    t.string("private_key_file", c.coze.private_key_file);
    t.string("token_url", c.coze.token_url);
    t.finish();
  }
  if (auto* v = section("feishu")) {
    table_reader t(*v, "feishu", errs);
    t.string("app_id", c.feishu.app_id);
    t.string("app_secret", c.feishu.app_secret);
    t.string("token_url", c.feishu.token_url);
    t.finish();
  }
  if (auto* v = section("log")) {
    table_reader t(*v, "log", errs);
    t.string("level", c.log.level);
    t.string("format", c.log.format);
    t.finish();
  }
  if (auto* v = section("retention")) {
    table_reader t(*v, "retention", errs);
    t.duration("succeeded", c.retention.succeeded);
    t.duration("dead", c.retention.dead);
    t.duration("interval", c.retention.interval, millis{10});
    t.finish();
  }
  if (auto* v = section("alerts")) {
    table_reader t(*v, "alerts", errs);
    t.string("webhook", c.alerts.webhook);
    t.string("secret", c.alerts.secret);
    t.string("format", c.alerts.format);
    t.duration("delay", c.alerts.delay, millis{0});
    t.duration("interval", c.alerts.interval, millis{100});
    t.finish();
  }
}

// Items separated by commas or line ends (a credential file may hold one token a line); blanks
// around them are dropped, and so are empty items.
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t pos = 0; pos < s.size();) {
    const auto end = std::min(s.find_first_of(",\n", pos), s.size());
    const auto item = s.substr(pos, end - pos);
    const auto b = item.find_first_not_of(" \t\r"), e = item.find_last_not_of(" \t\r");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
    pos = end + 1;
  }
  return out;
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Environment and systemd credentials ($CREDENTIALS_DIRECTORY/<name>) beat the file.
void apply_environment(config& c, const environment& env, problems& errs) {
  const auto get = [&](const char* name) -> std::optional<std::string> {
    auto it = env.find(name);
    if (it == env.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
  const auto credential = [&](const char* name) -> std::optional<std::string> {
    auto dir = get("CREDENTIALS_DIRECTORY");
    if (!dir) return std::nullopt;
    auto text = read_file(*dir + "/" + name);
    if (text)
      while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) text->pop_back();
    return text;
  };
  if (auto v = get("RESENDD_API_TOKENS")) c.server.api_tokens = split_list(*v);
  if (auto v = credential("api_tokens")) c.server.api_tokens = split_list(*v);
  if (auto v = get("RESENDD_LOG")) c.log.level = *v;
  if (auto v = get("RESENDD_STORE_BACKEND")) c.store.backend = *v;
  if (auto v = get("RESENDD_STORE_URL")) c.store.url = *v;
  if (auto v = credential("store_url")) c.store.url = *v;
  if (auto v = get("EXPECTED_COZE_API_KEY")) c.coze.app_id = *v;
  if (auto v = get("COZE_APP_ID")) c.coze.app_id = *v;
  if (auto v = get("COZE_PUBLIC_KEY_ID")) c.coze.public_key_id = *v;
  if (auto v = get("COZE_API_URL")) c.coze.token_url = *v;
  if (auto v = get("JWT_PRIVATE_KEY_FILE")) c.coze.private_key_file = *v;
  if (auto v = get("FEISHU_APP_ID")) c.feishu.app_id = *v;
  if (auto v = get("FEISHU_APP_SECRET")) c.feishu.app_secret = *v;
  if (auto v = credential("feishu_app_secret")) c.feishu.app_secret = *v;
  if (auto v = get("RESENDD_ALERTS_WEBHOOK")) c.alerts.webhook = *v;
  if (auto v = credential("alerts_webhook")) c.alerts.webhook = *v;
  if (auto v = get("RESENDD_ALERTS_SECRET")) c.alerts.secret = *v;
  if (auto v = credential("alerts_secret")) c.alerts.secret = *v;
  if (auto v = get("JWT_PRIVATE_KEY")) {
    c.coze.private_key_pem = *v;
  } else if (auto v = credential("jwt_private_key")) {
    c.coze.private_key_pem = *v;
  } else if (!c.coze.private_key_file.empty()) {
    if (auto text = read_file(c.coze.private_key_file))
      c.coze.private_key_pem = *text;
    else
      errs.push_back("coze.private_key_file: cannot read " + c.coze.private_key_file);
  }
}

// An IP literal ("[v6]" too, as listen writes it) or "localhost": what serve can bind.
bool is_ip_or_localhost(std::string host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  in_addr v4{};
  in6_addr v6{};
  return host == "localhost" || ::inet_pton(AF_INET, host.c_str(), &v4) == 1 ||
         ::inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

// 127.0.0.0/8, ::1 and "localhost": the addresses only this machine reaches.
bool is_loopback_host(std::string host) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "localhost") return true;
  in_addr v4{};
  if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return ::inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

bool valid_http_url(const std::string& s) {
  auto u = boost::urls::parse_absolute_uri(s);
  return u && (u->scheme() == "http" || u->scheme() == "https") && !u->host().empty();
}

void validate(const config& c, problems& errs) {
  const auto colon = c.server.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == c.server.listen.size())
    errs.push_back("server.listen: must be HOST:PORT");
  else {
    const auto port = c.server.listen.substr(colon + 1);
    if (port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 ||
        std::stoi(port) > 65535)
      errs.push_back("server.listen: bad port \"" + port + "\"");
    // What serve would refuse, check-config refuses too.
    const auto host = c.server.listen.substr(0, colon);
    if (!is_ip_or_localhost(host))
      errs.push_back("server.listen: \"" + host +
                     "\" is not an IP address or localhost (a listener's name is not resolved)");
    else if (!is_loopback_host(host) && c.server.api_tokens.empty() &&
             !c.server.allow_unauthenticated_public)
      errs.push_back("server.listen: refusing to listen on " + host +
                     " without server.api_tokens (or allow_unauthenticated_public = true)");
  }
  // A token no client can send would lock every client out (and an empty one would let a
  // public listener start with no usable token). The token itself is never quoted.
  for (std::size_t i = 0; i < c.server.api_tokens.size(); ++i) {
    const auto& t = c.server.api_tokens[i];
    const auto key = "server.api_tokens[" + std::to_string(i) + "]: ";
    if (t.empty())
      errs.push_back(key + "empty; remove it");
    else if (std::any_of(t.begin(), t.end(), [](char ch) {
               return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f;
             }))
      errs.push_back(key + "holds a control character, which a Bearer header cannot carry");
    else if (t.front() == ' ' || t.back() == ' ')
      errs.push_back(key + "begins or ends with a space, which a Bearer header drops");
  }
  const auto& d = c.delivery.defaults;
  if (d.retry_base > d.retry_cap) errs.push_back("delivery.retry_base: must not exceed retry_cap");
  std::set<std::string> names;
  for (std::size_t i = 0; i < c.routes.size(); ++i) {
    const auto& r = c.routes[i];
    const auto key = "routes[" + std::to_string(i) + "].";
    if (r.name.empty())
      errs.push_back(key + "name: required");
    else if (!names.insert(r.name).second)
      errs.push_back(key + "name: \"" + r.name + "\" is used twice");
    if (r.match.empty())
      errs.push_back(key + "match: required");
    else if (RE2 re(r.match, RE2::Quiet); !re.ok())
      errs.push_back(key + "match: bad pattern: " + re.error());
    if (r.profile != "generic" && r.profile != "feishu")
      errs.push_back(key + "profile: must be \"generic\" or \"feishu\"");
    for (const auto& m : r.methods)
      if (m.empty() || m.size() > 32 ||
          m.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~") !=
              std::string::npos)
        errs.push_back(key + "methods: \"" + m.substr(0, 40) + "\" is not an HTTP method name");
    if (!r.credentials.empty() && r.credentials != "feishu_tenant" && r.credentials != "coze")
      errs.push_back(key + "credentials: must be \"\", \"feishu_tenant\" or \"coze\"");
    if (r.serialize_by != "" && r.serialize_by != "host" && r.serialize_by != "path" &&
        r.serialize_by != "bitable_table")
      errs.push_back(key + "serialize_by: must be \"\", \"host\", \"path\" or \"bitable_table\"");
    const auto s = effective_settings(c, r);
    if (s.retry_base > s.retry_cap) errs.push_back(key + "retry_base: must not exceed retry_cap");
    if (r.credentials == "feishu_tenant" &&
        (c.feishu.app_id.empty() || c.feishu.app_secret.empty()))
      errs.push_back(key +
                     "credentials: \"feishu_tenant\" needs feishu.app_id and feishu.app_secret");
    if (r.credentials == "coze" &&
        (c.coze.app_id.empty() || c.coze.public_key_id.empty() || c.coze.private_key_pem.empty()))
      errs.push_back(key +
                     "credentials: \"coze\" needs coze.app_id, public_key_id and a private key");
  }
  for (std::size_t i = 0; i < c.routes.size(); ++i)
    if (c.routes[i].name == alerts_route_name)
      errs.push_back("routes[" + std::to_string(i) + "].name: \"" + std::string(alerts_route_name) +
                     "\" is resendd's alert route");
  if (!c.alerts.webhook.empty() && !valid_http_url(c.alerts.webhook))
    errs.push_back("alerts.webhook: must be an http(s) URL");
  if (c.alerts.format != "" && c.alerts.format != "feishu" && c.alerts.format != "generic")
    errs.push_back("alerts.format: must be \"\", \"feishu\" or \"generic\"");
  if (!c.alerts.secret.empty() && c.alerts.webhook.empty())
    errs.push_back("alerts.secret: set without alerts.webhook");
  if (!valid_http_url(c.coze.token_url)) errs.push_back("coze.token_url: must be an http(s) URL");
  if (c.server.tls_cert.empty() != c.server.tls_key.empty())
    errs.push_back("server.tls_cert: tls_cert and tls_key go together");
  for (const auto* f : {&c.server.tls_cert, &c.server.tls_key})
    if (!f->empty() && !read_file(*f)) errs.push_back("server.tls_cert/tls_key: cannot read " + *f);
  if (!c.server.public_url.empty() && !valid_http_url(c.server.public_url))
    errs.push_back("server.public_url: must be an http(s) URL");
  if (!valid_http_url(c.feishu.token_url))
    errs.push_back("feishu.token_url: must be an http(s) URL");
  if (!c.delivery.ca_file.empty() && !read_file(c.delivery.ca_file))
    errs.push_back("delivery.ca_file: cannot read " + c.delivery.ca_file);
  if (c.store.backend != "sqlite" && c.store.backend != "postgres")
    errs.push_back("store.backend: must be \"sqlite\" or \"postgres\"");
  if (c.store.backend == "sqlite" && c.store.path.empty()) errs.push_back("store.path: required");
  if (c.store.backend == "postgres" && !c.store.url.starts_with("postgresql://") &&
      !c.store.url.starts_with("postgres://"))
    errs.push_back("store.url: backend \"postgres\" needs a postgresql://… URL (or "
                   "RESENDD_STORE_URL, or the systemd credential store_url)");
}

// A Feishu/Lark custom-bot hook: https://open.feishu.cn/open-apis/bot/v2/hook/…
bool is_feishu_bot_hook(const std::string& url) {
  auto u = boost::urls::parse_absolute_uri(url);
  if (!u) return false;
  const std::string host(u->encoded_host());
  const auto ends = [&](std::string_view d) {
    return host.size() >= d.size() && host.compare(host.size() - d.size(), d.size(), d) == 0;
  };
  return (ends("feishu.cn") || ends("larksuite.com") || ends("larkoffice.com")) &&
         std::string_view(u->encoded_path()).starts_with("/open-apis/bot/");
}

config finish(config c, const environment& env, problems errs) {
  apply_environment(c, env, errs);
  validate(c, errs);
  if (c.alerts.format.empty() && !c.alerts.webhook.empty())
    c.alerts.format = is_feishu_bot_hook(c.alerts.webhook) ? "feishu" : "generic";
  static const std::set<std::string> levels = {"trace", "debug",    "info", "warn",
                                               "error", "critical", "off"};
  if (!levels.count(c.log.level))
    errs.push_back("log.level: must be one of trace, debug, info, warn, error, critical, off");
  if (c.log.format != "text" && c.log.format != "json")
    errs.push_back("log.format: must be \"text\" or \"json\"");
  if (!errs.empty()) throw config_error(std::move(errs));
  return c;
}

}  // namespace

config load_config_text(const std::string& text, const environment& env) {
  config c;
  problems errs;
  // TOML is UTF-8. Checked before toml11 sees the text: toml11 3.7.1 (Debian 12) reads past its
  // buffer when it reports invalid UTF-8 inside a 'literal string' (found by fuzz_config).
  if (!valid_utf8(text)) {
    std::size_t good = 0;  // the first byte that starts no well-formed character
    while (good < text.size() && valid_utf8(utf8_char_at(text, good)))
      good += utf8_char_at(text, good).size();
    const auto line = 1 + std::count(text.begin(), text.begin() + long(good), '\n');
    throw config_error({"syntax: the file is not valid UTF-8 (line " + std::to_string(line) +
                        ", byte " + std::to_string(good + 1) + ")"});
  }
  try {
    std::istringstream in(text);
    read_document(toml::parse(in, "config"), c, errs);
  } catch (const std::exception& e) {
    errs.push_back(std::string("syntax: ") + e.what());
  }
  return finish(std::move(c), env, std::move(errs));
}

config load_config(const std::optional<std::filesystem::path>& file, const environment& env) {
  if (!file) return finish(config{}, env, {});
  auto text = read_file(file->string());
  if (!text) throw config_error({"--config: cannot read " + file->string()});
  return load_config_text(*text, env);
}

route_settings effective_settings(const config& c, const route_config& r) {
  return apply_overrides(c.delivery.defaults, r.overrides);
}

namespace {
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out.push_back('\\');
    out.push_back(ch);
  }
  return out + "\"";
}
std::string literal(const std::string& s) {
  return s.find('\'') == std::string::npos ? "'" + s + "'" : quote(s);
}
std::string masked(const std::string& s) { return s.empty() ? "\"\"" : quote(mask_secret(s)); }
}  // namespace

std::string render_config(const config& c) {
  std::ostringstream o;
  o << "[server]\nlisten = " << quote(c.server.listen) << "\napi_tokens = [";
  for (std::size_t i = 0; i < c.server.api_tokens.size(); ++i)
    o << (i ? ", " : "") << quote(mask_secret(c.server.api_tokens[i]));
  o << "]\nallow_unauthenticated_public = " << std::boolalpha
    << c.server.allow_unauthenticated_public << "\ntoken_public = " << c.server.token_public
    << "\npublic_url = " << quote(c.server.public_url)
    << "\ntls_cert = " << quote(c.server.tls_cert) << "\ntls_key = " << quote(c.server.tls_key)
    << "\nmax_body_bytes = " << c.server.max_body_bytes
    << "\nmax_connections = " << c.server.max_connections
    << "\nmax_connections_per_client = " << c.server.max_connections_per_client
    << "\nread_timeout = " << quote(format_duration(c.server.read_timeout)) << "\n\n";
  o << "[store]\nbackend = " << quote(c.store.backend) << "\nurl = " << quote(mask_pg_url(c.store.url))
    << "\npath = " << quote(c.store.path)
    << "\nmax_queue_depth = " << c.store.max_queue_depth
    << "\nmax_pending_writes = " << c.store.max_pending_writes
    << "\ncommit_timeout = " << quote(format_duration(c.store.commit_timeout))
    << "\nbusy_timeout = " << quote(format_duration(c.store.busy_timeout))
    << "\nmax_size = " << c.store.max_size << "\n\n";
  const auto& d = c.delivery.defaults;
  o << "[delivery]\nconcurrency = " << d.concurrency
    << "\nrequest_timeout = " << quote(format_duration(d.request_timeout))
    << "\nmax_attempts = " << d.max_attempts << "\nmax_rate_limited = " << d.max_rate_limited
    << "\nmax_age = " << quote(format_duration(d.max_age))
    << "\nretry_base = " << quote(format_duration(d.retry_base))
    << "\nretry_cap = " << quote(format_duration(d.retry_cap))
    << "\nrate_limit_cap = " << quote(format_duration(d.rate_limit_cap))
    << "\nca_file = " << quote(c.delivery.ca_file)
    << "\nshutdown_grace = " << quote(format_duration(c.delivery.shutdown_grace))
    << "\nmax_response_bytes = " << c.delivery.max_response_bytes
    << "\nidle_timeout = " << quote(format_duration(c.delivery.idle_timeout)) << "\n";
  for (const auto& r : c.routes) {
    const auto s = effective_settings(c, r);
    o << "\n[[routes]]\nname = " << quote(r.name) << "\nmatch = " << literal(r.match)
      << "\nprofile = " << quote(r.profile)
      << (r.profile_inferred ? "  # inferred: the match names Feishu/Lark open APIs" : "")
      << "\nmethods = [";
    for (std::size_t i = 0; i < r.methods.size(); ++i) o << (i ? ", " : "") << quote(r.methods[i]);
    o << "]"
      << "\nallow_private_networks = " << r.allow_private_networks
      << "\ncredentials = " << quote(r.credentials) << "\nserialize_by = " << quote(r.serialize_by)
      << "\nkey_concurrency = " << r.key_concurrency
      << "\nkey_min_gap = " << quote(format_duration(r.key_min_gap))
      << "\nconcurrency = " << s.concurrency << "\nmax_attempts = " << s.max_attempts
      << "\nmax_rate_limited = " << s.max_rate_limited
      << "\nmax_age = " << quote(format_duration(s.max_age))
      << "\nrequest_timeout = " << quote(format_duration(s.request_timeout))
      << "\nretry_base = " << quote(format_duration(s.retry_base))
      << "\nretry_cap = " << quote(format_duration(s.retry_cap)) << "\n";
  }
  o << "\n[coze]\napp_id = " << quote(c.coze.app_id)
    << "\npublic_key_id = " << quote(c.coze.public_key_id)
    << "\nprivate_key_file = " << quote(c.coze.private_key_file)
    << "\n# private key loaded: " << (c.coze.private_key_pem.empty() ? "no" : "yes")
    << "\ntoken_url = " << quote(c.coze.token_url) << "\n";
  o << "\n[feishu]\napp_id = " << quote(c.feishu.app_id)
    << "\napp_secret = " << masked(c.feishu.app_secret)
    << "\ntoken_url = " << quote(c.feishu.token_url) << "\n";
  o << "\n[log]\nlevel = " << quote(c.log.level) << "\nformat = " << quote(c.log.format) << "\n";
  o << "\n[alerts]\nwebhook = " << quote(mask_url_path(c.alerts.webhook))
    << "\nsecret = " << masked(c.alerts.secret) << "\nformat = " << quote(c.alerts.format)
    << "\ndelay = " << quote(format_duration(c.alerts.delay))
    << "\ninterval = " << quote(format_duration(c.alerts.interval)) << "\n";
  o << "\n[retention]\nsucceeded = " << quote(format_duration(c.retention.succeeded))
    << "\ndead = " << quote(format_duration(c.retention.dead))
    << "\ninterval = " << quote(format_duration(c.retention.interval)) << "\n";
  return o.str();
}

void apply_reloadable(config& running, const config& next) {
  running.routes = next.routes;
  running.server.api_tokens = next.server.api_tokens;
  running.server.token_public = next.server.token_public;
  running.server.public_url = next.server.public_url;
  if (running.server.tls_cert.empty() == next.server.tls_cert.empty()) {
    running.server.tls_cert = next.server.tls_cert;
    running.server.tls_key = next.server.tls_key;
  }
  running.log.level = next.log.level;
  running.retention = next.retention;
  running.alerts = next.alerts;
}

std::vector<std::string> keys_needing_restart(const config& running, const config& next) {
  config applied = running;
  apply_reloadable(applied, next);
  // Compared as check-config prints them (secrets masked), line by line: the two texts have the
  // same lines in the same order, as they have the same routes.
  std::istringstream have(render_config(applied)), want(render_config(next));
  std::vector<std::string> out;
  std::set<std::string> named;
  const auto name = [&](const std::string& key) {
    if (named.insert(key).second) out.push_back(key);
  };
  std::string section, a, b;
  while (std::getline(have, a) && std::getline(want, b)) {
    if (a.starts_with("[")) {
      const auto open = a.find_first_not_of('[');
      section = a.substr(open, a.find(']') - open);
    }
    if (a != b && !a.starts_with("#")) name(section + "." + a.substr(0, a.find(' ')));
  }
  // Secrets that mask alike may still differ.
  if (applied.coze.private_key_pem != next.coze.private_key_pem) name("coze.private_key");
  if (applied.feishu.app_secret != next.feishu.app_secret) name("feishu.app_secret");
  if (applied.store.url != next.store.url) name("store.url");
  return out;
}

std::string local_base_url(const config& c) {
  const auto& listen = c.server.listen;
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return (c.server.tls_cert.empty() ? "http://" : "https://") + host + ":" +
         listen.substr(colon + 1);
}

}  // namespace resendd
