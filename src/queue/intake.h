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

// `idempotency_key` is the Idempotency-Key header ("" when absent).
std::variant<store::new_job, intake_error> prepare_job(std::string_view body,
                                                       std::string_view idempotency_key,
                                                       const route_table& routes, sys_time now);

// True for Bitable record create / batch_create URLs, which take a client_token.
bool takes_client_token(std::string_view location);

}  // namespace resendd
