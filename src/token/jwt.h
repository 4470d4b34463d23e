#pragma once
// RS256 JSON Web Tokens for Coze's JWT OAuth flow (RSA PKCS#1 v1.5 + SHA-256, OpenSSL 3).
// Header {alg, typ, kid}; claims {iss, aud, iat, exp, jti}; see shared/PROTOCOLS.md §1.
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "util/time.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace resendd {

// An RSA private key. Immutable after loading; thread-safe to sign with.
class rsa_private_key {
 public:
  // PKCS#8 ("BEGIN PRIVATE KEY") or PKCS#1 ("BEGIN RSA PRIVATE KEY") PEM. The error never
  // contains key material.
  static std::optional<rsa_private_key> from_pem(std::string_view pem, std::string* error);
  // Signature of SHA-256(data), PKCS#1 v1.5 padding; nullopt if OpenSSL fails.
  std::optional<std::string> sign_rs256(std::string_view data) const;

 private:
  std::shared_ptr<EVP_PKEY> key_;
};

struct jwt_claims {
  std::string kid;  // the public key id shown by the Coze console
  std::string iss;  // the OAuth app id
  std::string aud;  // the API host: "api.coze.cn"
  sys_time issued_at;
  millis ttl{3'600'000};
  std::string jti;  // a fresh random nonce per token
};

std::string base64url(std::string_view bytes);
std::optional<std::string> base64url_decode(std::string_view text);

// header.claims.signature; nullopt if signing fails.
std::optional<std::string> mint_jwt(const rsa_private_key& key, const jwt_claims& claims);

}  // namespace resendd
