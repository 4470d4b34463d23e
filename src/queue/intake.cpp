#include "queue/intake.h"

#include <arpa/inet.h>
#include <re2/re2.h>

#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include "http/address_policy.h"
#include "queue/json_path.h"
#include "queue/routes.h"
#include "util/random.h"
#include "util/utf8.h"

namespace resendd {
namespace {

namespace bjson = boost::json;

bool is_token(std::string_view s) {
  if (s.empty() || s.size() > 256) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) ||
          std::string_view("!#$%&'*+-.^_`|~").find(char(c)) != std::string_view::npos))
      return false;
  return true;
}

bool is_header_value(std::string_view s) {
  if (s.size() > 8192) return false;
  for (unsigned char c : s)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

intake_error bad(std::string code, std::string message) {
  return {400, std::move(code), std::move(message)};
}

// A member of the body (read with Boost.JSON, see parse_as_delivery_would) not given, or null.
bool absent(const bjson::value* v) { return !v || v->is_null(); }

std::optional<intake_error> check_headers(const bjson::object& req) {
  const auto* hv = req.if_contains("headers");
  if (absent(hv)) return std::nullopt;
  const auto* h = hv->if_object();
  if (!h) return bad("bad_headers", "headers must be an object of strings");
  if (h->size() > 100) return bad("bad_headers", "more than 100 headers");
  for (const auto& m : *h) {
    const std::string_view name = m.key();
    const auto* value = m.value().if_string();
    if (!value)
      return bad("bad_headers",
                 "header " + std::string(utf8_prefix(name, 100)) + " must be a string");
    if (!is_token(name))
      return bad("bad_headers",
                 "header name \"" + std::string(utf8_prefix(name, 100)) + "\" is not valid");
    if (!is_header_value(*value))
      return bad("bad_headers",
                 "header " + std::string(name) + " has a control character or is too long");
  }
  return std::nullopt;
}

std::variant<std::vector<std::string>, intake_error> read_commands(const bjson::object& req) {
  std::vector<std::string> paths;
  const auto* cv = req.if_contains("commands");
  if (absent(cv)) return paths;
  const auto* c = cv->if_object();
  if (!c) return bad("bad_commands", "commands must be an object");
  for (const auto& m : *c) {
    if (m.key() != "json_parse")
      return bad("bad_commands",
                 "unknown command \"" + std::string(utf8_prefix(m.key(), 100)) + "\"");
    if (m.value().is_null()) continue;
    const auto* list = m.value().if_array();
    if (!list) return bad("bad_commands", "commands.json_parse must be a list of strings");
    for (const auto& p : *list) {
      const auto* text = p.if_string();
      if (!text) return bad("bad_commands", "commands.json_parse must be a list of strings");
      paths.emplace_back(*text);
    }
  }
  if (paths.size() > 64) return bad("bad_commands", "more than 64 json_parse paths");
  return paths;
}

}  // namespace

bool takes_client_token(std::string_view location) {
  static const RE2 create(
      R"(https?://[^/]+/open-apis/bitable/v1/apps/[^/?#]+/tables/[^/?#]+/records(/batch_create)?([?].*)?)");
  return RE2::FullMatch(re2::StringPiece(location.data(), location.size()), create);
}

namespace {

// The address a URL's host names without DNS: an IPv6 or IPv4 literal, or a host that the
// resolver would read as one (inet_aton's spellings: 2130706433, 0x7f.1, 0177.0.0.1).
std::optional<boost::asio::ip::address> literal_address(const boost::urls::url_view& url) {
  boost::system::error_code ec;
  if (url.host_type() == boost::urls::host_type::ipv6 ||
      url.host_type() == boost::urls::host_type::ipv4) {
    auto a = boost::asio::ip::make_address(std::string(url.host_address()), ec);
    if (!ec) return a;
    return std::nullopt;
  }
  const std::string host(url.encoded_host());
  in_addr v4{};
  if (!host.empty() && ::inet_aton(host.c_str(), &v4) != 0)
    return boost::asio::ip::address_v4(ntohl(v4.s_addr));
  return std::nullopt;
}

}  // namespace

