// Identifiers and jitter from the per-thread pool of OpenSSL's CSPRNG output.
#include "util/random.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace resendd;

namespace {
bool is_uuid(const std::string& s, char version) {
  if (s.size() != 36 || s[14] != version) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return std::string("89ab").find(s[19]) != std::string::npos;  // the RFC 9562 variant
}
}  // namespace

TEST(Random, UuidsAreWellFormedAndNeverRepeatAcrossManyPoolRefills) {
  // 3,000 draws of 16 bytes and 3,000 of 8: the 256-byte pool is refilled hundreds of times, and
  // draws that straddle a refill are whole.
  std::set<std::string> seen;
  std::set<std::uint64_t> numbers;
  const sys_time now{millis{1'800'000'000'000}};
  for (int i = 0; i < 3000; ++i) {
    const auto a = uuid_v4();
    const auto b = uuid_v7(now);
    EXPECT_TRUE(is_uuid(a, '4')) << a;
    EXPECT_TRUE(is_uuid(b, '7')) << b;
    EXPECT_EQ(b.substr(0, 13), "01a3185c-5000") << b;  // the time, in its first 48 bits
    seen.insert(a);
    seen.insert(b);
    numbers.insert(random_u64());
  }
  EXPECT_EQ(seen.size(), 6000u);
  EXPECT_EQ(numbers.size(), 3000u);
}

TEST(Random, ThreadsDrawDifferentBytes) {
  std::vector<std::vector<std::uint64_t>> drawn(4);
  std::vector<std::thread> threads;
  for (auto& d : drawn)
    threads.emplace_back([&d] {
      for (int i = 0; i < 500; ++i) d.push_back(random_u64());
    });
  for (auto& t : threads) t.join();
  std::set<std::uint64_t> all;
  for (const auto& d : drawn) all.insert(d.begin(), d.end());
  EXPECT_EQ(all.size(), 2000u);
}
