// Operating the daemon: alerts to a webhook when jobs die, and SIGHUP reloads.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>

#include "support/harness.h"

using namespace resendd::test;
using nlohmann::json;

namespace {

// Two routes to the fake destinations: "local" (/a/…) and "b" (/b/…), and [alerts] to `hook`.
std::string two_routes_with_alerts(const std::string& hook, const std::string& alerts_keys) {
  return test_config(R"(^http://127\.0\.0\.1:\d+/a/.*$)", "",
                     "[[routes]]\nname = \"b\"\nmatch = '^http://127\\.0\\.0\\.1:\\d+/b/.*$'\n"
                     "allow_private_networks = true\n[alerts]\nwebhook = \"" +
                         hook + "\"\n" + alerts_keys);
}

json body_of(const received& r) { return json::parse(r.body, nullptr, false); }

// Feishu's custom-bot signature, computed here independently of resendd's code.
std::string bot_sign(const std::string& timestamp, const std::string& secret) {
  const std::string key = timestamp + "\n" + secret;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), nullptr, 0, md, &len);
  unsigned char out[64] = {};
  EVP_EncodeBlock(out, md, int(len));
  return reinterpret_cast<char*>(out);
}

}  // namespace

TEST(Alerts, ADeathIsAlertedOnceAndABurstOfFiftyIsOneMessageWithACount) {
  temp_dir dir;
  fake_server hook;  // answers 200 {"code":0}
  // Route b's tries are held until all fifty are accepted, so that they die within the alert
  // delay (1 s) of each other however slow the machine is (under AddressSanitizer, fifty intakes
  // one after another took longer than that). Released on every way out of the test.
  std::mutex gate_mutex;
  std::condition_variable gate_changed;
  bool all_in = false;
  const auto open_gate = [&] {
    std::lock_guard lock(gate_mutex);
    all_in = true;
    gate_changed.notify_all();
  };
  fake_server dest([&](const received& r) {
    if (r.target.starts_with("/b/")) {
      std::unique_lock lock(gate_mutex);
      gate_changed.wait_for(lock, std::chrono::seconds(60), [&] { return all_in; });
    }
    return fake_reply{400, R"({"error":"no such table"})"};
  });
  struct gate_guard {
    std::function<void()> open;
    ~gate_guard() { open(); }
  } guard{open_gate};
  daemon_process d(
      dir, two_routes_with_alerts(hook.url("/hook"), "delay = \"1s\"\ninterval = \"4s\"\n"));
  // One bill on route local, fifty on route b: each dies at its first attempt.
  const auto first = job_id(post_resend(d, resend_body(dest.url("/a/1"), "lunch")));
  ASSERT_FALSE(first.empty());
  // Route local's message comes first (route b's jobs cannot die before the gate opens): its
  // interval is measured from here.
  ASSERT_TRUE(hook.wait_for(1)) << d.log();
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i)
    ASSERT_EQ(post_resend(d, resend_body(dest.url("/b/" + std::to_string(i)))).status, 202);
  open_gate();
  ASSERT_TRUE(hook.wait_for(2)) << d.log();
  std::map<std::string, json> by_route;
  for (const auto& r : hook.requests()) {
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.target, "/hook");
    const auto j = body_of(r);
    ASSERT_TRUE(j.is_object()) << r.body;
    by_route[j["route"].get<std::string>()] = j;
  }
  ASSERT_EQ(by_route.size(), 2u) << d.log();
  // Route local (/a/…): one message for its one death, saying which bill, which table, why, how to
  // retry.
  const auto& a = by_route["local"];
  EXPECT_EQ(a["count"], 1);
  ASSERT_EQ(a["jobs"].size(), 1u);
  EXPECT_EQ(a["jobs"][0]["id"], first);
  EXPECT_NE(a["jobs"][0]["reason"].get<std::string>().find("HTTP 400"), std::string::npos) << a;
  const auto text = a["text"].get<std::string>();
  EXPECT_NE(text.find(R"(bill: {"备注":"lunch","金额":12.5})"), std::string::npos) << text;
  EXPECT_NE(text.find("/a/1"), std::string::npos) << text;
  EXPECT_NE(text.find("resendd jobs retry " + first), std::string::npos) << text;
  EXPECT_EQ(text.find("t-secret-token"), std::string::npos) << text;
  // Route b: fifty deaths in one message, five listed and the rest counted.
  const auto& b = by_route["b"];
  EXPECT_EQ(b["count"], 50);
  EXPECT_EQ(b["jobs"].size(), 5u);
  EXPECT_NE(b["text"].get<std::string>().find("and 45 more"), std::string::npos) << b;

  // Another death on route local within its interval waits for the interval (4 s after the first
  // message), not just the delay (1 s).
  const auto second = job_id(post_resend(d, resend_body(dest.url("/a/2"), "dinner")));
  ASSERT_TRUE(hook.wait_for(3, std::chrono::seconds(30))) << d.log();
  const auto waited = std::chrono::steady_clock::now() - t1;
  EXPECT_GE(waited, std::chrono::milliseconds(3'000));
  const auto third = body_of(hook.requests()[2]);
  EXPECT_EQ(third["route"], "local");
  EXPECT_EQ(third["count"], 1);
  EXPECT_EQ(third["jobs"][0]["id"], second);
  // Three messages queued, no more; each is a job of its own on the alert route, succeeded.
  ASSERT_TRUE(d.wait_log_count("[route resendd-alerts, HTTP 200", 3)) << d.log();
  const auto m = scrape_metrics(d, dir);
  EXPECT_EQ(m.at("resendd_alerts_total{}"), 3);
  EXPECT_EQ(hook.count(), 3u);
  // A bot cannot queue to the webhook itself.
  EXPECT_EQ(post_resend(d, resend_body(hook.url("/hook"))).status, 403);
  // The webhook's URL is a secret as a whole: operators see only its host, in the API's list and
  // job views and in the CLI's.
  const auto listed = json::parse(http_call(d.port(), "GET", "/jobs?state=succeeded").body);
  int alert_jobs = 0;
  for (const auto& job : listed["jobs"]) {
    if (job["route"] != "resendd-alerts") continue;
    ++alert_jobs;
    EXPECT_EQ(job["location"], hook.url("") + "/…(5 chars)") << job;
    const auto id = job["id"].get<std::string>();
    const auto shown = http_call(d.port(), "GET", "/jobs/" + id).body;
    EXPECT_EQ(shown.find("/hook"), std::string::npos) << shown;
    const auto cli = run_resendd(dir, {"jobs", "show", id});
    EXPECT_EQ(cli.status, 0) << cli.output;
    EXPECT_EQ(cli.output.find("/hook"), std::string::npos) << cli.output;
  }
  EXPECT_EQ(alert_jobs, 3);
}

TEST(Alerts, AFeishuBotMessageIsSignedAndAnAlertThatDiesIsNotAlerted) {
  temp_dir dir;
  std::atomic<int> seen{0};
  std::string bad_sign;
  fake_server hook([&](const received& r) {
    const auto j = body_of(r);
    const bool signed_ok =
        j.is_object() && j.value("timestamp", "") != "" &&
        j.value("sign", "") == bot_sign(j.value("timestamp", ""), "bot-secret-9");
    if (!signed_ok) bad_sign = r.body;
    // The first message is refused for good (HTTP 400, Feishu's "Bad Request"): its job dies.
    if (seen++ == 0) return fake_reply{400, R"({"code":9499,"msg":"Bad Request","data":{}})"};
    return fake_reply{200, R"({"code":0,"msg":"success","data":{}})"};
  });
  fake_server dest([](const received&) { return fake_reply{400, "{}"}; });
  daemon_process d(dir, two_routes_with_alerts(hook.url("/open-apis/bot/v2/hook/tok-1"),
                                               "format = \"feishu\"\nsecret = \"bot-secret-9\"\n"
                                               "delay = \"200ms\"\ninterval = \"200ms\"\n"));
  const auto one = job_id(post_resend(d, resend_body(dest.url("/a/1"))));
  ASSERT_TRUE(hook.wait_for(1)) << d.log();
  // The alert job died ...
  ASSERT_TRUE(d.wait_log("[route resendd-alerts, HTTP 400")) << d.log();
  // ... and another bill dies after it: the next message is about that bill, not about the
  // alert (an alert on the alert would go first: the alert route delivers one at a time).
  const auto two = job_id(post_resend(d, resend_body(dest.url("/a/2"))));
  ASSERT_TRUE(hook.wait_for(2)) << d.log();
  ASSERT_TRUE(d.wait_log("[route resendd-alerts, HTTP 200")) << d.log();
  const auto reqs = hook.requests();
  ASSERT_EQ(reqs.size(), 2u);
  for (const auto& r : reqs) {
    const auto j = body_of(r);
    EXPECT_EQ(j["msg_type"], "text") << r.body;
    EXPECT_EQ(j["content"]["text"].get<std::string>().find("resendd-alerts"), std::string::npos)
        << r.body;
  }
  EXPECT_NE(body_of(reqs[0])["content"]["text"].get<std::string>().find(one), std::string::npos);
  EXPECT_NE(body_of(reqs[1])["content"]["text"].get<std::string>().find(two), std::string::npos);
  EXPECT_EQ(bad_sign, "") << "a message without a good signature";
  // Neither the hook's token nor the signing secret is in the log.
  EXPECT_EQ(d.log().find("tok-1"), std::string::npos);
  EXPECT_EQ(d.log().find("bot-secret-9"), std::string::npos);
}

TEST(Alerts, DeathsWaitingInABatchAreQueuedAtShutdownAndSentAtTheNextStart) {
  temp_dir dir;
  fake_server hook;
  fake_server dest([](const received&) { return fake_reply{400, "{}"}; });
  const auto cfg = two_routes_with_alerts(hook.url("/hook"), "delay = \"1h\"\n");
  std::string id;
  {
    daemon_process d(dir, cfg);
    id = job_id(post_resend(d, resend_body(dest.url("/b/1"))));
    ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
    d.send_signal(SIGTERM);
    EXPECT_EQ(d.wait_exit(), 0) << d.log();
    EXPECT_NE(d.log().find("alert: 1 dead job(s) on route b reported in job"), std::string::npos)
        << d.log();
    EXPECT_EQ(hook.count(), 0u);
  }
  daemon_process again(dir, cfg);
  ASSERT_TRUE(hook.wait_for(1)) << again.log();
  EXPECT_EQ(body_of(hook.requests()[0])["jobs"][0]["id"], id);
}

TEST(Alerts, ADeathWhoseAlertWasLostToACrashIsReportedAtTheNextStart) {
  temp_dir dir;
  fake_server hook;
  fake_server dest([](const received&) { return fake_reply{400, "{}"}; });
  std::string id, reported;
  {
    // The message would go out in an hour: kill -9 loses it from memory.
    daemon_process d(dir, two_routes_with_alerts(hook.url("/hook"), "delay = \"1h\"\n"));
    reported = job_id(post_resend(d, resend_body(dest.url("/a/1"))));
    ASSERT_TRUE(d.wait_log("job " + reported + " attempt 1: dead")) << d.log();
    d.send_signal(SIGTERM);  // a clean stop queues it (and the next start sends it)
    EXPECT_EQ(d.wait_exit(), 0) << d.log();
  }
  {
    daemon_process d(dir, two_routes_with_alerts(hook.url("/hook"), "delay = \"1h\"\n"));
    ASSERT_TRUE(hook.wait_for(1)) << d.log();  // the one queued at the stop
    id = job_id(post_resend(d, resend_body(dest.url("/b/1"))));
    ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
    d.kill9();
  }
  daemon_process again(dir, two_routes_with_alerts(hook.url("/hook"), "delay = \"100ms\"\n"));
  ASSERT_TRUE(hook.wait_for(2)) << again.log();
  EXPECT_NE(again.log().find("alert: 1 dead job(s) of the last 1h were not reported"),
            std::string::npos)
      << again.log();
  const auto second = body_of(hook.requests()[1]);
  EXPECT_EQ(second["route"], "b");
  EXPECT_EQ(second["count"], 1);
  EXPECT_EQ(second["jobs"][0]["id"], id);
  // The job reported before the crash is not reported again.
  EXPECT_EQ(hook.requests()[1].body.find(reported), std::string::npos);
  ASSERT_TRUE(again.wait_log("[route resendd-alerts, HTTP 200")) << again.log();
  EXPECT_EQ(hook.count(), 2u);
}

TEST(Reload, AQueuedJobWhoseRouteIsGoneIsNeverSentAndComesBackWithItsRoute) {
  temp_dir dir;
  std::atomic<int> n{0};
  fake_server dest(busy_once(n, "3"));
  const auto first = test_config(R"(^http://127\.0\.0\.1:\d+/a$)", "", "");
  daemon_process d(dir, first);
  const auto id = job_id(post_resend(d, resend_body(dest.url("/a"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: retry")) << d.log();
  // Within the 3 s the destination asked for, the route is replaced by one named otherwise for
  // another path: the job's route is not configured and its location matches nothing.
  auto second = first;
  second.replace(second.find("name = \"local\""), 14, "name = \"other\"");
  second.replace(second.find("/a$"), 3, "/b$");
  dir.write("resendd.toml", second);
  d.send_signal(SIGHUP);
  ASSERT_TRUE(d.wait_log("SIGHUP: configuration reloaded")) << d.log();
  if (on_postgres()) {
    // Another daemon may have the route: the job is left queued for it, no attempt used; the
    // route back, it is delivered.
    EXPECT_TRUE(
        d.wait_log("SIGHUP: 1 queued job(s) of route(s) [local], which this daemon's "
                   "configuration does not name"))
        << d.log();
    ASSERT_TRUE(d.wait_log("job " + id +
                           " attempt 2: retry (location matches no configured route in this "
                           "daemon; left for a daemon whose routes take it)"))
        << d.log();
    EXPECT_EQ(dest.count(), 1u);  // not sent
    dir.write("resendd.toml", first);
    d.send_signal(SIGHUP);
    ASSERT_TRUE(dest.wait_for(2)) << d.log();
    ASSERT_TRUE(d.wait_log(": succeeded")) << d.log();
    EXPECT_EQ(
        sql_value(d.db_path(), "select state || ' ' || attempts from jobs where id = '" + id + "'"),
        "succeeded 2");
  } else {
    // Said at once, while the route can still come back.
    EXPECT_TRUE(
        d.wait_log("SIGHUP: 1 queued job(s) of route(s) [local], which the configuration "
                   "no longer names: each is dead at its next attempt"))
        << d.log();
    ASSERT_TRUE(
        d.wait_log("job " + id + " attempt 2: dead: location matches no configured route any more"))
        << d.log();
    EXPECT_EQ(dest.count(), 1u);  // not sent
    // The route back, and the job queued again: delivered.
    dir.write("resendd.toml", first);
    d.send_signal(SIGHUP);
    ASSERT_TRUE(d.wait_log_count("SIGHUP: configuration reloaded", 2)) << d.log();
    const auto again = http_call(d.port(), "POST", "/jobs/retry?state=dead");
    ASSERT_EQ(again.status, 200) << again.body;
    EXPECT_EQ(json::parse(again.body)["count"], 1);
    ASSERT_TRUE(d.wait_log("job " + id + " attempt 3: succeeded")) << d.log();
  }
  EXPECT_EQ(dest.count(), 2u);
  // At start too: a job waiting to be tried again, the daemon stopped, and started with the
  // route gone.
  n = 0;
  const auto later = job_id(post_resend(d, resend_body(dest.url("/a"))));
  ASSERT_TRUE(d.wait_log("job " + later + " attempt 1: retry")) << d.log();
  EXPECT_EQ(d.terminate(), 0) << d.log();
  daemon_process restarted(dir, second);
  EXPECT_TRUE(restarted.wait_log("1 queued job(s) of route(s) [local], which " +
                                 std::string(on_postgres() ? "this daemon's configuration does not"
                                                           : "the configuration no longer") +
                                 " name"))
      << restarted.log();
}

TEST(Reload, SighupAppliesRoutesTokensAndLogLevelAndABadFileChangesNothing) {
  temp_dir dir;
  fake_server dest([](const received& r) {
    return r.target == "/a" ? fake_reply{400, "{}"} : fake_reply{};
  });
  // Route /a only.
  const auto first = test_config(R"(^http://127\.0\.0\.1:\d+/a$)", "", "");
  daemon_process d(dir, first);
  EXPECT_EQ(post_resend(d, resend_body(dest.url("/b"))).status, 403);
  // A file that does not load: said once, nothing changes, the daemon goes on.
  dir.write("resendd.toml", first + "\n[[routes]]\nname = 1\n");
  d.send_signal(SIGHUP);
  ASSERT_TRUE(d.wait_log("SIGHUP: the configuration was not reloaded")) << d.log();
  EXPECT_NE(d.log().find("routes[1].name"), std::string::npos) << d.log();
  EXPECT_EQ(post_resend(d, resend_body(dest.url("/b"))).status, 403);

  // Routes /a and /b, a token, warnings only, and a key that needs a restart.
  auto second = test_config(R"(^http://127\.0\.0\.1:\d+/[ab]$)", "", "[log]\nlevel = \"warn\"\n");
  second.replace(second.find("[server]\n"), 9,
                 "[server]\napi_tokens = [\"reload-token-1\"]\nmax_body_bytes = 4096\n");
  dir.write("resendd.toml", second);
  d.send_signal(SIGHUP);
  ASSERT_TRUE(d.wait_log("SIGHUP: configuration reloaded")) << d.log();
  EXPECT_NE(d.log().find("changed but kept until a restart: server.max_body_bytes"),
            std::string::npos)
      << d.log();
  const std::map<std::string, std::string> bearer{{"Authorization", "Bearer reload-token-1"}};
  EXPECT_EQ(post_resend(d, resend_body(dest.url("/b"))).status, 401);
  const auto b = post_resend(d, resend_body(dest.url("/b")), bearer);
  ASSERT_EQ(b.status, 202) << b.body;
  ASSERT_TRUE(dest.wait_for(1));
  // max_body_bytes is not applied until a restart: a 5 kB body is still taken.
  auto big = resend_body(dest.url("/a"));
  big["params"]["note"] = std::string(5000, 'x');
  const auto dead = job_id(post_resend(d, big, bearer));
  ASSERT_FALSE(dead.empty());
  ASSERT_TRUE(d.wait_log("job " + dead + " attempt 1: dead")) << d.log();  // a warning
  // At warn, the info lines of the first job ("queued", written before its 202) are not written.
  EXPECT_EQ(d.log().find("job " + job_id(b) + " queued"), std::string::npos) << d.log();
  d.send_signal(SIGTERM);
  EXPECT_EQ(d.wait_exit(), 0) << d.log();
}
