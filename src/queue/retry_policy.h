#pragma once
// The retry policy: one pure function from (verdict, job progress, now, route settings) to the
// job's next state and time. Every path that finishes an attempt goes through it.
//
// Schedule, for the n-th counted attempt that failed (n = 1, 2, ...):
//   delay(n) = min(retry_cap, retry_base * 2^(n-1)), then "equal jitter": a uniformly random
//   point in [delay/2, delay]. With the defaults (2s, 30m): ~2s, 4s, 8s, ... 17m, then 30m.
//   A Retry-After on the answer (a 503, say) makes the wait at least that (capped as below).
// Rate-limited answers cost no attempt but are capped at max_rate_limited per job: the wait
//   grows with the job's rate-limited tries as the backoff does, and a hint from the destination
//   (Retry-After, x-ogw-ratelimit-reset; capped at rate_limit_cap) only bounds it from below
//   (rate_limit_delay). "Retry-After: 0" therefore never makes a hot loop.
// not_sent (credentials could not be minted): costs no attempt; backs off on the job's free
//   tries; only max_age ends it.
// refresh_credentials: retry at once without using an attempt when the route can mint a fresh
//   token and the job has refreshed fewer than max_auth_refreshes times; otherwise dead.
// The job is dead when the verdict is permanent, when max_attempts counted tries are used up,
// or when max_age since creation is used up (the last try is scheduled no later than that).
#include <cstdint>
#include <optional>
#include <string>

#include "config/config.h"
#include "queue/classify.h"
#include "util/time.h"

namespace resendd {

inline constexpr int max_auth_refreshes = 3;

struct job_progress {
  int attempts = 0;        // counted attempts before this one
  int free_attempts = 0;   // rate-limited / refresh tries before this one
  int auth_refreshes = 0;  // refresh_credentials retries before this one
  sys_time created_at;
};

struct next_step {
  enum class state { queued, succeeded, dead } to = state::queued;
  sys_time next_attempt_at;   // when queued
  bool counted = true;        // whether this attempt counts toward max_attempts
  bool auth_refresh = false;  // this retry is a credential refresh
  std::string reason;         // last_error ("" on success)
};

// `jitter` is any uniformly random 64-bit value (passed in to keep this function pure).
next_step next_retry(const verdict& v, const job_progress& before, sys_time now,
                     const route_settings& s, bool can_refresh, std::uint64_t jitter);

// The wait after the n-th rate-limited try (n >= 1): w = max(hint capped at rate_limit_cap,
// min(retry_cap, retry_base * 2^(n-1))), plus a uniformly random [0, w], so that jobs stopped
// by one limit come back spread over w, not in the same second.
millis rate_limit_delay(int n, std::optional<millis> hint, const route_settings& s,
                        std::uint64_t jitter);

// The jittered backoff before counted attempt n+1 (n >= 1).
millis backoff_delay(int n, const route_settings& s, std::uint64_t jitter);

}  // namespace resendd
