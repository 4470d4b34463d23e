#include "util/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <stdexcept>

namespace resendd {
namespace {

// OpenSSL's CSPRNG output, drawn 256 bytes at a time per thread: one RAND_bytes call (its DRBG
// lock and provider dispatch were 6 % of the network thread during delivery, a call per job for
// the retry jitter) serves the next eight UUIDs or 32 jitters. A byte handed out is wiped from
// the pool. resendd never forks, so no two processes share a pool.
void fill(unsigned char* p, std::size_t n) {
  thread_local std::array<unsigned char, 256> pool;
  thread_local std::size_t left = 0;
  while (n > 0) {
    if (left == 0) {
      if (RAND_bytes(pool.data(), int(pool.size())) != 1)
        throw std::runtime_error("RAND_bytes failed");
      left = pool.size();
    }
    unsigned char* from = pool.data() + (pool.size() - left);
    const std::size_t k = std::min(n, left);
    std::memcpy(p, from, k);
    OPENSSL_cleanse(from, k);
    p += k;
    n -= k;
    left -= k;
  }
}

std::string format_uuid(const std::array<unsigned char, 16>& b) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(hex[b[i] >> 4]);
    out.push_back(hex[b[i] & 0xf]);
  }
  return out;
}

}  // namespace

std::uint64_t random_u64() {
  std::uint64_t v;
  fill(reinterpret_cast<unsigned char*>(&v), sizeof v);
  return v;
}

std::string uuid_v4() {
  std::array<unsigned char, 16> b;
  fill(b.data(), b.size());
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format_uuid(b);
}

bool is_uuid_v4(std::string_view s) {
  if (s.size() != 36 || s[14] != '4') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return std::string_view("89abAB").find(s[19]) != std::string_view::npos;  // the variant
}

std::string uuid_v7(sys_time now) {
  std::array<unsigned char, 16> b;
  fill(b.data(), b.size());
  const auto ms = std::uint64_t(now.time_since_epoch().count());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format_uuid(b);
}

}  // namespace resendd
