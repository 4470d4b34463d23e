// The token module: seed-compatible /token with a single-flight cache, the `resendd token` CLI,
// and fresh Feishu tenant credentials at every attempt.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <cstdlib>
#include <limits>
#include <thread>

#include "http/client.h"
#include "support/certs.h"
#include "support/fake_coze.h"
#include "support/fake_feishu.h"
#include "support/harness.h"
#include "token/token_service.h"

using namespace resendd;
using namespace resendd::test;
using nlohmann::json;

namespace {

const std::string kid = "kid_test_1";
const std::string app_id = "1150000000001";

std::string token_config(const std::string& coze_url) {
  return "[server]\nlisten = \"127.0.0.1:0\"\n[coze]\napp_id = \"" + app_id +
         "\"\npublic_key_id = \"" + kid + "\"\ntoken_url = \"" + coze_url +
         "\"\n[log]\nlevel = \"debug\"\n";
}

// A generic route to 127.0.0.1 with credentials = "coze" (and `route_keys`), and the [coze]
// section for `coze_url`.
std::string coze_route_config(const std::string& coze_url, const std::string& route_keys = "") {
  const auto coze = token_config(coze_url);
  return local_config("credentials = \"coze\"\n" + route_keys, coze.substr(coze.find("[coze]")));
}

json token_request(const std::string& key = app_id) {
  return {{"public_key", kid}, {"coze_api_key", key}, {"duration_seconds", 900}};
}

}  // namespace

TEST(Token, ConcurrentCallsShareOneExchange) {
  temp_dir dir;
  const auto keys = make_rsa_pair(dir);
  fake_coze coze(keys.public_pem, kid, app_id, /*gated=*/true);
  daemon_process d(dir, token_config(coze.url()), {{"JWT_PRIVATE_KEY", keys.private_pem}});
  constexpr int callers = 20;
  std::vector<http_answer> answers(callers);
  std::vector<std::thread> threads;
  for (int i = 0; i < callers; ++i)
    threads.emplace_back(
        [&, i] { answers[i] = http_call(d.port(), "POST", "/token", token_request().dump()); });
  // Every caller but the first joins the exchange in flight; then Coze answers.
  ASSERT_TRUE(d.wait_log_count("joined an exchange in flight", callers - 1)) << d.log();
  coze.open();
  for (auto& t : threads) t.join();
  EXPECT_EQ(coze.exchanges(), 1) << coze.last_error();
  for (const auto& a : answers) {
    ASSERT_EQ(a.status, 200) << a.body;
    const auto j = json::parse(a.body);
    EXPECT_EQ(j["access_token"], "czs_token_1");
    EXPECT_EQ(j["token_type"], "Bearer");
    EXPECT_TRUE(j["expires_in"].is_number_integer());
  }
  // Cached: a later call does not exchange again.
  EXPECT_EQ(http_call(d.port(), "POST", "/token", token_request().dump()).status, 200);
  EXPECT_EQ(coze.exchanges(), 1);
  EXPECT_EQ(d.log().find("czs_token_1"), std::string::npos);  // tokens never logged
  // /metrics counts the one exchange (a miss) and the cached answers (hits).
  auto m = scrape_metrics(d, dir);
  EXPECT_EQ(m["resendd_token_cache_total{kind=coze,result=miss}"], 1);
  EXPECT_GE(m["resendd_token_cache_total{kind=coze,result=hit}"], 1);
  EXPECT_EQ(m.count("resendd_token_cache_total{kind=coze,result=failure}"), 0u);
}