std::variant<checked_body, intake_error> check_body(std::string_view body,
                                                    std::string_view idempotency_key) {
  if (!json_depth_within(body)) return bad("bad_json", "body nests deeper than 64 levels");
  // The document lives in this buffer (and the heap past it), all freed at once on return.
  unsigned char buffer[8192];
  bjson::monotonic_resource mr(buffer, sizeof buffer);
  auto doc = parse_as_delivery_would(body, &mr);
  if (!doc) return bad("bad_json", "body is not valid JSON");
  const auto* req = doc->if_object();
  if (!req) return bad("bad_json", "body must be a JSON object");

  const auto* loc = req->if_contains("location");
  if (!loc || !loc->is_string())
    return bad("bad_location", "location is required and must be a string");
  // Routes decide on the URL the client will send, so the job keeps that form.
  auto normalized = normalize_location(loc->get_string());
  if (!normalized.error.empty()) return bad("bad_location", normalized.error);
  std::string location = std::move(normalized.url);
  if (!boost::urls::parse_absolute_uri(location))
    return bad("bad_location", "location must be an absolute http(s) URL");

  std::string method = "POST";
  if (const auto* m = req->if_contains("method"); !absent(m)) {
    if (!m->is_string() || !is_token(m->get_string()))
      return bad("bad_method", "method must be an HTTP method name");
    method = std::string(m->get_string());
    for (auto& ch : method) ch = char(std::toupper(static_cast<unsigned char>(ch)));
  }
  if (auto e = check_headers(*req)) return *e;
  auto commands = read_commands(*req);
  if (auto* e = std::get_if<intake_error>(&commands)) return *e;
  const auto& paths = std::get<std::vector<std::string>>(commands);
  // Checked as delivery will apply them to the stored text; `doc` (read above and not needed
  // below) may be changed here, so no copy of it is made.
  if (auto err = check_json_parse_boost(*doc, paths)) return bad("bad_path", *err);
  if (idempotency_key.size() > 256 || !is_header_value(idempotency_key) ||
      !valid_utf8(idempotency_key))
    return bad("bad_idempotency_key",
               "Idempotency-Key must be at most 256 bytes of printable UTF-8 text");

  return checked_body{std::move(location), std::move(method)};
}

std::variant<store::new_job, intake_error> prepare_job(checked_body checked, std::string_view body,
                                                       std::string_view idempotency_key,
                                                       const route_table& routes, sys_time now) {
  const std::string& location = checked.location;
  const std::string& method = checked.method;
  auto url = boost::urls::parse_absolute_uri(location);
  if (!url) return bad("bad_location", "location must be an absolute http(s) URL");
  const route* r = routes.match(location);
  if (!r) return intake_error{403, "no_route", "location matches no configured route"};
  if (r->cfg.internal)
    return intake_error{403, "no_route",
                        "location is resendd's alert webhook, which takes no jobs"};
  if (!allows_method(r->cfg, method))
    return intake_error{403, "method_not_allowed",
                        "route " + r->cfg.name + " does not allow method " + method};
  // An address literal the route may not reach can never be delivered: refused now, not at the
  // first attempt (a name that resolves there still dies at the attempt).
  if (!r->cfg.allow_private_networks) {
    if (auto a = literal_address(*url); a && !is_public_address(*a))
      return intake_error{403, "private_address",
                          "location is an address this route may not reach (loopback, private, "
                          "link-local or reserved); allow_private_networks is off"};
  }

  store::new_job job;
  job.id = uuid_v7(now);
  job.route = r->cfg.name;
  job.method = method;
  job.location = location;
  job.request = std::string(body);
  if (!idempotency_key.empty()) job.idempotency_key = std::string(idempotency_key);
  // Feishu idempotency: one client_token per job, sent on every attempt, unless the bot set one.
  // One the bot set must be a UUIDv4, given once: Feishu answers anything else with 1254037, and
  // an empty one (a template's unfilled variable) might be read as none, leaving retries of the
  // write unguarded. Refused now, not found dead (or doubled) later.
  if (r->cfg.profile == "feishu" && takes_client_token(location)) {
    const auto params = url->params();
    if (!params.contains("client_token")) {
      job.client_token = uuid_v4();
    } else if (params.count("client_token") != 1 ||
               !is_uuid_v4((*params.find("client_token")).value)) {
      return bad("bad_location",
                 "client_token must be one UUIDv4 (Feishu refuses anything else with 1254037), "
                 "or left out: then resendd gives the job one");
    }
  }
  if (auto key = resource_key(r->cfg, location); !key.empty()) job.resource_key = std::move(key);
  return job;
}

std::variant<store::new_job, intake_error> prepare_job(std::string_view body,
                                                       std::string_view idempotency_key,
                                                       const route_table& routes, sys_time now) {
  auto checked = check_body(body, idempotency_key);
  if (auto* e = std::get_if<intake_error>(&checked)) return *e;
  return prepare_job(std::move(std::get<checked_body>(checked)), body, idempotency_key, routes,
                     now);
}

}  // namespace resendd
