// Feishu-aware delivery against a fake Bitable: success by body code, client_token idempotency,
// one write per table at a time, rate limits that cost no attempt.
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "support/fake_feishu.h"
#include "support/harness.h"

using namespace resendd::test;
using nlohmann::json;

namespace {
std::string client_token_of(const received& r) {
  static const std::regex re(R"([?&]client_token=([^&]*))");
  std::smatch m;
  return std::regex_search(r.target, m, re) ? m[1].str() : "";
}
const std::regex uuid_v4(R"([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})");
}  // namespace

TEST(Feishu, TooManyRequestsTwiceThenSuccessCostsOneAttempt) {
  temp_dir dir;
  fake_feishu feishu;
  feishu.script("app/t1", {200, {{"code", 1254290}, {"msg", "TooManyRequest"}}});
  feishu.script("app/t1", {200, {{"code", 1254290}, {"msg", "TooManyRequest"}}});
  daemon_process d(dir, feishu_config("max_attempts = 1"));
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"), "taxi")));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 3: succeeded")) << d.log();
  EXPECT_EQ(feishu.rows("app/t1"), 1u);
  EXPECT_EQ(feishu.table_rows("app/t1")[0]["备注"], "taxi");
  const auto row = sql_rows(
      d.db_path(), "select state, attempts, free_attempts from jobs where id = '" + id + "'");
  EXPECT_EQ(row[0], (std::vector<std::string>{"succeeded", "1", "2"}));
  const auto tries = attempt_rows(d, id, "http_status, feishu_code, outcome");
  ASSERT_EQ(tries.size(), 3u);
  EXPECT_EQ(tries[0], (std::vector<std::string>{"200", "1254290", "rate_limited"}));
  EXPECT_EQ(tries[2], (std::vector<std::string>{"200", "0", "succeeded"}));
}

TEST(Feishu, HttpOkWithBadFieldCodeIsDeadWithTheResponseKept) {
  temp_dir dir;
  fake_feishu feishu;
  feishu.script("app/t1", {200, {{"code", 1254060}, {"msg", "TextFieldConvFail"}}});
  daemon_process d(dir, feishu_config());
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  const auto row = sql_rows(
      d.db_path(),
      "select state, attempts, last_status, last_error, last_response from jobs where id = '" + id +
          "'");
  EXPECT_EQ(row[0][0], "dead");
  EXPECT_EQ(row[0][1], "1");
  EXPECT_EQ(row[0][2], "200");
  EXPECT_NE(row[0][3].find("1254060"), std::string::npos);
  EXPECT_NE(row[0][4].find("TextFieldConvFail"), std::string::npos);
  EXPECT_EQ(feishu.server().count(), 1u);
  EXPECT_EQ(feishu.rows("app/t1"), 0u);
}

TEST(Feishu, GatewayRateLimitsHonourTheResetHeaderAndCostNoAttempt) {
  temp_dir dir;
  fake_feishu feishu;
  for (int i = 0; i < 3; ++i)
    feishu.script("app/t1", {429,
                             {{"code", 99991400}, {"msg", "request trigger frequency limit"}},
                             {{"x-ogw-ratelimit-reset", "1"}}});
  daemon_process d(dir, feishu_config("max_attempts = 2"));
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 4: succeeded", std::chrono::seconds(30)))
      << d.log();
  EXPECT_EQ(feishu.rows("app/t1"), 1u);
  // Each retry waited at least the advertised second.
  const auto starts =
      sql_rows(d.db_path(),
               "select " + sql_ms_between("b.started_at", "a.started_at") +
                   " from attempts a "
                   "join attempts b on b.job_id = a.job_id and b.n = a.n + 1 where a.job_id = '" +
                   id + "'");
  ASSERT_EQ(starts.size(), 3u);
  for (const auto& gap : starts) EXPECT_GE(std::stod(gap[0]), 999.0);
  EXPECT_EQ(sql_value(d.db_path(), "select attempts from jobs where id = '" + id + "'"), "1");
}

TEST(Feishu, LostReplyIsRetriedWithTheSameClientTokenAndWritesOnce) {
  temp_dir dir;
  fake_feishu feishu;
  fake_feishu::scripted lost;
  lost.store_then_drop = true;
  feishu.script("app/t1", lost);
  daemon_process d(dir, feishu_config());
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"), "rent")));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: succeeded")) << d.log();
  const auto reqs = feishu.server().requests();
  ASSERT_EQ(reqs.size(), 2u);
  const auto token = client_token_of(reqs[0]);
  EXPECT_TRUE(std::regex_match(token, uuid_v4)) << reqs[0].target;
  EXPECT_EQ(client_token_of(reqs[1]), token);
  EXPECT_EQ(sql_value(d.db_path(), "select client_token from jobs where id = '" + id + "'"), token);
  EXPECT_EQ(feishu.rows("app/t1"), 1u);  // exactly one copy of the bill
}

