#include "util/log.h"

#include <openssl/crypto.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <boost/url/pct_string_view.hpp>
#include <boost/url/url.hpp>
#include <cctype>
#include <cstdlib>
#include <nlohmann/json.hpp>

namespace resendd {

namespace {

// `%*`: the line's syslog priority as journald reads it from a stream ("<6>"), so that the
// journal keeps each line's level (journalctl -p warning works).
class journald_priority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr const char* prio[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    const std::string_view p = prio[std::min<int>(int(msg.level), 6)];
    dest.append(p.data(), p.data() + p.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<journald_priority>();
  }
};

// `%J`: the message as a JSON string (quoted and escaped), for log.format = "json".
class json_message final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const auto text = nlohmann::json(std::string(msg.payload.data(), msg.payload.size()))
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<json_message>();
  }
};

// `%E`: the message with its control characters written as escapes (`\n`, `\x1b`, `\u009b`),
// for log.format = "text". A message quotes what bots and destinations sent (a json_parse path,
// a header name, Feishu's `msg`): a newline in it would start a line of its own, one that reads
// like any other ("… job X attempt 1: succeeded"), and an escape sequence would drive the
// terminal of whoever tails the log. One message is one line.
class escaped_message final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    static constexpr char hex[] = "0123456789abcdef";
    for (std::size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<unsigned char>(text[i]);
      const bool c1 = c == 0xc2 && i + 1 < text.size() &&
                      static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                      static_cast<unsigned char>(text[i + 1]) <= 0x9f;  // U+0080–U+009F
      if (c1) {
        const auto u = static_cast<unsigned char>(text[++i]);
        const char esc[] = {'\\', 'u', '0', '0', hex[u >> 4], hex[u & 15]};
        dest.append(esc, esc + sizeof esc);
      } else if (c == '\n' || c == '\r' || c == '\t') {
        const char esc[] = {'\\', c == '\n' ? 'n' : c == '\r' ? 'r' : 't'};
        dest.append(esc, esc + sizeof esc);
      } else if (c < 0x20 || c == 0x7f) {
        const char esc[] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
        dest.append(esc, esc + sizeof esc);
      } else {
        dest.push_back(char(c));
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<escaped_message>();
  }
};

}  // namespace

bool setup_logging(std::string_view level, std::string_view format) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") return false;
  if (format != "text" && format != "json") return false;
  auto logger = spdlog::stderr_color_mt("resendd");
  // Under systemd (stderr is a journal stream) each line starts with its priority.
  const bool journald = std::getenv("JOURNAL_STREAM") != nullptr;
  const std::string prefix = journald ? "%*" : "";
  auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  f->add_flag<journald_priority>('*').add_flag<json_message>('J').add_flag<escaped_message>('E');
  f->set_pattern(format == "json"
                     ? prefix + R"({"time":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","msg":%J})"
                     : prefix + "%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %E");
  logger->set_formatter(std::move(f));
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  return true;
}

bool set_log_level(std::string_view level) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") return false;
  spdlog::default_logger()->set_level(lvl);
  return true;
}

std::string mask_secret(std::string_view secret) {
  std::string_view scheme;
  if (auto sp = secret.find(' '); sp != std::string_view::npos && sp < 16) {
    scheme = secret.substr(0, sp + 1);
    secret.remove_prefix(sp + 1);
  }
  std::string out(scheme);
  if (secret.size() >= 16)
    out.append(secret.substr(0, 4)).append("…");
  else
    out.append("***");
  out.append("(").append(std::to_string(secret.size())).append(" chars)");
  return out;
}

bool secret_equals(std::string_view given, std::string_view expected) {
  return given.size() == expected.size() &&
         CRYPTO_memcmp(given.data(), expected.data(), expected.size()) == 0;
}

bool is_secret_header(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  return n == "authorization" || n == "proxy-authorization" || n == "cookie" || n == "x-api-key" ||
         n == "x-auth-token" || n.find("token") != std::string::npos ||
         n.find("secret") != std::string::npos;
}

}  // namespace resendd

#include <nlohmann/json.hpp>

#include "util/json_depth.h"
#include "util/json_spans.h"
#include "util/utf8.h"

