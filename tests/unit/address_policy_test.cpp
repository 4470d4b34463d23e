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
