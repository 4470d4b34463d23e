#include "http/address_policy.h"

#include <gtest/gtest.h>

using namespace resendd;

namespace {
bool pub(const char* a) { return is_public_address(boost::asio::ip::make_address(a)); }
}  // namespace

TEST(AddressPolicy, RefusesNonPublicIPv4) {
  for (const char* a : {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                        "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255",
                        "192.0.2.1", "198.18.0.1", "240.0.0.1"})
    EXPECT_FALSE(pub(a)) << a;
  for (const char* a : {"8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "101.0.0.1"})
    EXPECT_TRUE(pub(a)) << a;
}

TEST(AddressPolicy, RefusesNonPublicIPv6IncludingMappedForms) {
  for (const char* a :
       {"::1", "::", "fc00::1", "fd12::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1",
        "::ffff:10.0.0.1", "64:ff9b::a00:1", "2001:db8::1", "::127.0.0.1", "2002:7f00:1::1"})
    EXPECT_FALSE(pub(a)) << a;
  for (const char* a : {"2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"})
    EXPECT_TRUE(pub(a)) << a;
}

// IANA's IPv6 special-purpose registry: every block it marks not globally reachable is refused,
// and the blocks inside 2001::/23 that it marks reachable are not.
TEST(AddressPolicy, RefusesEveryIPv6BlockTheRegistryMarksNotReachable) {
  for (const char* a : {
           "64:ff9b:1::a9fe:a9fe",  // local-use NAT64 to 169.254.169.254 (RFC 8215)
           "64:ff9b:1:ffff::1",     //   … anywhere in its /48
           "2001::a9fe:a9fe",       // Teredo
           "2001:0:4136:e378:8000:63bf:3fff:fdd2",
           "2001:2::1",                    // benchmarking
           "2001:10::1",                   // ORCHID (deprecated)
           "2001:1::3",                    // 2001:1::/32 beyond the two anycast addresses
           "2001:4::1",                    // 2001:4::/32 beyond AS112's /48
           "2001:1ff::1",                  // the rest of 2001::/23
           "3fff::1", "3fff:fff:ffff::1",  // documentation (RFC 9637)
           "5f00::1",                      // SRv6 SIDs (RFC 9602)
           "100:0:0:1::1",                 // dummy prefix (RFC 9780)
       })
    EXPECT_FALSE(pub(a)) << a;
  for (const char* a : {"2001:1::1", "2001:1::2", "2001:3::1", "2001:4:112::1", "2001:20::1",
                        "2001:2f::1", "2001:30::1", "2001:200::1", "2001:4860:4860::8888",
                        "64:ff9b:2::1", "3fff:1000::1", "5f01::1", "100:0:0:2::1"})
    EXPECT_TRUE(pub(a)) << a;
}
