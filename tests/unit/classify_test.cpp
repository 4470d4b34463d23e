#include "queue/classify.h"

#include <gtest/gtest.h>

using namespace resendd;

namespace {
attempt_result answer(int status, std::string body = "") {
  attempt_result r;
  r.status = status;
  r.body = std::move(body);
  return r;
}
}  // namespace

TEST(Classify, GenericFollowsTheStatus) {
  EXPECT_EQ(classify("generic", answer(200)).kind, outcome_kind::succeeded);
  EXPECT_EQ(classify("generic", answer(204)).kind, outcome_kind::succeeded);
  for (int s : {408, 425, 500, 502, 503, 504})
    EXPECT_EQ(classify("generic", answer(s)).kind, outcome_kind::retry) << s;
  EXPECT_EQ(classify("generic", answer(429)).kind, outcome_kind::rate_limited);
  for (int s : {301, 400, 401, 403, 404, 422})
    EXPECT_EQ(classify("generic", answer(s)).kind, outcome_kind::dead) << s;
}

TEST(Classify, TransportErrorsRetryAndBlockedIsDead) {
  attempt_result r;
  r.error = "connect: refused";
  EXPECT_EQ(classify("generic", r).kind, outcome_kind::retry);
  EXPECT_EQ(classify("feishu", r).kind, outcome_kind::retry);
  r.blocked = true;
  EXPECT_EQ(classify("feishu", r).kind, outcome_kind::dead);
}

TEST(Classify, FeishuTrustsTheBodyCodeNotTheStatus) {
  auto v = classify("feishu", answer(200, R"({"code":1254060,"msg":"TextFieldConvFail"})"));
  EXPECT_EQ(v.kind, outcome_kind::dead);
  EXPECT_EQ(v.feishu_code, 1254060);
  EXPECT_NE(v.reason.find("TextFieldConvFail"), std::string::npos);
  EXPECT_EQ(classify("feishu", answer(200, R"({"code":0,"msg":"success"})")).kind,
            outcome_kind::succeeded);
  // a 2xx without a code is not a Feishu success
  EXPECT_EQ(classify("feishu", answer(200, "<html>")).kind, outcome_kind::retry);
  EXPECT_EQ(classify("feishu", answer(200, R"({"ok":true})")).kind, outcome_kind::retry);
  // no JSON: the status speaks
  EXPECT_EQ(classify("feishu", answer(503, "busy")).kind, outcome_kind::retry);
  EXPECT_EQ(classify("feishu", answer(404, "nope")).kind, outcome_kind::dead);
}

TEST(Classify, FeishuTable) {
  struct row {
    std::int64_t code;
    int status;
    outcome_kind kind;
  };
  const row rows[] = {
      {99991400, 429, outcome_kind::rate_limited},
      {1254290, 200, outcome_kind::rate_limited},
      {1254291, 200, outcome_kind::rate_limited},
      {1254607, 400, outcome_kind::retry},
      {1255040, 504, outcome_kind::retry},
      {1254036, 400, outcome_kind::retry},
      {1254002, 200, outcome_kind::retry},
      {1255003, 200, outcome_kind::retry},
      {99991663, 400, outcome_kind::refresh_credentials},
      {99991664, 400, outcome_kind::refresh_credentials},
      {99991668, 400, outcome_kind::dead},
      {99991661, 400, outcome_kind::dead},
      {99991672, 400, outcome_kind::dead},
      {1254302, 403, outcome_kind::dead},
      {1254005, 200, outcome_kind::dead},
      {1254043, 200, outcome_kind::dead},
      {1254104, 200, outcome_kind::dead},
      {1254037, 400, outcome_kind::dead},
      {1255006, 400, outcome_kind::dead},
      {1254608, 403, outcome_kind::dead},
      {7777777, 200, outcome_kind::retry},
      {7777777, 400, outcome_kind::dead},
  };
  for (const auto& r : rows) {
    auto v = classify("feishu",
                      answer(r.status, R"({"code":)" + std::to_string(r.code) + R"(,"msg":"m"})"));
    EXPECT_EQ(v.kind, r.kind) << r.code;
    EXPECT_EQ(v.feishu_code, r.code);
  }
  EXPECT_NE(
      classify("feishu", answer(400, R"({"code":1255006})")).reason.find("needs reconciliation"),
      std::string::npos);
  EXPECT_NE(
      classify("feishu", answer(403, R"({"code":1254608})")).reason.find("needs reconciliation"),
      std::string::npos);
}

TEST(Classify, RetryCarriesRetryAfterToo) {
  auto r = answer(503, "busy");
  r.retry_after = millis{3000};
  EXPECT_EQ(classify("generic", r).wait, millis{3000});
}

TEST(Classify, RateLimitCarriesTheAdvertisedWait) {
  auto r = answer(429, R"({"code":99991400})");
  r.retry_after = millis{7000};
  EXPECT_EQ(classify("feishu", r).wait, millis{7000});
}

TEST(Classify, AGroupBotsOlderAnswerIsReadByItsStatusCode) {
  // The older form of a group bot's webhook answer (PROTOCOLS.md §5): without this, its success
  // read as "no code" and the alert was posted to the group again at every retry.
  auto v =
      classify("feishu", answer(200, R"({"Extra":null,"StatusCode":0,"StatusMessage":"success"})"));
  EXPECT_EQ(v.kind, outcome_kind::succeeded);
  EXPECT_EQ(v.feishu_code, 0);
  v = classify("feishu", answer(200, R"({"StatusCode":9499,"StatusMessage":"Bad Request"})"));
  EXPECT_EQ(v.kind, outcome_kind::retry);  // an unknown code under a 200: no success
  EXPECT_EQ(v.feishu_code, 9499);
  EXPECT_NE(v.reason.find("Bad Request"), std::string::npos) << v.reason;
  // "code" wins when both are there, as in the newer answer.
  v = classify(
      "feishu",
      answer(200,
             R"({"StatusCode":0,"StatusMessage":"success","code":19021,"msg":"sign match fail"})"));
  EXPECT_EQ(v.feishu_code, 19021);
  EXPECT_NE(v.kind, outcome_kind::succeeded);
  EXPECT_EQ(classify("feishu", answer(200, R"({"StatusCode":"0"})")).kind, outcome_kind::retry);
}
