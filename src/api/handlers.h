#pragma once
// The HTTP API: thin handlers that parse, call a service and translate the answer to HTTP.
// Routes: POST /resend, POST /token, GET /jobs, GET /jobs/{id}, POST /jobs/{id}/retry,
// POST /jobs/{id}/cancel, POST /jobs/retry?state=dead, POST /jobs/purge, GET /healthz,
// GET /readyz, GET /metrics.
// Handlers reach the queue only through queue_service (never the store) and never block: every
// store call is awaited with a deadline.
#include <boost/asio/awaitable.hpp>
#include <functional>

#include "config/config.h"
#include "http/types.h"
#include "util/time.h"

namespace boost::asio {
class thread_pool;
}

namespace resendd {

class queue_service;
class route_table;
class dispatcher;
class token_service;
class first_answers;

struct api_services {
  const config& cfg;
  queue_service& queue;
  const route_table& routes;
  const dispatcher& dispatch;  // figures for /metrics
  const clock& clk;
  token_service* tokens;  // null: /token answers 503 (not configured)
  bool public_listener = false;      // listening beyond loopback: /token needs a Bearer token too
  first_answers* answers = nullptr;  // null: Prefer: wait is ignored
  // Where a large /resend body (queue/intake.h large_request_bytes) is checked (JSON parse,
  // json_parse paths), so that the network thread is not held for it; null: on the caller's
  // thread.
  boost::asio::thread_pool* work_pool = nullptr;
};

class api {
 public:
  explicit api(api_services s) : s_(std::move(s)) {}
  boost::asio::awaitable<outgoing_response> handle(incoming_request req);

 private:
  boost::asio::awaitable<outgoing_response> resend(const incoming_request& req);
  boost::asio::awaitable<outgoing_response> token(const incoming_request& req);
  boost::asio::awaitable<outgoing_response> jobs(const incoming_request& req,
                                                 const std::string& path);
  boost::asio::awaitable<outgoing_response> job(const std::string& id);
  boost::asio::awaitable<outgoing_response> list(const std::string& target);
  boost::asio::awaitable<outgoing_response> job_action(const std::string& id,
                                                       const std::string& action,
                                                       const std::string& target);
  boost::asio::awaitable<outgoing_response> bulk_action(const std::string& action,
                                                        const std::string& target);
  boost::asio::awaitable<outgoing_response> readyz();
  boost::asio::awaitable<outgoing_response> route(incoming_request req);
  boost::asio::awaitable<outgoing_response> render_metrics();
  bool authorized(const incoming_request& req) const;

  api_services s_;
};

}  // namespace resendd