TEST(Token, OnAPublicListenerTokenNeedsABearerUnlessTokenPublic) {
  temp_dir dir;
  const auto keys = make_rsa_pair(dir);
  fake_coze coze(keys.public_pem, kid, app_id);
  // Listening on every address (reached here over loopback) counts as public.
  auto cfg = token_config(coze.url());
  cfg.replace(cfg.find("127.0.0.1:0"), 11, "0.0.0.0:0");
  cfg.replace(cfg.find("[coze]"), 6, "api_tokens = [\"api-token-0123456789\"]\n[coze]");
  {
    daemon_process d(dir, cfg, {{"JWT_PRIVATE_KEY", keys.private_pem}});
    auto a = http_call(d.port(), "POST", "/token", token_request().dump());
    EXPECT_EQ(a.status, 401) << a.body;
    EXPECT_EQ(coze.exchanges(), 0);
    a = http_call(d.port(), "POST", "/token", token_request().dump(),
                  {{"Authorization", "Bearer api-token-0123456789"}});
    EXPECT_EQ(a.status, 200) << a.body;
  }
  temp_dir dir2;
  cfg.replace(cfg.find("api_tokens"), 10, "token_public = true\napi_tokens");
  daemon_process d(dir2, cfg, {{"JWT_PRIVATE_KEY", keys.private_pem}});
  const auto a = http_call(d.port(), "POST", "/token", token_request().dump());
  EXPECT_EQ(a.status, 200) << a.body;  // the seed's open /token, asked for
}

TEST(Token, BadRequestsAndCozeErrors) {
  temp_dir dir;
  const auto keys = make_rsa_pair(dir);
  fake_coze coze(keys.public_pem, kid, app_id);
  daemon_process d(dir, token_config(coze.url()), {{"JWT_PRIVATE_KEY_FILE", dir.file("jwt.key")}});
  EXPECT_EQ(http_call(d.port(), "POST", "/token", token_request("wrong").dump()).status, 401);
  EXPECT_EQ(http_call(d.port(), "POST", "/token", json{{"coze_api_key", app_id}}.dump()).status,
            400);
  EXPECT_EQ(http_call(d.port(), "POST", "/token", "{nope").status, 400);
  EXPECT_EQ(
      http_call(
          d.port(), "POST", "/token",
          json{{"public_key", kid}, {"coze_api_key", app_id}, {"duration_seconds", "x"}}.dump())
          .status,
      400);
  for (const json& v : {json(0), json(-1), json(1.5), json(-9223372036854775807LL - 1)}) {
    auto r = http_call(
        d.port(), "POST", "/token",
        json{{"public_key", kid}, {"coze_api_key", app_id}, {"duration_seconds", v}}.dump());
    EXPECT_EQ(r.status, 400) << v;
  }
  EXPECT_EQ(coze.exchanges(), 0);
  // Any larger lifetime, however large, is held to Coze's documented maximum.
  for (const std::string v : {"86400", "9223372036854775808", "18446744073709551615"}) {
    const auto r = http_call(d.port(), "POST", "/token",
                             R"({"public_key":")" + kid + R"(","coze_api_key":")" + app_id +
                                 R"(","duration_seconds":)" + v + "}");
    ASSERT_EQ(r.status, 200) << v << r.body << coze.last_error();
    const auto left = json::parse(r.body)["expires_in"].get<std::int64_t>() -
                      std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    EXPECT_GT(left, 86399 - 60) << v;
    EXPECT_LE(left, 86399) << v;
  }
  coze.refuse(true);
  auto a = http_call(d.port(), "POST", "/token", token_request().dump());
  EXPECT_EQ(a.status, 502);
  EXPECT_EQ(json::parse(a.body)["error_code"], "app_not_found");
  // Logged once, with the log id Coze's support asks for; the caller gets Coze's JSON as it came.
  EXPECT_TRUE(d.wait_log("\"app_not_found\"; X-Tt-Logid fake-coze-logid-1")) << d.log();
  EXPECT_EQ(a.body.find("fake-coze-logid"), std::string::npos) << a.body;
  coze.refuse(false);  // errors are not cached
  a = http_call(d.port(), "POST", "/token", token_request().dump());
  EXPECT_EQ(a.status, 200) << a.body << coze.last_error();
}

TEST(Token, NotConfiguredAnswers503) {
  temp_dir dir;
  daemon_process d(dir, "[server]\nlisten = \"127.0.0.1:0\"\n");
  EXPECT_EQ(http_call(d.port(), "POST", "/token", token_request().dump()).status, 503);
}

