#include "queue/routes.h"

#include <re2/re2.h>

#include <boost/url/parse.hpp>
#include <stdexcept>

namespace resendd {

route_table::route_table(const config& c) {
  for (const auto& rc : c.routes) {
    auto r = std::make_unique<route>();
    r->cfg = rc;
    r->settings = effective_settings(c, rc);
    RE2::Options opts;
    opts.set_log_errors(false);
    r->pattern = std::make_unique<RE2>(rc.match, opts);
    if (!r->pattern->ok()) throw std::invalid_argument("route " + rc.name + ": bad pattern");
    routes_.push_back(std::move(r));
  }
}

route_table::~route_table() = default;

const route* route_table::match(std::string_view location) const {
  for (const auto& r : routes_)
    if (RE2::FullMatch(re2::StringPiece(location.data(), location.size()), *r->pattern))
      return r.get();
  return nullptr;
}

std::string resource_key(const route_config& r, std::string_view location) {
  if (r.serialize_by.empty()) return "";
  auto u = boost::urls::parse_absolute_uri(location);
  if (!u) return std::string(location);
  std::string origin = std::string(u->scheme()) + "://" + std::string(u->encoded_host_and_port());
  if (r.serialize_by == "host") return origin;
  const std::string path(u->encoded_path());
  if (r.serialize_by == "bitable_table") {
    static const RE2 bitable(R"(/open-apis/bitable/v1/apps/([^/]+)/tables/([^/]+)(/.*)?)");
    std::string app, table;
    if (RE2::FullMatch(path, bitable, &app, &table)) return "bitable:" + app + "/" + table;
  }
  return origin + path;
}

}  // namespace resendd