TEST(Feishu, BotsOwnClientTokenIsKept) {
  temp_dir dir;
  fake_feishu feishu;
  daemon_process d(dir, feishu_config());
  const std::string mine = "2f1c3a4b-5d6e-4f70-8a9b-0c1d2e3f4a5b";
  const auto id =
      job_id(post_resend(d, resend_body(feishu.url("app", "t1") + "?client_token=" + mine)));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
  EXPECT_EQ(client_token_of(feishu.server().requests()[0]), mine);
}

TEST(Feishu, ClientTokenConflictNeedsReconciliation) {
  temp_dir dir;
  fake_feishu feishu;
  feishu.script("app/t1", {400, {{"code", 1255006}, {"msg", "client token conflict"}}});
  daemon_process d(dir, feishu_config());
  const auto id = job_id(post_resend(d, resend_body(feishu.url("app", "t1"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  EXPECT_NE(sql_value(d.db_path(), "select last_error from jobs where id = '" + id + "'")
                .find("needs reconciliation"),
            std::string::npos);
}

TEST(Feishu, BurstToOneTableIsSerializedWhileAnotherTableProceeds) {
  temp_dir dir;
  fake_feishu feishu(/*hold_ms=*/40);
  daemon_process d(dir, feishu_config());
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i)
    ids.push_back(
        job_id(post_resend(d, resend_body(feishu.url("app", "busy"), "a" + std::to_string(i)))));
  for (int i = 0; i < 5; ++i)
    ids.push_back(
        job_id(post_resend(d, resend_body(feishu.url("app", "other"), "b" + std::to_string(i)))));
  ASSERT_TRUE(d.wait_log_count(": succeeded", ids.size(), std::chrono::seconds(60))) << d.log();
  EXPECT_EQ(feishu.overlaps(), 0);  // never two writes at once on one table
  EXPECT_EQ(feishu.rows("app/busy"), 20u);
  EXPECT_EQ(feishu.rows("app/other"), 5u);
  EXPECT_GE(feishu.max_in_flight_total(), 2);  // the other table was written alongside
  EXPECT_EQ(sql_value(d.db_path(),
                      "select count(*) from jobs where state = 'succeeded' and attempts = 1"),
            "25");
  // The other table's jobs did not wait for the busy table's queue to drain.
  const auto last_other = sql_value(
      d.db_path(), "select max(finished_at) from jobs where resource_key = 'bitable:app/other'");
  const auto last_busy = sql_value(
      d.db_path(), "select max(finished_at) from jobs where resource_key = 'bitable:app/busy'");
  EXPECT_LT(last_other, last_busy);
}

TEST(Feishu, WithoutSerializationTheFakeSeesOverlaps) {
  // The control for the test above: the fake does detect overlapping writes.
  temp_dir dir;
  fake_feishu feishu(/*hold_ms=*/40);
  daemon_process d(dir, feishu_config("key_concurrency = 8"));
  for (int i = 0; i < 8; ++i)
    post_resend(d, resend_body(feishu.url("app", "busy"), "a" + std::to_string(i)));
  ASSERT_TRUE(d.wait_log_count(": succeeded", 8, std::chrono::seconds(60))) << d.log();
  EXPECT_GT(feishu.overlaps(), 0);
  EXPECT_GT(std::stoi(sql_value(d.db_path(),
                                "select count(*) from attempts where feishu_code = 1254291")),
            0);
  EXPECT_EQ(feishu.rows("app/busy"), 8u);
}

TEST(Feishu, KeyMinGapSpacesWritesToOneTable) {
  temp_dir dir;
  fake_feishu feishu;
  daemon_process d(dir, feishu_config("key_min_gap = \"150ms\""));
  for (int i = 0; i < 4; ++i)
    post_resend(d, resend_body(feishu.url("app", "t1"), "g" + std::to_string(i)));
  ASSERT_TRUE(d.wait_log_count(": succeeded", 4)) << d.log();
  // Each write starts at least the gap after the previous one finished.
  const auto gaps = sql_rows(
      d.db_path(),
      "select " + sql_ms_between("b.started_at", "a.finished_at") +
          " from "
          "(select j.finished_at, row_number() over (order by t.started_at) as k "
          " from jobs j join attempts t on t.job_id = j.id) a "
          "join (select started_at, row_number() over (order by started_at) as k from attempts) b "
          "on b.k = a.k + 1");
  ASSERT_EQ(gaps.size(), 3u);
  for (const auto& g : gaps) EXPECT_GE(std::stod(g[0]), 149.0);
  EXPECT_EQ(feishu.rows("app/t1"), 4u);
}

// A route written by hand with only a name and a match to Feishu's open APIs: the safe defaults
// (profile feishu, serialization by table) apply without being written.
TEST(Feishu, ARouteWrittenWithoutProfileOrSerializationGetsFeishusDefaults) {
  temp_dir dir;
  fake_feishu feishu(/*hold_ms=*/40);
  feishu.script("app/bad", {200, {{"code", 1254060}, {"msg", "TextFieldConvFail"}}});
  daemon_process d(
      dir,
      test_config(
          R"(^http://127\.0\.0\.1:\d+/open-apis/bitable/v1/apps/[^/]+/tables/[^/]+/records/batch_create([?].*)?$)",
          "", ""));
  // HTTP 200 with a Feishu error code is dead, not succeeded (a generic route would say so).
  const auto bad = job_id(post_resend(d, resend_body(feishu.url("app", "bad"))));
  ASSERT_TRUE(d.wait_log("job " + bad + " attempt 1: dead")) << d.log();
  // Eight writes to one table never overlap.
  for (int i = 0; i < 8; ++i)
    post_resend(d, resend_body(feishu.url("app", "busy"), "s" + std::to_string(i)));
  ASSERT_TRUE(d.wait_log_count(": succeeded", 8, std::chrono::seconds(60))) << d.log();
  EXPECT_EQ(feishu.overlaps(), 0);
  EXPECT_EQ(feishu.rows("app/busy"), 8u);
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from attempts where feishu_code = 1254291"),
            "0");
}

TEST(Feishu, NeitherTheRequestNorTheAnswerIsCompressedWhateverTheBotsHeadersSay) {
  temp_dir dir;
  // A front end that compresses whenever it may; a request without Accept-Encoding accepts
  // any coding (RFC 9110 §12.5.3). A gzip body holds no code resendd can read.
  fake_server feishu([](const received& r) {
    if (!r.header("content-encoding").empty())  // a JSON body labelled gzip does not inflate
      return fake_reply{400, R"({"code":9499,"msg":"Bad Request"})"};
    const auto ae = r.header("accept-encoding");
    if (ae != "identity")
      return fake_reply{200,
                        std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\x06\x00", 13),
                        {{"Content-Encoding", "gzip"}}};
    return fake_reply{};  // {"code":0,...}
  });
  daemon_process d(dir, feishu_config());
  auto body =
      resend_body(feishu.url("/open-apis/bitable/v1/apps/app/tables/t1/records/batch_create"));
  body["headers"]["Accept-Encoding"] = "gzip, deflate, br";  // as an HTTP library's defaults
  body["headers"]["Content-Encoding"] = "gzip";              // copied from a compressed request
  const auto id = job_id(post_resend(d, body));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
  const auto reqs = feishu.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].header("accept-encoding"), "identity");
}

