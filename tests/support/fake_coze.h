#pragma once
// A fake Coze OAuth token endpoint: verifies the JWT's RS256 signature with the public key (with
// OpenSSL's verifier, independent of resendd's signing code) and checks every header field and
// claim, refuses a reused jti, and answers like Coze: {"access_token", "expires_in" (absolute
// Unix seconds), "token_type"}.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "support/fake_server.h"
#include "token/jwt.h"

namespace resendd::test {

class fake_coze {
 public:
  // With `gated`, every exchange is held until open() (so concurrent callers pile up).
  fake_coze(std::string public_pem, std::string kid, std::string app_id, bool gated = false)
      : public_pem_(std::move(public_pem)),
        kid_(std::move(kid)),
        app_id_(std::move(app_id)),
        open_(!gated),
        server_([this](const received& r) { return handle(r); }) {}
  ~fake_coze() { open(); }

  void open() {
    {
      std::lock_guard lock(m_);
      open_ = true;
    }
    cv_.notify_all();
  }

  std::string url() const { return server_.url("/api/permission/oauth2/token"); }
  int exchanges() const { return exchanges_.load(); }
  std::string last_error() const {
    std::lock_guard lock(m_);
    return last_error_;
  }
  // Refuse every exchange with a Coze-style error.
  void refuse(bool on) { refuse_ = on; }
  // Members that replace those of every later successful answer (a peer that lies).
  void answer_with(nlohmann::json members) {
    std::lock_guard lock(m_);
    answer_with_ = std::move(members);
  }
  // The Unix time the fake lives at: JWT iat/exp are checked and expires_in computed from it
  // (default: the real clock).
  void set_now(std::int64_t unix_seconds) { now_ = unix_seconds; }

 private:
  fake_reply fail(const std::string& why) {
    {
      std::lock_guard lock(m_);
      last_error_ = why;
    }
    return {401,
            nlohmann::json{{"error_code", "invalid_jwt"}, {"error_message", why}}.dump(),
            {},
            false};
  }

  bool verify(const std::string& input, const std::string& sig) const {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(public_pem_.data(), int(public_pem_.size())), BIO_free);
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
        PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    return key && EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key.get()) == 1 &&
           EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()),
                            sig.size(), reinterpret_cast<const unsigned char*>(input.data()),
                            input.size()) == 1;
  }

  fake_reply handle(const received& r) {
    using nlohmann::json;
    const auto auth = r.header("authorization");
    if (auth.rfind("Bearer ", 0) != 0) return fail("no bearer JWT");
    const auto jwt = auth.substr(7);
    const auto d1 = jwt.find('.'), d2 = jwt.rfind('.');
    if (d1 == std::string::npos || d1 == d2) return fail("not a JWT");
    const auto header =
        json::parse(base64url_decode(jwt.substr(0, d1)).value_or(""), nullptr, false);
    const auto claims =
        json::parse(base64url_decode(jwt.substr(d1 + 1, d2 - d1 - 1)).value_or(""), nullptr, false);
    const auto sig = base64url_decode(jwt.substr(d2 + 1));
    if (!sig || !verify(jwt.substr(0, d2), *sig)) return fail("bad signature");
    if (header != json{{"alg", "RS256"}, {"typ", "JWT"}, {"kid", kid_}})
      return fail("bad header " + header.dump());
    const std::int64_t now = now_ ? now_.load()
                                  : std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count();
    if (claims.value("iss", "") != app_id_) return fail("bad iss");
    if (claims.value("aud", "") != "127.0.0.1") return fail("bad aud " + claims.value("aud", ""));
    if (!claims.contains("iat") || std::abs(claims["iat"].get<std::int64_t>() - now) > 300)
      return fail("bad iat");
    if (!claims.contains("exp") || claims["exp"].get<std::int64_t>() <= now) return fail("bad exp");
    const auto jti = claims.value("jti", "");
    {
      std::lock_guard lock(m_);
      if (jti.empty() || !jtis_.insert(jti).second) return fail("jti reused");
    }
    const auto body = json::parse(r.body, nullptr, false);
    if (body.is_discarded() ||
        body.value("grant_type", "") != "urn:ietf:params:oauth:grant-type:jwt-bearer" ||
        !body.contains("duration_seconds"))
      return fail("bad body");
    if (refuse_)
      return {400,
              json{{"error_code", "app_not_found"}, {"error_message", "no such app"}}.dump(),
              {{"X-Tt-Logid", "fake-coze-logid-1"}},
              false};
    const int n = ++exchanges_;
    {
      std::unique_lock lock(m_);
      cv_.wait_for(lock, std::chrono::seconds(30), [&] { return open_; });
    }
    json answer{{"access_token", "czs_token_" + std::to_string(n)},
                {"expires_in", now + body["duration_seconds"].get<std::int64_t>()},
                {"token_type", "Bearer"}};
    {
      std::lock_guard lock(m_);
      if (answer_with_.is_object()) answer.update(answer_with_);
    }
    return {200, answer.dump(), {}, false};
  }

  std::string public_pem_, kid_, app_id_;
  mutable std::mutex m_;
  bool open_;
  std::condition_variable cv_;
  std::set<std::string> jtis_;
  std::string last_error_;
  nlohmann::json answer_with_;
  std::atomic<int> exchanges_{0};
  std::atomic<bool> refuse_{false};
  std::atomic<std::int64_t> now_{0};
  fake_server server_;  // last: stops before the state above goes
};

}  // namespace resendd::test
