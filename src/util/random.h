#pragma once
// Randomness from OpenSSL's CSPRNG: identifiers, nonces and jitter. Thread-safe.
#include <cstdint>
#include <string>
#include <string_view>

#include "util/time.h"

namespace resendd {

std::uint64_t random_u64();
// RFC 9562 UUID version 4, lower-case text: client_token values and JWT nonces.
std::string uuid_v4();
// Whether `s` is the text of an RFC 9562 UUID version 4 (hex digits in either case, with its
// dashes), the only client_token Feishu takes.
bool is_uuid_v4(std::string_view s);
// RFC 9562 UUID version 7 (time-ordered): job ids, so ids sort roughly by creation.
std::string uuid_v7(sys_time now);

}  // namespace resendd
