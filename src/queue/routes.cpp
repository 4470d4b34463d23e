#include "queue/routes.h"

#include <re2/re2.h>

#include <algorithm>
#include <boost/url/parse.hpp>
#include <cctype>
#include <stdexcept>
#include <vector>

namespace resendd {

namespace {

// The route alert messages go out on: exactly the webhook's URL (as the client sends it), POST,
// the feishu profile for a Feishu/Lark bot (its failures come back as HTTP 200 with a code).
// The operator wrote that URL, so it may be a private address (an in-house Alertmanager).
route_config alerts_route(const config& c) {
  route_config r;
  r.name = alerts_route_name;
  r.internal = true;
  r.match = RE2::QuoteMeta(normalize_location(c.alerts.webhook).url);
  r.profile = c.alerts.format == "feishu" ? "feishu" : "generic";
  r.methods = {"POST"};
  r.allow_private_networks = true;
  r.serialize_by = "";
  r.overrides.concurrency = 1;
  return r;
}

std::shared_ptr<std::vector<std::unique_ptr<route>>> build_routes(const config& c) {
  auto out = std::make_shared<std::vector<std::unique_ptr<route>>>();
  std::vector<route_config> configs;
  if (!c.alerts.webhook.empty()) configs.push_back(alerts_route(c));
  configs.insert(configs.end(), c.routes.begin(), c.routes.end());
  for (const auto& rc : configs) {
    auto r = std::make_unique<route>();
    r->cfg = rc;
    r->settings = effective_settings(c, rc);
    RE2::Options opts;
    opts.set_log_errors(false);
    r->pattern = std::make_unique<RE2>(rc.match, opts);
    if (!r->pattern->ok()) throw std::invalid_argument("route " + rc.name + ": bad pattern");
    out->push_back(std::move(r));
  }
  return out;
}

}  // namespace

route_table::route_table(const config& c) : routes_(build_routes(c)) {}

route_table::~route_table() = default;

void route_table::replace(const config& c) { routes_ = build_routes(c); }

const route* route_table::match(std::string_view location) const {
  for (const auto& r : *routes_)
    if (RE2::FullMatch(re2::StringPiece(location.data(), location.size()), *r->pattern))
      return r.get();
  return nullptr;
}

namespace {

// RFC 3986 §5.2.4 on an absolute path (Boost.URL 1.81 keeps ".." segments that climb above the
// root: "/a/../../c" stays "/../c", and a server may read that as a path outside the route).
std::string remove_dot_segments(std::string_view path) {
  std::vector<std::string_view> out;
  bool trailing = false;
  std::size_t i = path.empty() || path[0] != '/' ? 0 : 1;
  while (i <= path.size()) {
    const auto slash = path.find('/', i);
    const auto end = slash == std::string_view::npos ? path.size() : slash;
    const auto seg = path.substr(i, end - i);
    const bool last = slash == std::string_view::npos;
    if (seg == ".") {
      trailing = last;
    } else if (seg == "..") {
      if (!out.empty()) out.pop_back();
      trailing = last;
    } else {
      out.push_back(seg);
      trailing = false;
    }
    if (last) break;
    i = end + 1;
  }
  std::string r;
  for (const auto seg : out) r.append("/").append(seg);
  if (trailing || r.empty()) r += '/';
  return r;
}

// Percent-encoding as RFC 3986 §6.2.2 normalizes it: unreserved characters decoded, other
// triplets with upper-case hex. (Boost.URL 1.81's normalize() also decodes %2F in a path, which
// changes the path's segments, so it is not used.)
std::string normalize_percent(std::string_view s) {
  const auto hex = [](char c) {
    return std::isdigit(static_cast<unsigned char>(c))
               ? c - '0'
               : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10;
  };
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%' || i + 2 >= s.size()) {  // the parser let only whole triplets through
      out += s[i];
      continue;
    }
    const char c = char(hex(s[i + 1]) * 16 + hex(s[i + 2]));
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out += c;
    } else {
      out += '%';
      out += char(std::toupper(static_cast<unsigned char>(s[i + 1])));
      out += char(std::toupper(static_cast<unsigned char>(s[i + 2])));
    }
    i += 2;
  }
  return out;
}

}  // namespace

