#pragma once
// Which resolved addresses a delivery may connect to. Public unicast only, unless the route
// allows private networks: loopback, private, link-local, CGNAT, multicast, documentation,
// benchmarking and other reserved ranges are refused, for IPv4 and IPv6 alike, including
// IPv4-mapped, IPv4-compatible and NAT64 IPv6 forms. Pure; thread-safe.
#include <boost/asio/ip/address.hpp>

namespace resendd {

bool is_public_address(const boost::asio::ip::address& a);

}  // namespace resendd
