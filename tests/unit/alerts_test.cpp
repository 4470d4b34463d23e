#include "queue/alerts.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <future>
#include <nlohmann/json.hpp>
#include <set>

#include "config/config.h"
#include "queue/intake.h"
#include "queue/queue_service.h"
#include "queue/routes.h"
#include "store/sqlite_store.h"
#include "support/temp_dir.h"
#include "support/wait_for.h"
#include "util/utf8.h"

using namespace resendd;
using nlohmann::json;
using resendd::test::wait_for;

namespace {

const char* bitable =
    "https://open.feishu.cn/open-apis/bitable/v1/apps/appX/tables/tblY/records/batch_create";

dead_job bill_job(const std::string& id) {
  json req = {{"location", bitable},
              {"headers", {{"Authorization", "Bearer t-secret-token-value-123456"}}},
              {"params", {{"records", {{{"fields", R"({"金额":12.5,"备注":"午饭"})"}}}}}},
              {"commands", {{"json_parse", {"$.params.records[*].fields"}}}}};
  return {id,
          "feishu-bitable",
          bitable,
          "bad field value (feishu 1254060: TextFieldConvFail)",
          req.dump(),
          1,
          req.dump().size()};
}

}  // namespace

TEST(Alerts, TheMessageSaysWhichBillWhichTableWhyAndHowToRetry) {
  const auto one = alert_text("vm1", "feishu-bitable", {bill_job("J1")}, 1);
  EXPECT_NE(one.find("resendd on vm1: 1 job died on route feishu-bitable"), std::string::npos)
      << one;
  EXPECT_NE(one.find("Bitable table tblY of base appX"), std::string::npos) << one;
  EXPECT_NE(one.find("why: bad field value (feishu 1254060"), std::string::npos) << one;
  EXPECT_NE(one.find("after 1 attempt)"), std::string::npos) << one;
  // The bill as it went out: json_parse applied, the fields an object.
  EXPECT_NE(one.find(R"(bill: {"金额":12.5,"备注":"午饭"})"), std::string::npos) << one;
  EXPECT_NE(one.find("retry: resendd jobs retry J1"), std::string::npos) << one;
  EXPECT_EQ(one.find("more ("), std::string::npos) << one;
  // Never a credential of the bot's request.
  EXPECT_EQ(one.find("t-secret-token"), std::string::npos) << one;

  // A request too large to read on the network thread is pointed to, not described.
  auto large = bill_job("J9");
  large.request.clear();
  const auto pointed = alert_text("vm1", "r", {large}, 1);
  EXPECT_NE(pointed.find("bill: a request of "), std::string::npos) << pointed;
  EXPECT_NE(pointed.find(" bytes: resendd jobs show J9"), std::string::npos) << pointed;
  std::vector<dead_job> five;
  for (int i = 0; i < alerter::max_listed; ++i) five.push_back(bill_job("J" + std::to_string(i)));
  const auto many = alert_text("vm1", "feishu-bitable", five, 50);
  EXPECT_NE(many.find("50 jobs died"), std::string::npos) << many;
  EXPECT_NE(many.find("and 45 more (resendd jobs list --state dead)"), std::string::npos) << many;
  EXPECT_NE(many.find("resendd jobs retry --state dead"), std::string::npos) << many;
}

