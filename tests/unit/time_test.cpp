#include "util/time.h"

#include <gtest/gtest.h>

using namespace resendd;

TEST(Time, Iso8601RoundTripsAndSortsAsText) {
  const sys_time t{millis{1'790'000'000'123}};
  const auto s = to_iso8601(t);
  EXPECT_EQ(s.size(), 24u);
  EXPECT_EQ(s.back(), 'Z');
  EXPECT_EQ(from_iso8601(s), t);
  EXPECT_LT(to_iso8601(t), to_iso8601(t + millis{1}));
  EXPECT_EQ(to_iso8601(sys_time{}), "1970-01-01T00:00:00.000Z");
}

TEST(Time, Iso8601RejectsGarbage) {
  EXPECT_FALSE(from_iso8601(""));
  EXPECT_FALSE(from_iso8601("2026-13-01T00:00:00.000Z"));
  EXPECT_FALSE(from_iso8601("2026-01-01 00:00:00.000Z"));
  EXPECT_FALSE(from_iso8601("2026-01-01T00:00:00.000"));
  EXPECT_TRUE(from_iso8601("2026-01-01T00:00:00Z"));
}

TEST(Time, DurationsParseEveryUnit) {
  EXPECT_EQ(parse_duration("500ms"), millis{500});
  EXPECT_EQ(parse_duration("30s"), millis{30'000});
  EXPECT_EQ(parse_duration("5m"), millis{300'000});
  EXPECT_EQ(parse_duration("48h"), millis{48 * 3'600'000LL});
  EXPECT_EQ(parse_duration("7d"), millis{7 * 86'400'000LL});
  EXPECT_EQ(parse_duration("0"), millis{0});
  for (const char* bad : {"", "s", "10", "-1s", "1.5s", "10 s", "10x", "99999999999999999999d"})
    EXPECT_FALSE(parse_duration(bad)) << bad;
}

TEST(Time, DurationsFormatExactly) {
  EXPECT_EQ(format_duration(millis{90'000}), "90s");
  EXPECT_EQ(format_duration(millis{7'200'000}), "2h");
  EXPECT_EQ(format_duration(millis{1500}), "1500ms");
  EXPECT_EQ(format_duration(millis{0}), "0s");
}

TEST(Time, ManualClockMovesOnlyWhenTold) {
  manual_clock c(sys_time{millis{1000}});
  EXPECT_EQ(c.now(), sys_time{millis{1000}});
  c.advance(millis{500});
  EXPECT_EQ(c.now(), sys_time{millis{1500}});
}

TEST(Time, WaitHintsAreParsedStrictly) {
  const sys_time now = *from_iso8601("1994-11-06T08:49:00.000Z");
  EXPECT_EQ(parse_wait_hint("0", true, now), millis{0});
  EXPECT_EQ(parse_wait_hint("120", false, now), millis{120'000});
  for (const char* bad : {"0.5", "-1", " 5", "5 ", "+5", "5s", "", "12345678901", "1e3"})
    EXPECT_FALSE(parse_wait_hint(bad, true, now)) << bad;
  // Retry-After's HTTP-date form, only where allowed, and only the preferred format.
  EXPECT_EQ(parse_wait_hint("Sun, 06 Nov 1994 08:49:37 GMT", true, now), millis{37'000});
  EXPECT_FALSE(parse_wait_hint("Sun, 06 Nov 1994 08:49:37 GMT", false, now));
  EXPECT_EQ(parse_wait_hint("Sun, 06 Nov 1994 08:48:00 GMT", true, now), millis{0});  // past
  EXPECT_FALSE(parse_wait_hint("Mon, 06 Nov 1994 08:49:37 GMT", true, now));  // wrong weekday
  EXPECT_FALSE(parse_wait_hint("Sunday, 06-Nov-94 08:49:37 GMT", true, now));
  EXPECT_FALSE(parse_wait_hint("Sun Nov  6 08:49:37 1994", true, now));
  EXPECT_FALSE(parse_wait_hint("Sun, 31 Nov 1994 08:49:37 GMT", true, now));
  EXPECT_FALSE(parse_wait_hint("Sun, 06 Nov 1994 24:49:37 GMT", true, now));
  EXPECT_FALSE(parse_wait_hint("Sun, 06 Nov 1994 08:49:37 UTC", true, now));
}
