#pragma once
// The HTTP API: thin handlers that parse, call a service and translate the answer to HTTP.
// Routes: POST /resend, POST /token, GET /jobs, GET /jobs/{id}, POST /jobs/{id}/retry,
// POST /jobs/{id}/cancel, GET /healthz, GET /readyz, GET /metrics.
#include <boost/asio/awaitable.hpp>
#include <functional>

#include "config/config.h"
#include "http/types.h"
#include "util/time.h"

namespace resendd {

namespace store {
class job_store;
}
class route_table;
class dispatcher;

using token_handler =
    std::function<boost::asio::awaitable<outgoing_response>(const incoming_request&)>;

struct api_services {
  const config& cfg;
  store::job_store& store;
  const route_table& routes;
  dispatcher& dispatch;
  const clock& clk;
  token_handler token;  // null: /token answers 503 (not configured)
};

class api {
 public:
  explicit api(api_services s) : s_(std::move(s)) {}
  boost::asio::awaitable<outgoing_response> handle(incoming_request req);

 private:
  boost::asio::awaitable<outgoing_response> resend(const incoming_request& req);
  outgoing_response job(const std::string& id);
  outgoing_response jobs(const std::string& query);
  outgoing_response job_action(const std::string& id, const std::string& action);
  outgoing_response metrics();
  bool authorized(const incoming_request& req) const;

  api_services s_;
};

}  // namespace resendd