TEST(Alerts, TargetsAndBillsAreDescribedBriefly) {
  EXPECT_EQ(describe_target("https://example.com:8443/path/x?token=1"), "example.com:8443/path/x");
  // A custom bot's token is never posted to the group.
  EXPECT_EQ(describe_target("https://example.com/bot/v2/hook/abcdefghijklmnopqrst"),
            "example.com/bot/v2/hook/abcd…(20 chars)");
  EXPECT_EQ(describe_bill(R"({"location":"https://x/","params":{"a":1}})"), R"({"a":1})");
  EXPECT_EQ(describe_bill(R"({"location":"https://x/"})"), "");
  // A long bill is cut on a character boundary.
  const std::string big =
      json{{"location", "https://x/"}, {"params", {{"t", std::string(400, 'x') + "金"}}}}.dump();
  const auto cut = describe_bill(big);
  EXPECT_LE(cut.size(), 304u);
  EXPECT_TRUE(valid_utf8(cut));
}

TEST(Alerts, BodiesForFeishuBotsAndGenericHooks) {
  const auto f = json::parse(alert_body("feishu", "vm1", "r", {bill_job("J1")}, 3));
  EXPECT_EQ(f["msg_type"], "text");
  EXPECT_NE(f["content"]["text"].get<std::string>().find("3 jobs died on route r"),
            std::string::npos);
  const auto g = json::parse(alert_body("generic", "vm1", "r", {bill_job("J1")}, 3));
  EXPECT_EQ(g["count"], 3);
  EXPECT_EQ(g["route"], "r");
  EXPECT_EQ(g["host"], "vm1");
  ASSERT_EQ(g["jobs"].size(), 1u);
  EXPECT_EQ(g["jobs"][0]["id"], "J1");
  EXPECT_EQ(g["jobs"][0]["attempts"], 1);
  EXPECT_EQ(g["jobs"][0]["location"], bitable);
  // A generic hook gets the location as the admin API shows it: no credential in clear.
  auto leaky = bill_job("J2");
  leaky.location = "https://example.com/send?access_token=abcdefghijklmnopqrst&x=1";
  const auto h = json::parse(alert_body("generic", "vm1", "r", {leaky}, 1));
  EXPECT_EQ(h["jobs"][0]["location"], "https://example.com/send?access_token=abcd…(20 chars)&x=1");
  EXPECT_NE(g["text"].get<std::string>().find("retry: resendd jobs retry J1"), std::string::npos);
}

TEST(Alerts, FeishuBotSignatureMatchesAnIndependentComputation) {
  // Python: base64(hmac.new(b"1700000000\ns3cr3t-bot", b"", sha256).digest())
  EXPECT_EQ(feishu_bot_sign("s3cr3t-bot", 1700000000),
            "L4aRWW35cY+zpbnfgQgjtNMiOCZ2QS85Ztgizafiv3s=");
  const auto now = sys_time(std::chrono::seconds(1700000000));
  const auto body =
      sign_feishu_bot_body(R"({"msg_type":"text","content":{"text":"x"}})", "s3cr3t-bot", now);
  ASSERT_TRUE(body);
  const auto j = json::parse(*body);
  EXPECT_EQ(j["timestamp"], "1700000000");
  EXPECT_EQ(j["sign"], "L4aRWW35cY+zpbnfgQgjtNMiOCZ2QS85Ztgizafiv3s=");
  EXPECT_FALSE(sign_feishu_bot_body("[1]", "s", now));
}

TEST(Alerts, TheWebhookHasAnInternalRouteThatBotsCannotUse) {
  const auto c = load_config_text(R"(
[alerts]
webhook = "https://open.feishu.cn/open-apis/bot/v2/hook/abc-123"
)",
                                  {});
  EXPECT_EQ(c.alerts.format, "feishu");  // inferred from the host and path
  route_table routes(c);
  const auto* r = routes.match("https://open.feishu.cn/open-apis/bot/v2/hook/abc-123");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->cfg.name, alerts_route_name);
  EXPECT_TRUE(r->cfg.internal);
  EXPECT_EQ(r->cfg.profile, "feishu");
  // Exactly that URL: another hook, or the URL with more after it, is not the alert route.
  EXPECT_EQ(routes.match("https://open.feishu.cn/open-apis/bot/v2/hook/abc-1234"), nullptr);
  EXPECT_EQ(routes.match("https://open.feishu.cn/open-apis/bot/v2/hook/abcX123"), nullptr);
  // A bot cannot queue a job to the webhook.
  const json body = {{"location", "https://open.feishu.cn/open-apis/bot/v2/hook/abc-123"},
                     {"params", {{"msg_type", "text"}}}};
  auto job = prepare_job(body.dump(), "", routes, sys_time{});
  ASSERT_TRUE(std::holds_alternative<intake_error>(job));
  EXPECT_EQ(std::get<intake_error>(job).status, 403);
  // The Bitable route is still there, after it.
  EXPECT_NE(routes.match(bitable), nullptr);
  EXPECT_EQ(routes.match(bitable)->cfg.name, "feishu-bitable");
  // Any other hook is generic.
  EXPECT_EQ(
      load_config_text("[alerts]\nwebhook = \"http://10.0.0.5:9093/hook\"\n", {}).alerts.format,
      "generic");
}

TEST(Alerts, ConfigIsCheckedAndTheHookIsMaskedWhenShown) {
  const auto bad = [](const std::string& toml) {
    try {
      load_config_text(toml, {});
    } catch (const config_error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_NE(bad("[alerts]\nwebhook = \"ftp://x/\"\n").find("alerts.webhook"), std::string::npos);
  EXPECT_NE(bad("[alerts]\nsecret = \"s\"\n").find("alerts.secret"), std::string::npos);
  EXPECT_NE(bad("[alerts]\nwebhook = \"https://x/\"\nformat = \"slack\"\n").find("alerts.format"),
            std::string::npos);
  EXPECT_NE(bad("[[routes]]\nname = \"resendd-alerts\"\nmatch = \"x\"\n").find("alert route"),
            std::string::npos);
  const auto c = load_config_text(
      "[alerts]\nwebhook = \"https://open.feishu.cn/open-apis/bot/v2/hook/"
      "abc-123\"\n",
      {{"CREDENTIALS_DIRECTORY", "/nonexistent"},
       {"RESENDD_ALERTS_SECRET", "bot-signing-secret-1"}});
  EXPECT_EQ(c.alerts.secret, "bot-signing-secret-1");
  EXPECT_EQ(c.alerts.delay, millis{5'000});
  EXPECT_EQ(c.alerts.interval, millis{60'000});
  const auto shown = render_config(c);
  EXPECT_EQ(shown.find("abc-123"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("bot-signing-secret-1"), std::string::npos) << shown;
  EXPECT_NE(shown.find("webhook = \"https://open.feishu.cn/…("), std::string::npos) << shown;
}

TEST(Reload, WhatAReloadAppliesAndWhatWaitsForARestart) {
  const auto running = load_config_text("[server]\nlisten = \"127.0.0.1:0\"\n", {});
  const auto next = load_config_text(R"(
[server]
listen = "127.0.0.1:0"
api_tokens = ["t1"]
max_body_bytes = 4096
[store]
path = "elsewhere.db"
[log]
level = "debug"
[[routes]]
name = "b"
match = "^https://b/.*$"
)",
                                     {{"FEISHU_APP_SECRET", "changed-secret-value"}});
  const auto restart = keys_needing_restart(running, next);
  EXPECT_EQ(restart,
            (std::vector<std::string>{"server.max_body_bytes", "store.path", "feishu.app_secret"}));
  auto applied = running;
  apply_reloadable(applied, next);
  ASSERT_EQ(applied.routes.size(), 1u);
  EXPECT_EQ(applied.routes[0].name, "b");
  EXPECT_EQ(applied.server.api_tokens, std::vector<std::string>{"t1"});
  EXPECT_EQ(applied.log.level, "debug");
  EXPECT_EQ(applied.server.max_body_bytes, running.server.max_body_bytes);
  EXPECT_EQ(applied.store.path, running.store.path);
  EXPECT_TRUE(keys_needing_restart(running, running).empty());
}

namespace {
// A job of route r that died at its first attempt, committed in the store.
dead_job make_dead(store::sqlite_store& st, const std::string& id, sys_time now) {
  store::new_job j;
  j.id = id;
  j.route = "r";
  j.method = "POST";
  j.location = "http://127.0.0.1/x";
  j.request = R"({"location":"http://127.0.0.1/x"})";
  wait_for<store::enqueue_result>([&](auto done) { st.enqueue(j, now, nullptr, std::move(done)); });
  const auto c = wait_for<store::claim_result>([&](auto done) {
    st.claim({now, millis{60'000}, 10, {{"r", 10, 1}}, 0}, std::move(done));
  });
  EXPECT_EQ(c.jobs.size(), 1u);
  store::job_finish f;
  f.id = id;
  f.route = "r";
  f.claim_no = c.jobs.at(0).claim_no;
  f.attempt = {now, millis{1}, 400, {}, "dead", "HTTP 400", ""};
  f.next_state = "dead";
  f.next_attempt_at = now;
  f.last_error = "HTTP 400";
  const auto r = wait_for<store::finish_result>(
      [&](auto done) { st.finish(std::move(f), now, std::move(done)); });
  EXPECT_TRUE(r.applied) << r.error;
  return {id, "r", j.location, "HTTP 400", j.request, 1, j.request.size()};
}
}  // namespace

// The start-up look for deaths no alert reported reads the store while deliveries run: a job that
// dies meanwhile is in what it reads and is reported by the dispatcher too. It is told once,
// whichever of the two comes first.
TEST(Alerts, ADeathTheStartUpLookReadsAndTheDispatcherReportsIsToldOnce) {
  test::temp_dir dir;
  const sys_time t0{millis{1'800'000'000'000}};
  manual_clock clk(t0 + millis{10});
  store::sqlite_options o;
  o.path = dir.file("q.db");
  o.max_queue_depth = 100;
  store::sqlite_store st(o, t0);
  const auto a = make_dead(st, "a", t0 + millis{1});
  const auto b = make_dead(st, "b", t0 + millis{2});
  config cfg;
  cfg.alerts.webhook = "http://127.0.0.1:9/hook";
  cfg.alerts.format = "generic";
  cfg.alerts.delay = millis{0};
  cfg.alerts.interval = millis{0};
  boost::asio::io_context io;
  queue_service q(st, nullptr, clk, {});
  alerter al(io, q, cfg, clk);
  al.start();      // the look is out: nothing has run yet
  al.job_died(a);  // reported before the look's answer
  // Run until the look has answered and what it found is queued; then b is reported, after it.
  const auto told = [&] {
    SQLite::Database db(o.path, SQLite::OPEN_READONLY);
    SQLite::Statement s(db, "SELECT request FROM jobs WHERE route = 'resendd-alerts'");
    std::multiset<std::string> ids;
    int count = 0;
    while (s.executeStep()) {
      const auto body = json::parse(s.getColumn(0).getString())["params"];
      count += body["count"].get<int>();
      for (const auto& j : body["jobs"]) ids.insert(j["id"].get<std::string>());
    }
    return std::make_pair(count, ids);
  };
  for (int i = 0; i < 200 && told().first < 2; ++i) {
    io.restart();
    io.run_for(std::chrono::milliseconds(10));
  }
  al.job_died(b);
  io.restart();
  io.run();  // until nothing is left to do: what b would queue a second time is in the store
  const auto [count, ids] = told();
  EXPECT_EQ(count, 2);
  EXPECT_EQ(ids, (std::multiset<std::string>{"a", "b"}));
}
