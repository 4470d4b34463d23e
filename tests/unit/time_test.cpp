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