TEST(Feishu, EveryAttemptNamesTheAnswersLogIdAndAnUnfitOneIsLeftOut) {
  temp_dir dir;
  fake_feishu feishu;
  feishu.script("app/t1",
                {200, {{"code", 1254002}, {"msg", "Fail"}}, {{"X-Tt-Logid", "20261129ABCDEF01"}}});
  // Too long, and not ASCII: neither goes into a log line or the database.
  feishu.script("app/t2", {200,
                           {{"code", 1254060}, {"msg", "TextFieldConvFail"}},
                           {{"X-Tt-Logid", std::string(200, 'a')}}});
  feishu.script("app/t3",
                {200,
                 {{"code", 1254060}, {"msg", "TextFieldConvFail"}},
                 {{"X-Tt-Logid", "\xe6\x97\xa5\xe5\xbf\x97"}, {"X-Request-Id", "req-7"}}});
  daemon_process d(dir, feishu_config());
  const auto a = job_id(post_resend(d, resend_body(feishu.url("app", "t1"))));
  ASSERT_TRUE(d.wait_log("job " + a + " attempt 2: succeeded")) << d.log();
  const auto tries = attempt_rows(d, a, "error");
  ASSERT_EQ(tries.size(), 2u);
  EXPECT_NE(tries[0][0].find("1254002"), std::string::npos) << tries[0][0];
  EXPECT_NE(tries[0][0].find("; X-Tt-Logid 20261129ABCDEF01"), std::string::npos) << tries[0][0];
  // The success's own log id is in its log line (its error stays empty).
  EXPECT_NE(d.log().find("job " + a + " attempt 2: succeeded (feishu 0: success; X-Tt-Logid fake-"),
            std::string::npos)
      << d.log();

  const auto b = job_id(post_resend(d, resend_body(feishu.url("app", "t2"))));
  const auto c = job_id(post_resend(d, resend_body(feishu.url("app", "t3"))));
  ASSERT_TRUE(d.wait_log("job " + b + " attempt 1: dead")) << d.log();
  ASSERT_TRUE(d.wait_log("job " + c + " attempt 1: dead")) << d.log();
  const auto last_error = [&](const std::string& id) {
    return sql_value(d.db_path(), "select last_error from jobs where id = '" + id + "'");
  };
  EXPECT_NE(last_error(b).find("1254060"), std::string::npos) << last_error(b);
  EXPECT_EQ(last_error(b).find("X-Tt-Logid"), std::string::npos) << last_error(b);
  EXPECT_EQ(last_error(c).find("X-Tt-Logid"), std::string::npos) << last_error(c);
  EXPECT_NE(last_error(c).find("; X-Request-Id req-7"), std::string::npos) << last_error(c);
}
