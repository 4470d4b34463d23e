#pragma once
// Fresh destination credentials for routes with `credentials = "feishu_tenant"` or "coze":
// the delivery path asks for a bearer token at every attempt and drops one the destination
// refused. Implementations cache and refresh single-flight; they are thread-safe.
#include <boost/asio/awaitable.hpp>
#include <string>
#include <string_view>

namespace resendd {

struct bearer_result {
  std::string token;  // empty on failure
  std::string error;  // why no token (safe to log: no secrets)
};

class credential_source {
 public:
  virtual ~credential_source() = default;
  virtual boost::asio::awaitable<bearer_result> bearer(std::string_view kind) = 0;
  // The destination refused `token`: never hand it out again.
  virtual void invalidate(std::string_view kind, const std::string& token) = 0;
  virtual bool can_mint(std::string_view kind) const = 0;
};

}  // namespace resendd
