#include "token/jwt.h"

#include <gtest/gtest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "support/certs.h"
#include "support/temp_dir.h"

using namespace resendd;
using nlohmann::json;

namespace {
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  std::size_t start = 0, dot;
  while ((dot = s.find('.', start)) != std::string::npos) {
    parts.push_back(s.substr(start, dot - start));
    start = dot + 1;
  }
  parts.push_back(s.substr(start));
  return parts;
}
}  // namespace

TEST(Jwt, Base64UrlRoundTrips) {
  for (std::string s : {"", "f", "fo", "foo", "foob", "\xff\xfe\xfd", "any carnal pleas"}) {
    const auto e = base64url(s);
    EXPECT_EQ(e.find_first_of("+/="), std::string::npos);
    EXPECT_EQ(base64url_decode(e), s);
  }
}

TEST(Jwt, SignatureVerifiesWithTheOpensslCommandLine) {
  test::temp_dir dir;
  const auto keys = test::make_rsa_pair(dir);
  for (const auto& pem : {keys.private_pem, keys.private_pkcs1_pem}) {
    std::string err;
    auto key = rsa_private_key::from_pem(pem, &err);
    ASSERT_TRUE(key) << err;
    const sys_time now{std::chrono::seconds{1'800'000'000}};
    auto jwt = mint_jwt(*key, {"kid-1", "app-1", "api.coze.cn", now, millis{600'000}, "nonce-1"});
    ASSERT_TRUE(jwt);
    const auto parts = split(*jwt);
    ASSERT_EQ(parts.size(), 3u);
    const auto header = json::parse(*base64url_decode(parts[0]));
    EXPECT_EQ(header, (json{{"alg", "RS256"}, {"typ", "JWT"}, {"kid", "kid-1"}}));
    const auto claims = json::parse(*base64url_decode(parts[1]));
    EXPECT_EQ(claims["iss"], "app-1");
    EXPECT_EQ(claims["aud"], "api.coze.cn");
    EXPECT_EQ(claims["iat"], 1'800'000'000);
    EXPECT_EQ(claims["exp"], 1'800'000'600);
    EXPECT_EQ(claims["jti"], "nonce-1");
    // An independent verifier: openssl dgst over header.claims with the public key.
    dir.write("input", parts[0] + "." + parts[1]);
    dir.write("sig", *base64url_decode(parts[2]));
    dir.write("pub.pem", keys.public_pem);
    const std::string cmd = "openssl dgst -sha256 -verify " + dir.file("pub.pem") + " -signature " +
                            dir.file("sig") + " " + dir.file("input") + " >/dev/null 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
    dir.write("input", parts[0] + "." + parts[1] + "x");
    EXPECT_NE(std::system(cmd.c_str()), 0);
  }
}

TEST(Jwt, BadKeysAreRefusedWithoutEchoingThem) {
  std::string err;
  EXPECT_FALSE(rsa_private_key::from_pem("", &err));
  EXPECT_FALSE(rsa_private_key::from_pem(
      "-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n-----END PRIVATE KEY-----\n", &err));
  EXPECT_EQ(err.find("SECRETSTUFF"), std::string::npos);
  // Readable keys that RS256 may not use: not RSA, or RSA under 2048 bits (RFC 7518 §3.3).
  const auto pem_of = [](EVP_PKEY* key) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    std::string pem(data, std::size_t(n));
    EVP_PKEY_free(key);
    return pem;
  };
  EXPECT_FALSE(rsa_private_key::from_pem(pem_of(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")), &err));
  EXPECT_NE(err.find("not an RSA key"), std::string::npos) << err;
  EXPECT_FALSE(rsa_private_key::from_pem(pem_of(EVP_RSA_gen(1024)), &err));
  EXPECT_NE(err.find("2048"), std::string::npos) << err;
  EXPECT_TRUE(rsa_private_key::from_pem(pem_of(EVP_RSA_gen(2048)), &err)) << err;
}
