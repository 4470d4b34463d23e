#pragma once
// The route table: which locations resendd will deliver to, and how. Built once from config;
// immutable afterwards, so it is safe to share between threads.
#include <memory>
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

  // The first route whose pattern matches the whole location, or nullptr.
  const route* match(std::string_view location) const;
  const std::vector<std::unique_ptr<route>>& all() const { return routes_; }

 private:
  std::vector<std::unique_ptr<route>> routes_;
};

// The serialization key of a location under a route's `serialize_by`, "" when none:
// "host" -> "https://open.feishu.cn", "path" -> host + path,
// "bitable_table" -> "bitable:{app_token}/{table_id}" (host + path if the path is not Bitable's).
std::string resource_key(const route_config& r, std::string_view location);

}  // namespace resendd
