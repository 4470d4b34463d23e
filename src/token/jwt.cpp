#include "token/jwt.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <nlohmann/json.hpp>

namespace resendd {

std::optional<rsa_private_key> rsa_private_key::from_pem(std::string_view pem, std::string* error) {
  const auto fail = [&](const char* why) -> std::optional<rsa_private_key> {
    if (error) *error = why;
    ERR_clear_error();
    return std::nullopt;
  };
  if (pem.empty()) return fail("no private key given");
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), int(pem.size())),
                                                BIO_free);
  if (!bio) return fail("cannot read the private key");
  // PEM_read_bio_PrivateKey reads PKCS#8 and traditional PKCS#1 RSA keys alike. A passphrase
  // callback that refuses keeps an encrypted key from prompting on the terminal.
  EVP_PKEY* raw = PEM_read_bio_PrivateKey(
      bio.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
  if (!raw) return fail("the private key is not a readable, unencrypted PEM key");
  rsa_private_key k;
  k.key_.reset(raw, EVP_PKEY_free);
  if (EVP_PKEY_base_id(raw) != EVP_PKEY_RSA) return fail("the private key is not an RSA key");
  // RFC 7518 §3.3: RS256 keys are 2048 bits or larger (the Coze console makes 2048-bit keys).
  if (EVP_PKEY_get_bits(raw) < 2048)
    return fail("the RSA key has fewer than 2048 bits, too few for RS256 (RFC 7518 section 3.3)");
  return k;
}

std::optional<std::string> rsa_private_key::sign_rs256(std::string_view data) const {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::size_t len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    ERR_clear_error();
    return std::nullopt;
  }
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(data.data()), data.size()) != 1) {
    ERR_clear_error();
    return std::nullopt;
  }
  sig.resize(len);
  return sig;
}

std::string base64url(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), int(bytes.size()));
  out.resize(std::size_t(n));
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (auto& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  std::string s(text);
  for (auto& c : s) c = c == '-' ? '+' : c == '_' ? '/' : c;
  while (s.size() % 4) s.push_back('=');
  std::string out(s.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(s.data()), int(s.size()));
  if (n < 0) return std::nullopt;
  std::size_t pad = 0;
  for (auto it = s.rbegin(); it != s.rend() && *it == '='; ++it) ++pad;
  out.resize(std::size_t(n) - pad);
  return out;
}

std::optional<std::string> mint_jwt(const rsa_private_key& key, const jwt_claims& c) {
  const auto iat =
      std::chrono::duration_cast<std::chrono::seconds>(c.issued_at.time_since_epoch()).count();
  const auto exp = iat + std::chrono::duration_cast<std::chrono::seconds>(c.ttl).count();
  const nlohmann::json header = {{"alg", "RS256"}, {"typ", "JWT"}, {"kid", c.kid}};
  const nlohmann::json claims = {
      {"iss", c.iss}, {"aud", c.aud}, {"iat", iat}, {"exp", exp}, {"jti", c.jti}};
  const std::string signing_input = base64url(header.dump()) + "." + base64url(claims.dump());
  auto sig = key.sign_rs256(signing_input);
  if (!sig) return std::nullopt;
  return signing_input + "." + base64url(*sig);
}

}  // namespace resendd
