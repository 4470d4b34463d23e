#pragma once
// The route table: which locations resendd will deliver to, and how. Built from config, and
// rebuilt by replace() when the daemon reloads it (SIGHUP). Used on the io thread only; a set of
// routes replaced while a delivery still holds one of its routes lives on through hold().
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace re2 {
class RE2;
}

namespace resendd {

struct route {
  route_config cfg;
  route_settings settings;
  std::unique_ptr<re2::RE2> pattern;  // RE2: linear time on any input
};

class route_table {
 public:
  explicit route_table(const config& c);
  ~route_table();
  route_table(const route_table&) = delete;
  route_table& operator=(const route_table&) = delete;

  // The first route whose pattern matches the whole location, or nullptr. With [alerts] webhook
  // set, the first route is resendd's own alert route (exactly the webhook's URL, POST).
  const route* match(std::string_view location) const;
  const std::vector<std::unique_ptr<route>>& all() const { return *routes_; }
  // Builds the routes of `c` (throws std::invalid_argument as the constructor does) and puts
  // them in place of the current ones.
  void replace(const config& c);
  // Keeps the current routes (and so every route* match() gave) alive while it is held.
  std::shared_ptr<const void> hold() const { return routes_; }

 private:
  std::shared_ptr<std::vector<std::unique_ptr<route>>> routes_;
};

// The URL the client will send, which is what routes match: scheme and host lower-cased,
// percent-encoding normalized (unreserved characters decoded), dot segments removed (RFC 3986
// §5.2.4). `error` says why a location may not be sent at all: not an absolute http(s) URL, user
// info, or a host with percent-encoding or control characters (`evil.com%00.example.com`,
// `127.0.0.1%2f.example.com` name hosts other than the text shows).
struct normalized_location {
  std::string url;
  std::string error;
};
normalized_location normalize_location(std::string_view location);

// Whether the route lets `method` (upper case) through: an empty list allows every method.
bool allows_method(const route_config& r, std::string_view method);

// The Bitable base (app token) and table a URL path names ("/open-apis/bitable/v1/apps/A/tables/
// T/…"), or nullopt for any other path.
struct bitable_table_ref {
  std::string app;
  std::string table;
};
std::optional<bitable_table_ref> bitable_table_of(std::string_view path);

// The serialization key of a location under a route's `serialize_by`, "" when none:
// "host" -> "https://open.feishu.cn", "path" -> host + path,
// "bitable_table" -> "bitable:{app_token}/{table_id}" (host + path if the path is not Bitable's).
std::string resource_key(const route_config& r, std::string_view location);

}  // namespace resendd
