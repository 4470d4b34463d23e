#include "http/address_policy.h"

#include <array>
#include <cstdint>

namespace resendd {
namespace {

bool public_v4(std::uint32_t a) {
  struct net {
    std::uint32_t base;
    int bits;
  };
  static constexpr std::array blocked{
      net{0x00000000, 8},   // 0.0.0.0/8 "this network"
      net{0x0A000000, 8},   // 10/8 private
      net{0x64400000, 10},  // 100.64/10 CGNAT
      net{0x7F000000, 8},   // 127/8 loopback
      net{0xA9FE0000, 16},  // 169.254/16 link-local
      net{0xAC100000, 12},  // 172.16/12 private
      net{0xC0000000, 24},  // 192.0.0/24 IETF protocol assignments
      net{0xC0000200, 24},  // 192.0.2/24 documentation
      net{0xC0586300, 24},  // 192.88.99/24 6to4 relay (deprecated)
      net{0xC0A80000, 16},  // 192.168/16 private
      net{0xC6120000, 15},  // 198.18/15 benchmarking
      net{0xC6336400, 24},  // 198.51.100/24 documentation
      net{0xCB007100, 24},  // 203.0.113/24 documentation
      net{0xE0000000, 4},   // 224/4 multicast
      net{0xF0000000, 4},   // 240/4 reserved, and 255.255.255.255 broadcast
  };
  for (const auto& n : blocked) {
    const std::uint32_t mask = n.bits == 0 ? 0 : ~std::uint32_t(0) << (32 - n.bits);
    if ((a & mask) == n.base) return false;
  }
  return true;
}

std::uint32_t v4_at(const std::array<unsigned char, 16>& b, int offset) {
  return std::uint32_t(b[offset]) << 24 | std::uint32_t(b[offset + 1]) << 16 |
         std::uint32_t(b[offset + 2]) << 8 | std::uint32_t(b[offset + 3]);
}

// 2001::/23, IETF protocol assignments (RFC 2928): not globally reachable (Teredo's 2001::/32,
// benchmarking's 2001:2::/48, ORCHID's 2001:10::/28 among them), except the blocks IANA's
// special-purpose registry marks reachable: 2001:1::1 and ::2 (PCP and TURN anycast),
// 2001:3::/32 (AMT), 2001:4:112::/48 (AS112), 2001:20::/28 (ORCHIDv2), 2001:30::/28 (drone
// remote ID).
bool ietf_v6_public(const std::array<unsigned char, 16>& b) {
  const unsigned second = unsigned(b[2]) << 8 | b[3];  // the second 16-bit group
  if (second == 1) {
    bool rest_zero = true;
    for (int i = 4; i < 15; ++i) rest_zero = rest_zero && b[i] == 0;
    return rest_zero && (b[15] == 1 || b[15] == 2);
  }
  if (second == 3) return true;
  if (second == 4) return b[4] == 0x01 && b[5] == 0x12;
  return (second & 0xfff0) == 0x20 || (second & 0xfff0) == 0x30;
}

bool public_v6(const boost::asio::ip::address_v6& a) {
  const auto b = a.to_bytes();
  if (a.is_v4_mapped()) return public_v4(v4_at(b, 12));
  bool first12_zero = true;
  for (int i = 0; i < 12; ++i) first12_zero = first12_zero && b[i] == 0;
  if (first12_zero) return false;  // ::, ::1 and deprecated IPv4-compatible ::a.b.c.d
  // 64:ff9b::/96 NAT64: judge the embedded IPv4 address
  static constexpr std::array<unsigned char, 12> nat64{0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (std::equal(nat64.begin(), nat64.end(), b.begin())) return public_v4(v4_at(b, 12));
  // 64:ff9b:1::/48 local-use NAT64 (RFC 8215): the operator picks where the IPv4 address sits,
  // and a local translator would reach 169.254.169.254 or 10/8 through it, so none is public.
  if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1)
    return false;
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] < 2) return ietf_v6_public(b);  // 2001::/23
  if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0) return false;  // 3fff::/20 documentation
  if (b[0] == 0x5f && b[1] == 0x00) return false;                        // 5f00::/16 SRv6 SIDs
  if ((b[0] & 0xfe) == 0xfc) return false;                               // fc00::/7 unique local
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return false;               // fe80::/10 link-local
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return false;  // fec0::/10 site-local (deprecated)
  if (b[0] == 0xff) return false;                           // ff00::/8 multicast
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) return false;  // 2001:db8::/32
  if (b[0] == 0x01 && b[1] == 0x00 && b[2] == 0 && b[3] == 0 && b[4] == 0 && b[5] == 0 &&
      b[6] == 0 && b[7] <= 1)
    return false;  // 100::/64 discard, 100:0:0:1::/64 dummy prefix (RFC 9780)
  if (b[0] == 0x20 && b[1] == 0x02) return public_v4(v4_at(b, 2));  // 2002::/16 6to4
  return true;
}

}  // namespace

bool is_public_address(const boost::asio::ip::address& a) {
  return a.is_v4() ? public_v4(a.to_v4().to_uint()) : public_v6(a.to_v6());
}

}  // namespace resendd