TEST(Token, AKeyRs256MayNotUseStopsServeAndCheckConfigAlike) {
  // RS256 needs an RSA key of 2048 bits or more (RFC 7518 §3.3). Found by hand: a 1024-bit key
  // stopped serve (exit 1) while check-config called the same file valid.
  temp_dir dir;
  ASSERT_EQ(std::system(("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out " +
                         dir.file("short.key") + " 2>/dev/null")
                            .c_str()),
            0);
  dir.write("c.toml", "[server]\nlisten = \"127.0.0.1:0\"\n[coze]\napp_id = \"" + app_id +
                          "\"\npublic_key_id = \"" + kid + "\"\nprivate_key_file = \"" +
                          dir.file("short.key") + "\"\n");
  for (const char* command : {"check-config", "serve"}) {
    const auto r = run_resendd(dir, {command, "--config", dir.file("c.toml")});
    EXPECT_EQ(r.status, 2) << command << ": " << r.output;
    EXPECT_NE(r.output.find("coze.private_key_file"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("2048"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("PRIVATE KEY"), std::string::npos) << r.output;  // never the key
  }
}

namespace {
// A token service on a manual clock, against a fake Coze that lives at the same time.
struct clocked_tokens {
  temp_dir dir;
  rsa_pair keys = make_rsa_pair(dir);
  fake_coze coze{keys.public_pem, kid, app_id};
  std::int64_t real_now = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  config cfg = [this] {
    config c;
    c.coze.app_id = app_id;
    c.coze.token_url = coze.url();
    c.coze.private_key_pem = keys.private_pem;
    return c;
  }();
  manual_clock clk{sys_time{std::chrono::seconds{real_now}}};
  boost::asio::io_context io;
  http_client client{io.get_executor(), client_options{}};
  token_service tokens{cfg, client, clk};

  clocked_tokens() { coze.set_now(real_now); }
  token_grant get() {
    auto f = boost::asio::co_spawn(io, tokens.coze_token(kid, 900), boost::asio::use_future);
    io.restart();
    io.run();
    return f.get();
  }
  // Both clocks to `s` seconds after the start.
  void at(std::int64_t s) {
    clk.set(sys_time{std::chrono::seconds{real_now + s}});
    coze.set_now(real_now + s);
  }
};
}  // namespace

TEST(Token, CacheRefreshesNearExpiryOnTheManualClock) {
  clocked_tokens t;
  EXPECT_EQ(t.get().token, "czs_token_1");
  t.at(700);  // 200 s left: more than max(60 s, 90 s)
  EXPECT_EQ(t.get().token, "czs_token_1");
  t.at(820);  // 80 s left: inside the margin
  EXPECT_EQ(t.get().token, "czs_token_2");
  EXPECT_EQ(t.coze.exchanges(), 2);
}

TEST(Token, AFailedRefreshKeepsServingTheCachedTokenAndBacksOff) {
  clocked_tokens t;
  EXPECT_EQ(t.get().token, "czs_token_1");
  t.at(820);  // 80 s left: due for refresh, still good
  t.coze.refuse(true);
  auto g = t.get();
  EXPECT_EQ(g.status, 0) << g.error;
  EXPECT_EQ(g.token, "czs_token_1");  // the refresh failed: the old token serves
  EXPECT_EQ(t.tokens.exchanges(), 2u);
  EXPECT_EQ(t.get().token, "czs_token_1");
  EXPECT_EQ(t.tokens.exchanges(), 2u);  // backed off: no exchange within the next second
  t.at(822);
  EXPECT_EQ(t.get().token, "czs_token_1");
  EXPECT_EQ(t.tokens.exchanges(), 3u);  // tried again, failed again: backoff 2 s now
  t.at(823);
  EXPECT_EQ(t.get().token, "czs_token_1");
  EXPECT_EQ(t.tokens.exchanges(), 3u);
  t.coze.refuse(false);
  t.at(825);
  EXPECT_EQ(t.get().token, "czs_token_2");  // replaced once its successor arrived
  // A token with less than 30 s left is not handed out: a failed exchange is an error then.
  t.coze.refuse(true);
  t.at(825 + 900 - 20);
  g = t.get();
  EXPECT_NE(g.status, 0);
  EXPECT_TRUE(g.token.empty());
}

TEST(Token, AnExpiresInThatIsNoTimeIsRefusedAndNoTokenOutlivesWhatWasAsked) {
  clocked_tokens t;
  const json not_times[] = {1e300,
                            -5,
                            std::numeric_limits<std::int64_t>::max(),
                            std::numeric_limits<std::uint64_t>::max(),
                            253402300800,
                            "1767225600"};
  for (const auto& v : not_times) {
    t.coze.answer_with({{"expires_in", v}});
    const auto g = t.get();
    EXPECT_EQ(g.status, 502) << v;
    EXPECT_TRUE(g.token.empty()) << v;
  }
  t.coze.answer_with({{"access_token", ""}});
  EXPECT_EQ(t.get().status, 502);
  // Ten years ahead: cached no longer than the 900 s asked for.
  t.coze.answer_with({{"expires_in", t.real_now + 10 * 365 * 86400}});
  auto g = t.get();
  ASSERT_EQ(g.status, 0) << g.error;
  const auto first = g.token;
  t.at(700);
  EXPECT_EQ(t.get().token, first);
  t.at(820);  // 80 s left of the 900 asked for: refreshed
  EXPECT_NE(t.get().token, first);
  // A fractional time is read as its whole seconds.
  t.coze.answer_with({{"expires_in", double(t.real_now) + 820 + 900.75}});
  g = t.get();           // the token above, still cached
  t.at(820 + 900 - 40);  // inside the margin of both: a new exchange
  g = t.get();
  ASSERT_EQ(g.status, 0) << g.error;
  EXPECT_EQ(g.expires_at, sys_time{std::chrono::seconds{t.real_now + 820 + 900}});
  // Already past (a duration, as a confused peer might send): handed out, never served from
  // the cache.
  t.coze.answer_with({{"expires_in", 900}});
  t.at(5000);
  const auto a = t.get(), b = t.get();
  ASSERT_EQ(a.status, 0) << a.error;
  ASSERT_EQ(b.status, 0) << b.error;
  EXPECT_NE(a.token, b.token);
}

TEST(Token, AFeishuExpireIsHeldToTwoHours) {
  clocked_tokens t;
  std::atomic<int> minted{0};
  std::atomic<std::int64_t> expire{std::numeric_limits<std::int64_t>::max()};
  fake_server tenant([&](const received&) {
    return fake_reply{200, json{{"code", 0},
                                {"msg", "ok"},
                                {"tenant_access_token", "t-" + std::to_string(++minted)},
                                {"expire", expire.load()}}
                               .dump()};
  });
  t.cfg.feishu.app_id = "cli_test";
  t.cfg.feishu.app_secret = "app-secret-value-0001";
  t.cfg.feishu.token_url = tenant.url("/open-apis/auth/v3/tenant_access_token/internal");
  token_service tokens{t.cfg, t.client, t.clk};
  auto get = [&] {
    auto f = boost::asio::co_spawn(t.io, tokens.feishu_tenant_token(), boost::asio::use_future);
    t.io.restart();
    t.io.run();
    return f.get();
  };
  auto g = get();
  ASSERT_EQ(g.status, 0) << g.error;
  EXPECT_EQ(g.expires_at - g.obtained_at, std::chrono::hours{2});
  EXPECT_EQ(get().token, "t-1");  // cached
  t.at(7200 - 800);
  EXPECT_EQ(get().token, "t-1");
  t.at(7200 - 700);  // inside the refresh margin of a 2 h token (a tenth of it, 720 s)
  EXPECT_EQ(get().token, "t-2");
  expire = -7200;  // already expired: handed out, not served from the cache
  t.at(3 * 7200);
  EXPECT_EQ(get().token, "t-3");
  EXPECT_EQ(get().token, "t-4");
}

TEST(Token, CliMintsAndExchanges) {
  temp_dir dir;
  const auto keys = make_rsa_pair(dir);
  fake_coze coze(keys.public_pem, kid, app_id);
  const std::map<std::string, std::string> env{{"COZE_API_URL", coze.url()}};
  auto r = run_resendd(dir,
                       {"token", "exchange", "--key", dir.file("jwt.key"), "--kid", kid, "--app-id",
                        app_id, "--ttl", "600"},
                       env);
  ASSERT_EQ(r.status, 0) << r.output << coze.last_error();
  const auto j = json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["access_token"], "czs_token_1");
  r = run_resendd(dir,
                  {"token", "mint", "--key", dir.file("jwt.key"), "--kid", kid, "--app-id", app_id,
                   "--aud", "api.coze.cn"},
                  env);
  ASSERT_EQ(r.status, 0) << r.output;
  const auto jwt = r.output.substr(0, r.output.find('\n'));
  const auto claims = json::parse(
      *base64url_decode(jwt.substr(jwt.find('.') + 1, jwt.rfind('.') - jwt.find('.') - 1)));
  EXPECT_EQ(claims["aud"], "api.coze.cn");
  EXPECT_EQ(claims["iss"], app_id);
  EXPECT_EQ(claims["exp"].get<std::int64_t>() - claims["iat"].get<std::int64_t>(), 3600);
}

namespace {
// A Feishu route with credentials = "feishu_tenant" (one counted attempt) minting at `tenant`.
std::string tenant_config(const fake_server& tenant) {
  return feishu_config("credentials = \"feishu_tenant\"\nmax_attempts = 1",
                       "[feishu]\napp_id = \"cli_test\"\ntoken_url = \"" +
                           tenant.url("/open-apis/auth/v3/tenant_access_token/internal") + "\"\n");
}
}  // namespace

TEST(Credentials, StaleStoredTokenIsReplacedByAMintedTenantToken) {
  temp_dir dir;
  std::atomic<int> minted{0};
  fake_server tenant([&](const received& r) {
    const auto body = json::parse(r.body);
    if (body.value("app_id", "") != "cli_test" ||
        body.value("app_secret", "") != "app-secret-value-0001")
      return fake_reply{200, json{{"code", 10014}, {"msg", "app secret invalid"}}.dump()};
    // The first token handed out is refused by Bitable (as an expired one would be).
    const int n = ++minted;
    const std::string tok = n == 1 ? "t-refused" : "t-minted-" + std::to_string(n);
    return fake_reply{
        200,
        json{{"code", 0}, {"msg", "ok"}, {"tenant_access_token", tok}, {"expire", 7200}}.dump()};
  });
  fake_feishu feishu(0, "t-minted-2");
  daemon_process d(dir, tenant_config(tenant), {{"FEISHU_APP_SECRET", "app-secret-value-0001"}});
  // The bot's stored header carries a long-expired token.
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: succeeded")) << d.log();
  EXPECT_EQ(feishu.rows("app/t1"), 1u);
  const auto reqs = feishu.server().requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].header("authorization"), "Bearer t-refused");
  EXPECT_EQ(reqs[1].header("authorization"), "Bearer t-minted-2");
  EXPECT_EQ(minted.load(), 2);
  // The refresh did not use up the single allowed attempt.
  EXPECT_EQ(sql_value(d.db_path(),
                      "select attempts || '/' || free_attempts from jobs where id = '" + id + "'"),
            "1/1");
  const auto log = d.log();
  EXPECT_EQ(log.find("app-secret-value-0001"), std::string::npos);
  EXPECT_EQ(log.find("t-minted-2"), std::string::npos);
}

