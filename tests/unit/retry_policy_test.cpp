#include "queue/retry_policy.h"

#include <gtest/gtest.h>

#include <set>

using namespace resendd;
using st = next_step::state;

namespace {
const sys_time t0{millis{1'800'000'000'000}};
route_settings settings() {
  route_settings s;
  s.max_attempts = 5;
  s.retry_base = millis{1000};
  s.retry_cap = millis{8000};
  s.max_age = millis{3'600'000};
  s.rate_limit_cap = millis{600'000};
  return s;
}
verdict v(outcome_kind k, std::optional<millis> wait = {}) { return {k, {}, "why", wait}; }
}  // namespace

TEST(RetryPolicy, BackoffDoublesWithJitterUpToTheCap) {
  const auto s = settings();
  for (std::uint64_t j : {0ull, 1ull, 12345ull, ~0ull}) {
    EXPECT_GE(backoff_delay(1, s, j), millis{500});
    EXPECT_LE(backoff_delay(1, s, j), millis{1000});
    EXPECT_GE(backoff_delay(3, s, j), millis{2000});
    EXPECT_LE(backoff_delay(3, s, j), millis{4000});
    EXPECT_GE(backoff_delay(30, s, j), millis{4000});
    EXPECT_LE(backoff_delay(30, s, j), millis{8000});
  }
}

TEST(RetryPolicy, SuccessAndPermanentFailure) {
  const auto s = settings();
  EXPECT_EQ(next_retry(v(outcome_kind::succeeded), {0, 0, 0, t0}, t0, s, false, 0).to,
            st::succeeded);
  auto d = next_retry(v(outcome_kind::dead), {0, 0, 0, t0}, t0, s, false, 0);
  EXPECT_EQ(d.to, st::dead);
  EXPECT_EQ(d.reason, "why");
}

TEST(RetryPolicy, RetriesUntilMaxAttempts) {
  const auto s = settings();
  for (int before = 0; before < 4; ++before) {
    auto n = next_retry(v(outcome_kind::retry), {before, 0, 0, t0}, t0, s, false, 0);
    EXPECT_EQ(n.to, st::queued);
    EXPECT_TRUE(n.counted);
    EXPECT_GT(n.next_attempt_at, t0);
  }
  auto last = next_retry(v(outcome_kind::retry), {4, 0, 0, t0}, t0, s, false, 0);
  EXPECT_EQ(last.to, st::dead);
  EXPECT_NE(last.reason.find("max_attempts"), std::string::npos);
}

TEST(RetryPolicy, RateLimitsCostNoAttemptAndHonourTheHint) {
  const auto s = settings();
  auto n =
      next_retry(v(outcome_kind::rate_limited, millis{30'000}), {4, 0, 0, t0}, t0, s, false, 0);
  EXPECT_EQ(n.to, st::queued);
  EXPECT_FALSE(n.counted);
  EXPECT_EQ(n.next_attempt_at, t0 + millis{30'000});  // jitter 0: the hint itself
  auto capped =
      next_retry(v(outcome_kind::rate_limited, millis{86'400'000}), {0, 0, 0, t0}, t0, s, false, 0);
  EXPECT_EQ(capped.next_attempt_at, t0 + s.rate_limit_cap);
  auto no_hint = next_retry(v(outcome_kind::rate_limited), {0, 3, 0, t0}, t0, s, false, 0);
  EXPECT_GE(no_hint.next_attempt_at, t0 + millis{8000});
}

TEST(RetryPolicy, AHintOnlyBoundsTheRateLimitBackoffFromBelow) {
  const auto s = settings();
  // "Retry-After: 0" waits the backoff the policy would choose, growing with each rate-limited
  // try of the job (base 1 s, cap 8 s here), never 0.
  for (int before = 0; before < 6; ++before)
    for (std::uint64_t j : {0ull, 777ull, ~0ull}) {
      const auto n =
          next_retry(v(outcome_kind::rate_limited, millis{0}), {0, before, 0, t0}, t0, s, false, j);
      const millis d{std::min<std::int64_t>(8000, 1000LL << before)};
      EXPECT_GE(n.next_attempt_at - t0, d) << before;
      EXPECT_LE(n.next_attempt_at - t0, 2 * d) << before;
    }
  // A hint longer than the backoff wins; jitter spreads the jobs it stopped.
  std::set<std::int64_t> seconds;
  for (std::uint64_t j = 0; j < 50; ++j) {
    const auto n = next_retry(v(outcome_kind::rate_limited, millis{1000}), {0, 0, 0, t0}, t0, s,
                              false, j * 0x9E3779B97F4A7C15ull);
    seconds.insert((n.next_attempt_at - t0).count() / 100);
  }
  EXPECT_GT(seconds.size(), 3u);  // 50 jobs under one 1 s limit land in several 100 ms slots
}

TEST(RetryPolicy, RateLimitedTriesAreCapped) {
  auto s = settings();
  s.max_rate_limited = 3;
  EXPECT_EQ(next_retry(v(outcome_kind::rate_limited), {0, 1, 0, t0}, t0, s, false, 0).to,
            st::queued);
  const auto n = next_retry(v(outcome_kind::rate_limited), {0, 2, 0, t0}, t0, s, false, 0);
  EXPECT_EQ(n.to, st::dead);
  EXPECT_NE(n.reason.find("max_rate_limited"), std::string::npos);
}

TEST(RetryPolicy, MaxAgeEndsEverything) {
  const auto s = settings();
  const auto late = t0 + s.max_age;
  auto n = next_retry(v(outcome_kind::rate_limited), {0, 0, 0, t0}, late, s, false, 0);
  EXPECT_EQ(n.to, st::dead);
  EXPECT_NE(n.reason.find("max_age"), std::string::npos);
  // Just before the deadline, the next try is scheduled no later than the deadline.
  auto close = next_retry(v(outcome_kind::retry), {0, 0, 0, t0}, late - millis{10}, s, false, 0);
  EXPECT_EQ(close.to, st::queued);
  EXPECT_LE(close.next_attempt_at, late);
}

TEST(RetryPolicy, RefreshCredentials) {
  const auto s = settings();
  auto no = next_retry(v(outcome_kind::refresh_credentials), {0, 0, 0, t0}, t0, s, false, 0);
  EXPECT_EQ(no.to, st::dead);
  EXPECT_NE(no.reason.find("expired"), std::string::npos);
  auto yes = next_retry(v(outcome_kind::refresh_credentials), {0, 0, 0, t0}, t0, s, true, 0);
  EXPECT_EQ(yes.to, st::queued);
  EXPECT_EQ(yes.next_attempt_at, t0);
  EXPECT_FALSE(yes.counted);
  EXPECT_TRUE(yes.auth_refresh);
  auto again = next_retry(v(outcome_kind::refresh_credentials), {0, 0, max_auth_refreshes, t0}, t0,
                          s, true, 0);
  EXPECT_EQ(again.to, st::dead);
}

TEST(RetryPolicy, RetryAfterOnAFailureIsALowerBound) {
  const auto s = settings();
  auto n = next_retry(v(outcome_kind::retry, millis{20'000}), {0, 0, 0, t0}, t0, s, false, 0);
  EXPECT_EQ(n.next_attempt_at, t0 + millis{20'000});
  EXPECT_TRUE(n.counted);
  auto small = next_retry(v(outcome_kind::retry, millis{1}), {0, 0, 0, t0}, t0, s, false, 0);
  EXPECT_GE(small.next_attempt_at, t0 + millis{500});  // the backoff still applies
}
