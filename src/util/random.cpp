#include "util/random.h"

#include <openssl/rand.h>

#include <array>
#include <stdexcept>

namespace resendd {
namespace {

void fill(unsigned char* p, int n) {
  if (RAND_bytes(p, n) != 1) throw std::runtime_error("RAND_bytes failed");
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
  fill(b.data(), int(b.size()));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format_uuid(b);
}

std::string uuid_v7(sys_time now) {
  std::array<unsigned char, 16> b;
  fill(b.data(), int(b.size()));
  const auto ms = std::uint64_t(now.time_since_epoch().count());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (40 - 8 * i));
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  return format_uuid(b);
}

}  // namespace resendd