normalized_location normalize_location(std::string_view location) {
  normalized_location n;
  auto u = boost::urls::parse_absolute_uri(location);
  const auto fail = [&](const char* why) {
    n.error = why;
    return n;
  };
  if (!u && location.size() <= 8192 && location.find('#') != std::string_view::npos &&
      boost::urls::parse_uri(location))
    return fail("location must not carry a fragment (#…): a fragment is never sent");
  if (!u || location.size() > 8192) return fail("location must be an absolute http(s) URL");
  std::string scheme(u->scheme());
  for (auto& ch : scheme) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  if ((scheme != "http" && scheme != "https") || u->encoded_host().empty())
    return fail("location must be an absolute http(s) URL");
  // The authority as written, up to the path: the parser reads "127.0.0.1%2f.x" as the address
  // 127.0.0.1 and a path that does not start with "/", so the text is checked, not the parse.
  const auto start = location.find("://");
  if (start == std::string_view::npos) return fail("location must be an absolute http(s) URL");
  const auto authority = location.substr(
      start + 3, location.find_first_of("/?#", start + 3) - std::min(location.size(), start + 3));
  if (u->has_userinfo() || authority.find('@') != std::string_view::npos)
    return fail("location must not carry user info (user:password@)");
  for (const unsigned char c : authority)
    if (c == '%' || c < 0x20 || c >= 0x7f)
      return fail("location's host must be plain: no percent-encoding or control characters");
  const std::string_view path = u->encoded_path();
  if (!path.empty() && path.front() != '/') return fail("location must be an absolute http(s) URL");
  std::string host(u->encoded_host());
  for (auto& ch : host) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  // A port that is the scheme's own (or empty) names the same origin as none (RFC 3986 §6.2.3):
  // "https://open.feishu.cn:443/…" is sent, and matched, as "https://open.feishu.cn/…".
  if (u->has_port() && !u->port().empty()) {
    const std::uint16_t default_port = scheme == "https" ? 443 : 80;
    const auto number = u->port_number();  // 0 when the text is no 16-bit number
    if (number != default_port)
      host += ":" + (number != 0 ? std::to_string(number) : std::string(u->port()));
  }
  n.url = scheme + "://" + host + remove_dot_segments(normalize_percent(path));
  if (u->has_query()) n.url += "?" + normalize_percent(u->encoded_query());
  return n;
}

bool allows_method(const route_config& r, std::string_view method) {
  return r.methods.empty() ||
         std::find(r.methods.begin(), r.methods.end(), method) != r.methods.end();
}

std::optional<bitable_table_ref> bitable_table_of(std::string_view path) {
  static const RE2 bitable(R"(/open-apis/bitable/v1/apps/([^/?#]+)/tables/([^/?#]+)(/.*)?)");
  bitable_table_ref ref;
  if (!RE2::FullMatch(re2::StringPiece(path.data(), path.size()), bitable, &ref.app, &ref.table))
    return std::nullopt;
  return ref;
}

std::string resource_key(const route_config& r, std::string_view location) {
  if (r.serialize_by.empty()) return "";
  auto u = boost::urls::parse_absolute_uri(location);
  if (!u) return std::string(location);
  std::string origin = std::string(u->scheme()) + "://" + std::string(u->encoded_host_and_port());
  if (r.serialize_by == "host") return origin;
  const std::string path(u->encoded_path());
  if (r.serialize_by == "bitable_table")
    if (auto t = bitable_table_of(path)) return "bitable:" + t->app + "/" + t->table;
  return origin + path;
}

}  // namespace resendd