namespace resendd {
namespace {
std::string lowercase(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

// A member or parameter name whose value is a credential. Feishu's client_token is an
// idempotency key that operators reconcile by, not a credential.
bool names_credential(std::string_view name) {
  const auto key = lowercase(name);
  return key != "client_token" &&
         (key.find("token") != std::string::npos || key.find("secret") != std::string::npos ||
          key.find("password") != std::string::npos || key == "authorization");
}

// Shown masked in the admin API and `resendd jobs`: every header is_secret_header names, and any
// other whose name says it carries a key, a password, a session, a signature or an auth value
// (Api-Key, X-Goog-Api-Key, Ocp-Apim-Subscription-Key, X-Session-Id...). Only when shown: the
// scrub of a succeeded job keeps to is_secret_header, the rule a repeated Idempotency-Key is
// compared under, so that jobs kept by earlier versions still match their repeats.
bool shown_masked_header(std::string_view name) {
  const auto n = lowercase(name);
  if (n == "idempotency-key") return false;  // what operators look a request up by
  for (const char* word : {"key", "password", "session", "signature", "auth"})
    if (n.find(word) != std::string::npos) return true;
  return is_secret_header(name);
}

void mask_values(nlohmann::json& j) {
  if (j.is_object()) {
    for (auto& [k, v] : j.items()) {
      const bool secret = names_credential(k);
      if (secret && v.is_string())
        v = mask_secret(v.get<std::string>());
      else
        mask_values(v);
    }
  } else if (j.is_array()) {
    for (auto& v : j) mask_values(v);
  }
}
// Whether a member name in `text` could be one mask_values masks, read on the raw text: it holds
// one of the words in any case, or an escape that could spell one. When none can, the text is
// kept as it came instead of being parsed and written again (a tenth of the network thread's
// time per delivery went to that for Feishu's two-line success envelope).
bool may_name_secret(std::string_view text) {
  static constexpr std::string_view words[] = {"token", "secret", "password", "authorization"};
  const auto lower = [](char c) { return char(std::tolower(static_cast<unsigned char>(c))); };
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] == 'u') return true;
    for (const auto w : words) {
      if (lower(text[i]) != w[0] || text.size() - i < w.size()) continue;
      std::size_t k = 1;
      while (k < w.size() && lower(text[i + k]) == w[k]) ++k;
      if (k == w.size()) return true;
    }
  }
  return false;
}
}  // namespace

std::string mask_response(std::string_view text, std::size_t max_bytes) {
  // Bytes that are not text are kept as base64 behind a marker, so that every reader (the API,
  // the CLI, sqlite3, PostgreSQL's text columns) can take them.
  if (!valid_utf8(text)) {
    const std::size_t keep = max_bytes / 4 * 3;
    std::string out = std::string(binary_marker) + base64_encode(text.substr(0, keep));
    if (text.size() > keep) out += "…(truncated)";
    return out;
  }
  std::string out(text);
  if (may_name_secret(text) && json_depth_within(text)) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_discarded()) {
      mask_values(j);
      out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  if (out.size() > max_bytes) {
    out.resize(utf8_prefix(out, max_bytes).size());  // never inside a character
    out += "…(truncated)";
  }
  return out;
}

std::string mask_location(std::string_view url) {
  const auto query = url.find('?');
  std::string_view path = url.substr(0, query);
  std::string out;
  out.reserve(url.size());
  // The path: the segment after a "hook" segment is a custom bot's token
  // (open.feishu.cn/open-apis/bot/v2/hook/{token}).
  for (std::size_t pos = 0;;) {
    const auto slash = path.find('/', pos);
    const auto segment =
        path.substr(pos, slash == std::string_view::npos ? path.npos : slash - pos);
    const bool after_hook = pos >= 6 && path.substr(pos - 6, 6) == "/hook/";
    out += after_hook && !segment.empty() ? mask_secret(segment) : std::string(segment);
    if (slash == std::string_view::npos) break;
    out += '/';
    pos = slash + 1;
  }
  if (query == std::string_view::npos) return out;
  // The query: values of parameters whose (decoded) names are credentials, and the usual
  // API-key names of webhooks (?key= of WeCom bots, ?sign= of signed ones).
  const auto end = std::min(url.find('#', query), url.size());
  for (std::size_t pos = query + 1; pos <= end;) {
    out += url[pos - 1];  // '?' or '&'
    const auto amp = std::min(url.find('&', pos), end);
    const auto param = url.substr(pos, amp - pos);
    const auto eq = param.find('=');
    const auto name = param.substr(0, eq);
    std::string decoded;
    if (auto d = boost::urls::make_pct_string_view(name)) decoded = d->decode();
    const auto lower = lowercase(decoded.empty() ? name : std::string_view(decoded));
    const bool secret = names_credential(lower) || lower == "key" || lower == "apikey" ||
                        lower == "api_key" || lower == "sign" || lower == "signature";
    if (secret && eq != std::string_view::npos)
      out.append(name).append("=").append(mask_secret(param.substr(eq + 1)));
    else
      out.append(param);
    pos = amp + 1;
  }
  out.append(url.substr(end));
  return out;
}

