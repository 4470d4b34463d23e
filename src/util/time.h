#pragma once
// Time for resendd: one millisecond-precision UTC time point type, the clock interface that is the
// only way code reads "now", ISO-8601 text (what the database stores), and durations as written
// in config and on the command line ("500ms", "30s", "5m", "48h", "7d").
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace resendd {

using millis = std::chrono::milliseconds;
using sys_time = std::chrono::time_point<std::chrono::system_clock, millis>;

// Source of "now". Thread-safe. Production uses system_clock_source; tests use manual_clock.
class clock {
 public:
  virtual ~clock() = default;
  virtual sys_time now() const = 0;
};

class system_clock_source final : public clock {
 public:
  sys_time now() const override;
};

// A clock that moves only when told to. Thread-safe.
class manual_clock final : public clock {
 public:
  explicit manual_clock(sys_time start) : ms_(start.time_since_epoch().count()) {}
  sys_time now() const override { return sys_time{millis{ms_.load()}}; }
  void advance(millis d) { ms_ += d.count(); }
  void set(sys_time t) { ms_ = t.time_since_epoch().count(); }

 private:
  std::atomic<std::int64_t> ms_;
};

// "2026-11-26T12:00:00.000Z": fixed width, so text order is time order (SQL compares it as text).
std::string to_iso8601(sys_time t);
std::optional<sys_time> from_iso8601(std::string_view text);

// An HTTP-date (RFC 9110 §5.6.7) in its preferred form, "Sun, 06 Nov 1994 08:49:37 GMT";
// nullopt for anything else (the obsolete forms included).
std::optional<sys_time> parse_http_date(std::string_view text);

// A destination's wait hint, parsed strictly: whole seconds ("120"), or with `allow_date` an
// HTTP-date (Retry-After's other form), as the time from `now` (0 when past). Anything else,
// "0.5", "-1", " 5", is nullopt: ignored.
std::optional<millis> parse_wait_hint(std::string_view text, bool allow_date, sys_time now);

// "500ms", "30s", "5m", "48h", "7d" (a single number with a unit; "0" alone is zero).
std::optional<millis> parse_duration(std::string_view text);
// The shortest exact rendering in those units: 90000ms -> "90s", 7200000ms -> "2h".
std::string format_duration(millis d);

}  // namespace resendd
