#pragma once
// Intake of POST /resend: turns a request body into a job ready to store, or into the error the
// bot should see. Everything a job needs to be deliverable is checked here, so that nothing is
// queued that cannot be sent: JSON shape, location, route, headers, json_parse paths.
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "store/queue_store.h"
#include "util/time.h"

namespace resendd {

class route_table;

struct intake_error {
  int status;
  std::string code;
  std::string message;
};

// A request at least this large is parsed off the network thread (on the daemon's work pool):
// its check at intake, its build and scrub at delivery.
inline constexpr std::size_t large_request_bytes = 64 * 1024;

// What the body says, once checked: everything but the route.
struct checked_body {
  std::string location;  // normalized: what the client sends, and what routes match
  std::string method;    // upper case
};

// The first half of intake, which reads the whole body (JSON shape, depth, headers, json_parse
// paths, the Idempotency-Key): the costly half for a large body. Touches nothing shared, so it
// may run on any thread. `idempotency_key` is the Idempotency-Key header ("" when absent).
std::variant<checked_body, intake_error> check_body(std::string_view body,
                                                    std::string_view idempotency_key);
// The second half: the route, the address, the job. On the thread that owns `routes`.
std::variant<store::new_job, intake_error> prepare_job(checked_body checked, std::string_view body,
                                                       std::string_view idempotency_key,
                                                       const route_table& routes, sys_time now);
// Both halves, one after the other.
std::variant<store::new_job, intake_error> prepare_job(std::string_view body,
                                                       std::string_view idempotency_key,
                                                       const route_table& routes, sys_time now);

// True for Bitable record create / batch_create URLs, which take a client_token.
bool takes_client_token(std::string_view location);

}  // namespace resendd