void mask_job_secrets(nlohmann::json& job, std::string_view path_secret_route) {
  if (!job.is_object()) return;
  const bool whole_path = !path_secret_route.empty() && job.contains("route") &&
                          job["route"].is_string() && job["route"] == path_secret_route;
  const auto mask = [whole_path](nlohmann::json& location) {
    if (!location.is_string()) return;
    const auto text = location.get<std::string>();
    location = whole_path ? mask_url_path(text) : mask_location(text);
  };
  if (job.contains("location")) mask(job["location"]);
  if (!job.contains("request") || !job["request"].is_object()) return;
  auto& req = job["request"];
  if (req.contains("location")) mask(req["location"]);
  if (!req.contains("headers") || !req["headers"].is_object()) return;
  for (auto& [name, value] : req["headers"].items())
    if (value.is_string() && shown_masked_header(name))
      value = mask_secret(value.get<std::string>());
}

std::optional<std::string> scrub_request_secrets_reserialized(std::string_view request) {
  if (!json_depth_within(request)) return std::nullopt;
  auto req = nlohmann::json::parse(request, nullptr, false);
  if (!req.is_object() || !req.contains("headers") || !req["headers"].is_object())
    return std::nullopt;
  bool changed = false;
  for (auto& [name, value] : req["headers"].items())
    if (value.is_string() && is_secret_header(name)) {
      auto masked = mask_secret(value.get<std::string>());
      if (masked != value.get<std::string>()) value = std::move(masked), changed = true;
    }
  if (!changed) return std::nullopt;
  return req.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<std::string> scrub_request_secrets(std::string_view request) {
  const auto spans = scan_json_spans(request);
  if (!spans || (*spans)[0].k != json_span::kind::object)
    return scrub_request_secrets_reserialized(request);
  const auto& nodes = *spans;
  // Every value to mask, in document order: the secret headers of every "headers" member (a
  // parsed document would keep the last of duplicates; the text keeps them all).
  struct cut {
    std::size_t begin, end;
    std::string with;
  };
  std::vector<cut> cuts;
  std::string value;
  const auto& root = nodes[0];
  for (std::size_t i = 0; i < root.keys.size(); ++i) {
    const auto& headers = nodes[root.kids[i]];
    if (root.keys[i] != "headers" || headers.k != json_span::kind::object) continue;
    for (std::size_t h = 0; h < headers.keys.size(); ++h) {
      const auto& v = nodes[headers.kids[h]];
      if (v.k != json_span::kind::string || !is_secret_header(headers.keys[h])) continue;
      if (!decode_json_string(request, v.begin, v.end, value))
        return scrub_request_secrets_reserialized(request);
      auto masked = mask_secret(value);
      if (masked == value) continue;
      cuts.push_back({v.begin, v.end,
                      nlohmann::json(std::move(masked))
                          .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)});
    }
  }
  if (cuts.empty()) return std::nullopt;
  std::string out;
  out.reserve(request.size());
  std::size_t from = 0;
  for (const auto& c : cuts) {
    out.append(request.substr(from, c.begin - from)).append(c.with);
    from = c.end;
  }
  out.append(request.substr(from));
  return out;
}

std::string mask_url_path(const std::string& url) {
  if (url.empty()) return url;
  const auto scheme = url.find("://");
  const auto path = scheme == std::string::npos ? 0 : url.find_first_of("/?#", scheme + 3);
  if (path == std::string::npos) return url;
  return url.substr(0, path) + "/…(" + std::to_string(url.size() - path) + " chars)";
}

std::string mask_pg_url(const std::string& url) {
  if (auto u = boost::urls::parse_uri(url)) {
    boost::urls::url v = *u;
    if (v.has_password()) v.set_password("***");
    if (v.params().contains("password")) v.params().set("password", "***");
    return std::string(v.buffer());
  }
  // key=value connection strings (password=secret or password='se cret'): a linear scan, not a
  // backtracking regular expression (DESIGN.md: its recursion can overflow the stack).
  const auto lower = [](char c) { return char(std::tolower(static_cast<unsigned char>(c))); };
  const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  std::string out;
  std::size_t i = 0;
  while (i < url.size()) {
    std::size_t k = i;
    for (const char* w = "password"; *w; ++w, ++k)
      if (k >= url.size() || lower(url[k]) != *w) {
        k = std::string::npos;
        break;
      }
    std::size_t v = k;
    while (v != std::string::npos && v < url.size() && space(url[v])) ++v;
    if (v == std::string::npos || v >= url.size() || url[v] != '=') {
      out += url[i++];
      continue;
    }
    for (++v; v < url.size() && space(url[v]);) ++v;
    out.append(url, i, v - i);
    out += "***";
    if (v < url.size() && url[v] == '\'') {
      const auto close = url.find('\'', v + 1);
      v = close == std::string::npos ? url.size() : close + 1;
    } else {
      while (v < url.size() && !space(url[v])) ++v;
    }
    i = v;
  }
  return out;
}

}  // namespace resendd
