#pragma once
// Classification of one delivery attempt: what the destination's answer means for the job.
// Pure code; the Feishu code table lives in classify.cpp with the source of every entry.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/types.h"
#include "util/time.h"

namespace resendd {

enum class outcome_kind {
  succeeded,
  retry,                // try again after backoff; counts as an attempt
  rate_limited,         // try again after the advertised wait or backoff; costs no attempt
  refresh_credentials,  // the access token was refused: mint a fresh one and retry at once
  dead,                 // permanent: no further try will succeed
  // Nothing was sent (the route's credentials could not be minted): costs no attempt, backs
  // off. Stored and logged as "retry" (the schema's outcome list; it is one).
  not_sent,
};
std::string_view to_string(outcome_kind k);

struct verdict {
  outcome_kind kind = outcome_kind::retry;
  std::optional<std::int64_t> feishu_code;
  std::string reason;          // short, for last_error: "HTTP 503", "feishu 1254060: ..."
  std::optional<millis> wait;  // rate_limited, retry: what the destination asked us to wait
};

// profile "generic": 2xx succeeded; 408, 425, 5xx retry; 429 rate_limited; other statuses dead.
// profile "feishu": the body's `code` decides (0 = succeeded, others per the table); an answer
// that is not JSON or has no integer `code` falls back to the generic rules, except that a 2xx
// without code 0 is never a success.
// Transport errors, time-outs and failed TLS verification retry (a certificate may be fixed);
// a blocked destination (address policy) is dead.
verdict classify(std::string_view profile, const attempt_result& r);

}  // namespace resendd
