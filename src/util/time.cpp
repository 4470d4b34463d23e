#include "util/time.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>

namespace resendd {

sys_time system_clock_source::now() const {
  return std::chrono::time_point_cast<millis>(std::chrono::system_clock::now());
}

std::string to_iso8601(sys_time t) {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", int(ymd.year()),
                unsigned(ymd.month()), unsigned(ymd.day()), int(hms.hours().count()),
                int(hms.minutes().count()), int(hms.seconds().count()),
                int(hms.subseconds().count()));
  return buf;
}

namespace {
bool read_int(std::string_view s, std::size_t pos, std::size_t len, int& out) {
  if (pos + len > s.size()) return false;
  auto r = std::from_chars(s.data() + pos, s.data() + pos + len, out);
  return r.ec == std::errc{} && r.ptr == s.data() + pos + len;
}
}  // namespace

std::optional<sys_time> from_iso8601(std::string_view s) {
  using namespace std::chrono;
  int y, mo, d, h, mi, se, ms = 0;
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
    return std::nullopt;
  if (!read_int(s, 0, 4, y) || !read_int(s, 5, 2, mo) || !read_int(s, 8, 2, d) ||
      !read_int(s, 11, 2, h) || !read_int(s, 14, 2, mi) || !read_int(s, 17, 2, se))
    return std::nullopt;
  std::size_t pos = 19;
  if (s[pos] == '.') {
    if (!read_int(s, pos + 1, 3, ms)) return std::nullopt;
    pos += 4;
  }
  if (pos + 1 != s.size() || s[pos] != 'Z') return std::nullopt;
  const year_month_day ymd{year{y}, month{unsigned(mo)}, day{unsigned(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || se > 60) return std::nullopt;
  return sys_time{sys_days{ymd}.time_since_epoch() + hours{h} + minutes{mi} + seconds{se} +
                  millis{ms}};
}

std::optional<millis> parse_duration(std::string_view s) {
  if (s == "0") return millis{0};
  std::int64_t n = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), n);
  if (r.ec != std::errc{} || r.ptr == s.data() || n < 0) return std::nullopt;
  const std::string_view unit{r.ptr, std::size_t(s.data() + s.size() - r.ptr)};
  std::int64_t scale;
  if (unit == "ms")
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60'000;
  else if (unit == "h")
    scale = 3'600'000;
  else if (unit == "d")
    scale = 86'400'000;
  else
    return std::nullopt;
  if (n > INT64_MAX / scale / 1000) return std::nullopt;  // far beyond any sane duration
  return millis{n * scale};
}

std::string format_duration(millis d) {
  const std::int64_t ms = d.count();
  if (ms == 0) return "0s";
  struct unit {
    std::int64_t scale;
    const char* name;
  };
  for (auto u : {unit{86'400'000, "d"}, unit{3'600'000, "h"}, unit{60'000, "m"}, unit{1000, "s"}})
    if (ms % u.scale == 0) return std::to_string(ms / u.scale) + u.name;
  return std::to_string(ms) + "ms";
}

std::optional<sys_time> parse_http_date(std::string_view s) {
  using namespace std::chrono;
  // "Sun, 06 Nov 1994 08:49:37 GMT": fixed width.
  static constexpr std::string_view wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::string_view months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() != 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT")
    return std::nullopt;
  int wday = -1, mon = -1;
  for (int i = 0; i < 7; ++i)
    if (s.substr(0, 3) == wdays[i]) wday = i;
  for (int i = 0; i < 12; ++i)
    if (s.substr(8, 3) == months[i]) mon = i + 1;
  int d, y, h, mi, se;
  if (wday < 0 || mon < 0 || !read_int(s, 5, 2, d) || !read_int(s, 12, 4, y) ||
      !read_int(s, 17, 2, h) || !read_int(s, 20, 2, mi) || !read_int(s, 23, 2, se))
    return std::nullopt;
  const year_month_day ymd{year{y}, month{unsigned(mon)}, day{unsigned(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || se > 60) return std::nullopt;
  const sys_days dd{ymd};
  if (weekday{dd}.c_encoding() != unsigned(wday)) return std::nullopt;
  return time_point_cast<millis>(dd + hours{h} + minutes{mi} + seconds{se});
}

std::optional<millis> parse_wait_hint(std::string_view s, bool allow_date, sys_time now) {
  if (!s.empty() && s.size() <= 10 && s.find_first_not_of("0123456789") == std::string_view::npos) {
    std::int64_t secs = 0;
    std::from_chars(s.data(), s.data() + s.size(), secs);
    return millis{secs * 1000};
  }
  if (!allow_date) return std::nullopt;
  auto t = parse_http_date(s);
  if (!t) return std::nullopt;
  return std::max(millis{0}, *t - now);
}

}  // namespace resendd