TEST(Credentials, AFailedMintCostsNoAttemptAndTheJobWaits) {
  temp_dir dir;
  std::atomic<int> asked{0};
  fake_server tenant([&](const received&) {
    // The token endpoint fails twice (an outage), then mints.
    if (++asked <= 2) return fake_reply{503, "down", {{"X-Tt-Logid", "tenant-logid-1"}}};
    return fake_reply{
        200, json{{"code", 0}, {"msg", "ok"}, {"tenant_access_token", "t-minted"}, {"expire", 7200}}
                 .dump()};
  });
  fake_feishu feishu(0, "t-minted");
  daemon_process d(dir, tenant_config(tenant), {{"FEISHU_APP_SECRET", "app-secret-value-0001"}});
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"))));
  // Two tries sent nothing; with max_attempts = 1 the job still gets its one real attempt.
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 3: succeeded")) << d.log();
  EXPECT_EQ(feishu.server().count(), 1u);
  EXPECT_EQ(feishu.rows("app/t1"), 1u);
  EXPECT_EQ(sql_value(d.db_path(),
                      "select attempts || '/' || free_attempts from jobs where id = '" + id + "'"),
            "1/2");
  const auto tries = attempt_rows(d, id, "outcome, error");
  ASSERT_EQ(tries.size(), 3u);
  EXPECT_NE(tries[0][1].find("minting credentials"), std::string::npos) << tries[0][1];
  EXPECT_NE(tries[0][1].find("HTTP 503; X-Tt-Logid tenant-logid-1"), std::string::npos)
      << tries[0][1];
  // The job waited (backed off) between the failed mints, not retried at once.
  const auto gaps = sql_rows(
      d.db_path(), "select " + sql_ms_between("b.started_at", "a.started_at") +
                       " from attempts a join attempts b on b.job_id = a.job_id and b.n = a.n + 1 "
                       "where a.job_id = '" +
                       id + "'");
  ASSERT_EQ(gaps.size(), 2u);
  // feishu_config's retry_base is 10 ms: [5, 10] ms.
  EXPECT_GE(std::stod(gaps[0][0]), 5.0);
}

