#include "queue/retry_policy.h"

#include <algorithm>

namespace resendd {

millis backoff_delay(int n, const route_settings& s, std::uint64_t jitter) {
  std::int64_t d = s.retry_base.count();
  for (int i = 1; i < n && d < s.retry_cap.count(); ++i) d *= 2;
  d = std::min(d, s.retry_cap.count());
  const std::int64_t half = d / 2;
  return millis{half + std::int64_t(jitter % std::uint64_t(d - half + 1))};
}

millis rate_limit_delay(int n, std::optional<millis> hint, const route_settings& s,
                        std::uint64_t jitter) {
  std::int64_t d = s.retry_base.count();
  for (int i = 1; i < n && d < s.retry_cap.count(); ++i) d *= 2;
  d = std::max(std::min(d, s.retry_cap.count()),
               std::min(hint.value_or(millis{0}), s.rate_limit_cap).count());
  return millis{d + std::int64_t(jitter % std::uint64_t(d + 1))};
}

next_step next_retry(const verdict& v, const job_progress& before, sys_time now,
                     const route_settings& s, bool can_refresh, std::uint64_t jitter) {
  using st = next_step::state;
  next_step out;
  out.reason = v.reason;
  const sys_time deadline = before.created_at + s.max_age;
  switch (v.kind) {
    case outcome_kind::succeeded:
      out.to = st::succeeded;
      out.reason.clear();
      return out;
    case outcome_kind::dead:
      out.to = st::dead;
      return out;
    case outcome_kind::refresh_credentials:
      out.counted = false;
      if (!can_refresh) {
        out.to = st::dead;
        out.reason =
            "access token expired or invalid and the route has no credentials to mint one (" +
            v.reason + ")";
        return out;
      }
      if (before.auth_refreshes >= max_auth_refreshes) {
        out.to = st::dead;
        out.reason = "access token refused after " + std::to_string(max_auth_refreshes) +
                     " fresh tokens (" + v.reason + ")";
        return out;
      }
      out.auth_refresh = true;
      out.next_attempt_at = now;
      break;
    case outcome_kind::rate_limited: {
      out.counted = false;
      if (before.free_attempts + 1 >= s.max_rate_limited) {
        out.to = st::dead;
        out.reason = "rate limited " + std::to_string(before.free_attempts + 1) +
                     " times (max_rate_limited); last: " + v.reason;
        return out;
      }
      out.next_attempt_at = now + rate_limit_delay(before.free_attempts + 1, v.wait, s, jitter);
      break;
    }
    case outcome_kind::not_sent:
      out.counted = false;
      out.next_attempt_at = now + backoff_delay(before.free_attempts + 1, s, jitter);
      break;
    case outcome_kind::retry:
      if (before.attempts + 1 >= s.max_attempts) {
        out.to = st::dead;
        out.reason =
            "max_attempts (" + std::to_string(s.max_attempts) + ") used up; last: " + v.reason;
        return out;
      }
      // A Retry-After on, say, a 503 is a lower bound on the backoff.
      out.next_attempt_at =
          now + std::max(backoff_delay(before.attempts + 1, s, jitter),
                         std::min(v.wait.value_or(millis{0}), s.rate_limit_cap));
      break;
  }
  if (now >= deadline) {
    out.to = st::dead;
    out.reason = "max_age (" + format_duration(s.max_age) + ") used up; last: " + v.reason;
    return out;
  }
  out.next_attempt_at = std::min(out.next_attempt_at, deadline);
  out.to = st::queued;
  return out;
}

}  // namespace resendd
