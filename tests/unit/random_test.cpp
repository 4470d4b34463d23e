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

TEST(Random, IsUuidV4TakesExactlyTheTextOfAVersion4Uuid) {
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(is_uuid_v4(uuid_v4()));
  EXPECT_TRUE(is_uuid_v4("0B5C6C4E-0A8E-4A47-9D0A-1C1F6F3B3A11"));  // either case
  for (const char* s :
       {"", "abc", "0b5c6c4e-0a8e-4a47-9d0a-1c1f6f3b3a1",  // one short
        "0b5c6c4e-0a8e-4a47-9d0a-1c1f6f3b3a111",           // one long
        "0b5c6c4e-0a8e-7a47-9d0a-1c1f6f3b3a11",            // version 7
        "0b5c6c4e-0a8e-4a47-cd0a-1c1f6f3b3a11",            // another variant
        "0b5c6c4e0a8e-4a47-9d0a-1c1f6f3b3a11-",            // dashes moved
        "0b5c6c4e-0a8e-4a47-9d0a-1c1f6f3b3a1g", "{0b5c6c4e-0a8e-4a47-9d0a-1c1f6f3b}"})
    EXPECT_FALSE(is_uuid_v4(s)) << s;
  EXPECT_FALSE(is_uuid_v4(uuid_v7(sys_time{millis{1'800'000'000'000}})));
}