TEST(Credentials, ExpiredTokenWithoutCredentialsIsDeadWithAReason) {
  temp_dir dir;
  fake_feishu feishu(0, "t-only-this-one");
  daemon_process d(dir, feishu_config());
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  EXPECT_NE(
      sql_value(d.db_path(), "select last_error from jobs where id = '" + id + "'").find("expired"),
      std::string::npos);
}

TEST(Credentials, CozeRouteGetsAFreshCozeAccessToken) {
  temp_dir dir;
  const auto keys = make_rsa_pair(dir);
  fake_coze coze(keys.public_pem, kid, app_id);
  // A Coze API stand-in that accepts only the token the fake Coze OAuth endpoint issued.
  fake_server api([](const received& r) {
    if (r.header("authorization") != "Bearer czs_token_1")
      return fake_reply{401, R"({"code":4100})"};
    return fake_reply{200, R"({"code":0})"};
  });
  daemon_process d(dir, coze_route_config(coze.url()), {{"JWT_PRIVATE_KEY", keys.private_pem}});
  const auto id = job_id(post_resend(d, resend_body(api.url("/v1/workflow/run"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log() << coze.last_error();
  EXPECT_EQ(coze.exchanges(), 1);
}

TEST(Credentials, AMintedTokenTheDestinationRefusesIsMintedAgainNotDead) {
  temp_dir dir;
  const auto keys = make_rsa_pair(dir);
  fake_coze coze(keys.public_pem, kid, app_id);
  // A Coze API stand-in that no longer takes the first token (revoked) but takes the next one.
  std::atomic<bool> refuse_all{false};
  fake_server api([&](const received& r) {
    if (refuse_all || r.header("authorization") == "Bearer czs_token_1")
      return fake_reply{401, R"({"code":4100,"msg":"authentication is invalid"})"};
    return fake_reply{200, R"({"code":0})"};
  });
  daemon_process d(dir, coze_route_config(coze.url(), "max_attempts = 1"),
                   {{"JWT_PRIVATE_KEY", keys.private_pem}});
  auto id = job_id(post_resend(d, resend_body(api.url("/v1/workflow/run"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: succeeded")) << d.log() << coze.last_error();
  EXPECT_EQ(coze.exchanges(), 2);
  EXPECT_EQ(sql_value(d.db_path(),
                      "select attempts || '/' || free_attempts from jobs where id = '" + id + "'"),
            "1/1");  // the refused token cost no attempt
  // Refused however often it is minted: dead after a bounded number of fresh tokens.
  refuse_all = true;
  id = job_id(post_resend(d, resend_body(api.url("/v1/workflow/run"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 4: dead")) << d.log();
  EXPECT_NE(sql_value(d.db_path(), "select last_error from jobs where id = '" + id + "'")
                .find("fresh tokens"),
            std::string::npos);
}
