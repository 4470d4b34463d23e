// The /resend → delivery loop against the real binary and fake destinations on 127.0.0.1.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>

#include "support/certs.h"
#include "support/harness.h"

using namespace resendd::test;
using nlohmann::json;

TEST(Resend, AcceptedJobIsCommittedAndDeliveredWithFieldsAsObject) {
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config());
  const auto a = post_resend(d, resend_body(dest.url("/write"), "lunch"));
  ASSERT_EQ(a.status, 202) << a.body;
  const auto id = job_id(a);
  EXPECT_EQ(json::parse(a.body)["state"], "queued");
  EXPECT_EQ(a.headers.at("location"), "/jobs/" + id);
  // 202 came after the commit: the row is already readable by another connection.
  EXPECT_NE(sql_value(d.db_path(), "select state from jobs where id = '" + id + "'"), "");

  ASSERT_TRUE(dest.wait_for(1));
  const auto got = dest.requests()[0];
  EXPECT_EQ(got.method, "POST");
  EXPECT_EQ(got.target, "/write");
  EXPECT_EQ(got.header("x-trace"), "lunch");
  EXPECT_EQ(got.header("authorization"), "Bearer t-secret-token-value-123456");
  const auto body = json::parse(got.body);
  ASSERT_TRUE(body["records"][0]["fields"].is_object()) << got.body;
  EXPECT_EQ(body["records"][0]["fields"]["备注"], "lunch");

  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
  const auto row =
      sql_rows(d.db_path(), "select state, attempts, last_error from jobs where id = '" + id + "'");
  EXPECT_EQ(row[0], (std::vector<std::string>{"succeeded", "1", "NULL"}));
  EXPECT_EQ(d.log().find("t-secret-token-value-123456"), std::string::npos);
}

TEST(Resend, RetriesThrough503sThenSucceeds) {
  temp_dir dir;
  std::atomic<int> n{0};
  fake_server dest([&](const received&) {
    fake_reply r;
    if (++n <= 2) r.status = 503, r.body = "busy";
    return r;
  });
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 3: succeeded")) << d.log();
  EXPECT_EQ(dest.count(), 3u);
  EXPECT_EQ(sql_value(d.db_path(), "select attempts from jobs where id = '" + id + "'"), "3");
  const auto tries = attempt_rows(d, id, "n, http_status, outcome");
  ASSERT_EQ(tries.size(), 3u);
  EXPECT_EQ(tries[0], (std::vector<std::string>{"1", "503", "retry"}));
  EXPECT_EQ(tries[2], (std::vector<std::string>{"3", "200", "succeeded"}));
}

TEST(Resend, ClientErrorIsDeadAfterOneTry) {
  temp_dir dir;
  fake_server dest([](const received&) { return fake_reply{400, R"({"error":"bad field"})"}; });
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  const auto row = sql_rows(
      d.db_path(),
      "select state, attempts, last_status, last_error, last_response from jobs where id = '" + id +
          "'");
  EXPECT_EQ(row[0][0], "dead");
  EXPECT_EQ(row[0][1], "1");
  EXPECT_EQ(row[0][2], "400");
  EXPECT_EQ(row[0][3], "HTTP 400");
  EXPECT_NE(row[0][4].find("bad field"), std::string::npos);
  EXPECT_EQ(dest.count(), 1u);
}

TEST(Resend, Always500IsDeadAfterMaxAttempts) {
  temp_dir dir;
  fake_server dest([](const received&) { return fake_reply{500, "oops"}; });
  daemon_process d(dir, local_config("max_attempts = 4"));
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 4: dead")) << d.log();
  EXPECT_EQ(dest.count(), 4u);
  const auto row =
      sql_rows(d.db_path(), "select state, attempts, last_error from jobs where id = '" + id + "'");
  EXPECT_EQ(row[0][0], "dead");
  EXPECT_EQ(row[0][1], "4");
  EXPECT_NE(row[0][2].find("max_attempts (4) used up"), std::string::npos);
}

TEST(Resend, BadInputGetsItsOwnErrorAndQueuesNothing) {
  temp_dir dir;
  daemon_process d(dir, local_config());
  const std::string loc = "http://127.0.0.1:1/x";
  struct c {
    std::string body;
    int status;
    std::string code;
  };
  const std::vector<c> cases = {
      {"not json", 400, "bad_json"},
      {"[1,2]", 400, "bad_json"},
      {R"({"headers":{}})", 400, "bad_location"},
      {R"({"location":"nope"})", 400, "bad_location"},
      {json{{"location", loc}, {"headers", {{"a", 1}}}}.dump(), 400, "bad_headers"},
      {json{{"location", loc}, {"commands", {{"json_parse", "x"}}}}.dump(), 400, "bad_commands"},
      {json{{"location", loc}, {"commands", {{"json_parse", {"$$"}}}}}.dump(), 400, "bad_path"},
      {json{{"location", loc},
            {"params", {{"f", 1}}},
            {"commands", {{"json_parse", {"$.params.f"}}}}}
           .dump(),
       400, "bad_path"},
      {json{{"location", "https://example.com/"}}.dump(), 403, "no_route"},
      {std::string(2 << 20, ' '), 413, "too_large"},
  };
  for (const auto& k : cases) {
    const auto a = http_call(d.port(), "POST", "/resend", k.body);
    EXPECT_EQ(a.status, k.status) << k.body.substr(0, 80);
    auto j = json::parse(a.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << a.body;
    EXPECT_EQ(j["code"], k.code);
    EXPECT_TRUE(j["error"].is_string());
  }
  EXPECT_EQ(http_call(d.port(), "GET", "/nowhere").status, 404);
  EXPECT_EQ(http_call(d.port(), "GET", "/resend").status, 405);
  // Raw garbage on the socket does not hurt the daemon.
  {
    namespace asio = boost::asio;
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), d.port()});
    asio::write(s, asio::buffer(std::string("\x01\x02 GARBAGE\r\n\r\n")));
    char buf[512];
    boost::system::error_code ec;
    s.read_some(asio::buffer(buf), ec);
  }
  EXPECT_EQ(http_call(d.port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), "0");
}

TEST(Resend, IdempotencyKeyQueuesOnce) {
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config());
  const auto a = post_resend(d, resend_body(dest.url("/x")), {{"Idempotency-Key", "bill-42"}});
  const auto b = post_resend(d, resend_body(dest.url("/x")), {{"Idempotency-Key", "bill-42"}});
  ASSERT_EQ(a.status, 202);
  ASSERT_EQ(b.status, 202);
  EXPECT_EQ(job_id(a), job_id(b));
  ASSERT_TRUE(d.wait_log("job " + job_id(a) + " attempt 1: succeeded"));
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), "1");
}

TEST(Resend, AdminApiShowsJobsWithSecretsMasked) {
  temp_dir dir;
  fake_server dest([](const received&) { return fake_reply{400, "no"}; });
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead"));
  const auto a = http_call(d.port(), "GET", "/jobs/" + id);
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(a.body.find("t-secret-token-value-123456"), std::string::npos);
  const auto j = json::parse(a.body);
  EXPECT_EQ(j["state"], "dead");
  EXPECT_EQ(j["attempt_log"].size(), 1u);
  EXPECT_EQ(http_call(d.port(), "GET", "/jobs?state=dead").status, 200);
  EXPECT_EQ(json::parse(http_call(d.port(), "GET", "/jobs?state=dead&limit=5").body)["jobs"].size(),
            1u);
  EXPECT_EQ(http_call(d.port(), "GET", "/jobs/nope").status, 404);
  // Retry by hand: it is delivered (and dies) once more.
  EXPECT_EQ(http_call(d.port(), "POST", "/jobs/" + id + "/retry").status, 200);
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: dead")) << d.log();
  EXPECT_EQ(http_call(d.port(), "POST", "/jobs/" + id + "/cancel").status, 409);
  const auto metrics = http_call(d.port(), "GET", "/metrics");
  EXPECT_NE(metrics.body.find("resendd_jobs{state=\"dead\",route=\"local\"} 1"), std::string::npos)
      << metrics.body;
  EXPECT_EQ(http_call(d.port(), "GET", "/readyz").status, 200);
}

TEST(Resend, ApiTokensGuardResendAndJobs) {
  temp_dir dir;
  daemon_process d(dir, local_config("", "[log]\nlevel = \"info\"\n"),
                   {{"RESENDD_API_TOKENS", "sekrit-token-0123456789"}});
  const auto body = resend_body("http://127.0.0.1:1/x").dump();
  EXPECT_EQ(http_call(d.port(), "POST", "/resend", body).status, 401);
  EXPECT_EQ(
      http_call(d.port(), "POST", "/resend", body, {{"Authorization", "Bearer wrong"}}).status,
      401);
  EXPECT_EQ(http_call(d.port(), "GET", "/jobs").status, 401);
  EXPECT_EQ(http_call(d.port(), "POST", "/resend", body,
                      {{"Authorization", "Bearer sekrit-token-0123456789"}})
                .status,
            202);
  // Two Authorization fields are no credential, even when the last one is right.
  EXPECT_EQ(http_call(d.port(), "POST", "/resend", body,
                      {{"Authorization", "Bearer wrong"},
                       {"authorization", "Bearer sekrit-token-0123456789"}})
                .status,
            401);
  EXPECT_EQ(http_call(d.port(), "GET", "/healthz").status, 200);
}

TEST(Resend, SigtermStopsCleanly) {
  temp_dir dir;
  daemon_process d(dir, local_config());
  EXPECT_EQ(d.terminate(), 0);
  EXPECT_NE(d.log().find("stopped"), std::string::npos) << d.log();
}

namespace {
// A destination that holds every request until the test opens it.
struct gated_destination {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  fake_server server{[this](const received&) {
    std::unique_lock lock(m);
    cv.wait_for(lock, std::chrono::seconds(30), [&] { return open; });
    return fake_reply{};
  }};
  void release() {
    {
      std::lock_guard lock(m);
      open = true;
    }
    cv.notify_all();
  }
  ~gated_destination() { release(); }
};
}  // namespace

TEST(Shutdown, InFlightDeliveryFinishesWithinTheGrace) {
  temp_dir dir;
  gated_destination dest;
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.server.url("/x"))));
  ASSERT_TRUE(dest.server.wait_for(1));
  d.send_signal(SIGTERM);
  ASSERT_TRUE(d.wait_log("shutting down (in flight: 1)")) << d.log();
  // The delivery held across the signal still completes and is recorded.
  dest.release();
  EXPECT_EQ(d.wait_exit(), 0) << d.log();
  EXPECT_EQ(sql_value(d.db_path(), "select state from jobs where id = '" + id + "'"), "succeeded");
}

TEST(Shutdown, DeliveryPastTheGraceIsQueuedAgain) {
  temp_dir dir;
  gated_destination dest;
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.server.url("/x"))));
  ASSERT_TRUE(dest.server.wait_for(1));
  d.send_signal(SIGTERM);
  EXPECT_EQ(d.wait_exit(), 0) << d.log();  // after shutdown_grace (2s in local_config)
  EXPECT_NE(d.log().find("queued again"), std::string::npos) << d.log();
  EXPECT_EQ(sql_value(d.db_path(), "select state from jobs where id = '" + id + "'"), "queued");
  EXPECT_EQ(sql_value(d.db_path(), "select lease_until from jobs where id = '" + id + "'"), "NULL");
}

TEST(Cli, CheckConfigMigrateAndErrors) {
  temp_dir dir;
  dir.write("good.toml", local_config());
  auto r = run_resendd(dir, {"check-config", "--config", dir.file("good.toml")},
                       {{"FEISHU_APP_SECRET", "very-secret-app-secret-42"}});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("[[routes]]"), std::string::npos);
  EXPECT_EQ(r.output.find("very-secret-app-secret-42"), std::string::npos);
  dir.write("bad.toml", "[delivery]\nmax_attempts = \"many\"\n");
  r = run_resendd(dir, {"check-config", "--config", dir.file("bad.toml")});
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.output.find("delivery.max_attempts"), std::string::npos) << r.output;
  r = run_resendd(dir, {"migrate"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(sql_value(store_url(dir), "select max(version) from schema_migrations"),
            on_postgres() ? "2" : "7");
  if (!on_postgres()) {
    EXPECT_EQ(sql_value(store_url(dir), "pragma auto_vacuum"), "2");  // incremental
  }
  r = run_resendd(dir, {"jobs", "list", "--state", "dead"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("[]"), std::string::npos);
}

TEST(Cli, JobsCommandsAndHealthcheck) {
  temp_dir dir;
  fake_server dest([](const received&) { return fake_reply{422, "nope"}; });
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  const auto url = "http://127.0.0.1:" + std::to_string(d.port()) + "/healthz";
  EXPECT_EQ(run_resendd(dir, {"healthcheck", "--url", url}).status, 0);
  auto r = run_resendd(dir, {"jobs", "show", id});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\"state\": \"dead\""), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("t-secret-token-value-123456"), std::string::npos);
  // An id is one path segment of the daemon's API, whatever it holds: this one, pasted into the
  // path as it is, would ask the daemon for a forced retry of the job instead of a cancel.
  r = run_resendd(dir, {"jobs", "cancel", id + "/retry?force=true&x="});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("no job"), std::string::npos) << r.output;
  EXPECT_EQ(sql_value(d.db_path(), "select state from jobs where id = '" + id + "'"), "dead");
  // States that do not exist are refused, not read as "no such jobs".
  r = run_resendd(dir, {"jobs", "list", "--state", "bogus"});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("bogus"), std::string::npos) << r.output;
  r = run_resendd(dir, {"jobs", "purge", "--older-than", "0s", "--state", "dead,"});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_EQ(http_call(d.port(), "GET", "/jobs?state=dead&state=queued").status, 400);
  r = run_resendd(dir, {"jobs", "retry", "--state", "dead"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("1 job(s) queued"), std::string::npos) << r.output;
  // The running daemon picks the job up again within its poll interval.
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 2: dead")) << d.log();
  // Purge keeps dead jobs unless asked.
  r = run_resendd(dir, {"jobs", "purge", "--older-than", "0s"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), "1");
  r = run_resendd(dir, {"jobs", "purge", "--older-than", "0s", "--state", "dead"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("1 job(s) purged"), std::string::npos) << r.output;
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), "0");
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from attempts"), "0");  // cascaded
  d.terminate();
  EXPECT_NE(run_resendd(dir, {"healthcheck", "--url", url}).status, 0);
  // Without a daemon the CLI acts on the file itself, and refuses the same states.
  r = run_resendd(dir, {"jobs", "purge", "--older-than", "0s", "--state", "bogus"});
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_EQ(r.output.find("purged"), std::string::npos) << r.output;
}

TEST(Cli, RefusesToListenPubliclyWithoutTokens) {
  temp_dir dir;
  dir.write("public.toml", "[server]\nlisten = \"0.0.0.0:0\"\n");
  const auto r = run_resendd(dir, {"serve", "--config", dir.file("public.toml")});
  EXPECT_EQ(r.status, 2);  // a configuration error, found when the file is read
  EXPECT_NE(r.output.find("without server.api_tokens"), std::string::npos) << r.output;
  // check-config refuses what serve would refuse.
  const auto c = run_resendd(dir, {"check-config", "--config", dir.file("public.toml")});
  EXPECT_NE(c.status, 0);
  EXPECT_NE(c.output.find("without server.api_tokens"), std::string::npos) << c.output;
}

TEST(Resend, ExpectContinueIsAnswered) {
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config());
  namespace asio = boost::asio;
  const auto body = resend_body(dest.url("/x")).dump();
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), d.port()});
  asio::write(s,
              asio::buffer("POST /resend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           "Expect: 100-continue\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n"));
  std::string got(64, '\0');
  got.resize(s.read_some(asio::buffer(got)));
  EXPECT_EQ(got.rfind("HTTP/1.1 100 Continue", 0), 0u) << got;
  asio::write(s, asio::buffer(body));
  std::string rest(4096, '\0');
  rest.resize(s.read_some(asio::buffer(rest)));
  EXPECT_NE(rest.find("202 Accepted"), std::string::npos) << rest;
}

// The server reads a request's body in one go into a buffer that keeps its size for the next
// request on the connection; pipelined requests of every size (past that buffer's 64 KiB cap,
// chunked, small after large) must each still be read whole, in order.
TEST(Resend, PipelinedRequestsOfEverySizeOnOneConnectionAreEachStoredWhole) {
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config());
  std::vector<std::string> bodies;
  for (const std::size_t note : {1'000, 100'000, 2'000, 10, 1'000}) {
    auto b = resend_body(dest.url("/p"));
    b["params"]["records"][0]["fields"] = nlohmann::json{{"备注", std::string(note, 'n')}}.dump();
    b["headers"].erase("Authorization");  // masked in the row once the job has succeeded
    bodies.push_back(b.dump());
  }
  std::string wire;
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    const bool chunked = i == 2, last = i + 1 == bodies.size();
    wire += "POST /resend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    if (last) wire += "Connection: close\r\n";
    if (chunked) {
      const std::size_t half = bodies[i].size() / 2;
      wire += "Transfer-Encoding: chunked\r\n\r\n";
      for (const auto& piece : {bodies[i].substr(0, half), bodies[i].substr(half)})
        wire += (std::ostringstream() << std::hex << piece.size()).str() + "\r\n" + piece + "\r\n";
      wire += "0\r\n\r\n";
    } else {
      wire += "Content-Length: " + std::to_string(bodies[i].size()) + "\r\n\r\n" + bodies[i];
    }
  }
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), d.port()});
  asio::write(s, asio::buffer(wire));
  std::string answers;
  boost::system::error_code ec;
  asio::read(s, asio::dynamic_buffer(answers), ec);  // to the close the last request asked for
  EXPECT_EQ(ec, asio::error::eof);
  std::vector<std::string> ids;
  for (std::size_t at = 0; (at = answers.find("\r\n\r\n{", at)) != std::string::npos;) {
    at += 4;
    const auto end = answers.find('}', at);
    ASSERT_NE(end, std::string::npos) << answers;
    http_answer a;
    a.body = answers.substr(at, end + 1 - at);
    ids.push_back(job_id(a));
  }
  ASSERT_EQ(ids.size(), bodies.size()) << answers.substr(0, 2000);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const auto rows = sql_rows(d.db_path(), "select request from jobs where id = '" + ids[i] + "'");
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0][0], bodies[i]);
  }
}

TEST(Resend, RetryAfterZeroWaitsTheBackoffAndJobsUnderOneLimitSpreadOut) {
  temp_dir dir;
  fake_server dest([](const received&) {
    return fake_reply{429, "slow down", {{"Retry-After", "0"}}};
  });
  daemon_process d(dir, local_config("retry_base = \"2s\"\nretry_cap = \"1m\""));
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(job_id(post_resend(d, resend_body(dest.url("/x")))));
  ASSERT_TRUE(d.wait_log_count(": rate_limited", 50)) << d.log();
  // Every job waits at least the policy's first backoff (2 s), not 0 ...
  const auto waits =
      sql_rows(d.db_path(), "select " + sql_ms_between("j.next_attempt_at", "a.started_at") +
                                " from jobs j join attempts a on a.job_id = j.id and a.n = 1");
  ASSERT_EQ(waits.size(), 50u);
  double lo = 1e18, hi = 0;
  for (const auto& w : waits) {
    EXPECT_GE(std::stod(w[0]), 2000.0);
    lo = std::min(lo, std::stod(w[0]));
    hi = std::max(hi, std::stod(w[0]));
  }
  // ... and they do not come back in the same second.
  EXPECT_GT(hi - lo, 1000.0);
  EXPECT_EQ(dest.count(), 50u);
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from attempts"), "50");
}

TEST(Resend, RateLimitedTriesOfOneJobAreCapped) {
  temp_dir dir;
  fake_server dest([](const received&) {
    return fake_reply{429, "slow down", {{"Retry-After", "0"}}};
  });
  daemon_process d(dir, local_config("max_rate_limited = 3"));
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 3: dead")) << d.log();
  const auto row = sql_rows(
      d.db_path(),
      "select state, attempts, free_attempts, last_error from jobs where id = '" + id + "'");
  EXPECT_EQ(row[0][0], "dead");
  EXPECT_EQ(row[0][1], "0");
  EXPECT_NE(row[0][3].find("rate limited 3 times (max_rate_limited)"), std::string::npos)
      << row[0][3];
  EXPECT_EQ(dest.count(), 3u);
}

// Messages that quote input are cut on character boundaries and escaped: every 400 is valid JSON.
TEST(Resend, ErrorsQuotingInputAreValidUtf8Json) {
  temp_dir dir;
  daemon_process d(dir, local_config());
  const std::string loc = "http://127.0.0.1:9/x";
  const std::string long_name = std::string(99, 'a') + "金额";  // byte 100 is inside 金
  const std::vector<std::string> bodies = {
      // a header name cut at 100 bytes (not a token), a header value that is not a string
      json{{"location", loc}, {"headers", {{long_name, "v"}}}}.dump(),
      json{{"location", loc}, {"headers", {{long_name, 1}}}}.dump(),
      // an unknown command's name cut at 100 bytes
      json{{"location", loc}, {"commands", {{long_name, json::array()}}}}.dump(),
      // a json_parse path cut at 200 bytes, and the character after ']' quoted
      json{{"location", loc},
           {"commands", {{"json_parse", {"$.x" + std::string(196, 'b') + "金额["}}}}}
          .dump(),
      json{{"location", loc}, {"commands", {{"json_parse", {"$['a']金"}}}}}.dump(),
  };
  for (const auto& body : bodies) {
    const auto a = http_call(d.port(), "POST", "/resend", body);
    EXPECT_EQ(a.status, 400) << body;
    const auto j = json::parse(a.body, nullptr, false);  // strict: invalid UTF-8 is discarded
    ASSERT_FALSE(j.is_discarded()) << a.body;
    EXPECT_TRUE(j.contains("error") && j.contains("code")) << a.body;
    // Cut on a boundary: no half character was replaced by U+FFFD.
    EXPECT_EQ(a.body.find("\xef\xbf\xbd"), std::string::npos) << a.body;
  }
  // The character after ']' is quoted whole.
  const auto a = http_call(d.port(), "POST", "/resend", bodies.back());
  EXPECT_NE(a.body.find("unexpected '金'"), std::string::npos) << a.body;
  // An Idempotency-Key that is not UTF-8 is refused, and nothing is queued.
  const auto k = post_resend(d, resend_body(loc), {{"Idempotency-Key", "key-\xff\xfe"}});
  EXPECT_EQ(k.status, 400) << k.body;
  EXPECT_NE(k.body.find("bad_idempotency_key"), std::string::npos) << k.body;
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), "0");
}

TEST(Cli, BinaryResponsesAreStoredAsBase64AndEveryReaderWorks) {
  temp_dir dir;
  fake_server dest([](const received&) {
    return fake_reply{400, std::string("\xff\xd8\xff\xe0\x00JFIF", 9)};
  });
  daemon_process d(dir, local_config());
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  const auto stored =
      sql_value(d.db_path(), "select last_response from jobs where id = '" + id + "'");
  EXPECT_EQ(stored, "(not UTF-8, base64) /9j/4ABKRklG");
  auto r = run_resendd(dir, {"jobs", "list"});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(id), std::string::npos) << r.output;
  r = run_resendd(dir, {"jobs", "show", id});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("/9j/4ABKRklG"), std::string::npos) << r.output;
  const auto api = http_call(d.port(), "GET", "/jobs/" + id);
  EXPECT_EQ(api.status, 200);
  EXPECT_FALSE(json::parse(api.body, nullptr, false).is_discarded()) << api.body;
}

TEST(Resend, PreferWaitAnswersWithTheDestinationsAnswerWhenItIsQuick) {
  temp_dir dir;
  std::atomic<int> n{0};
  fake_server dest([&](const received&) {
    if (++n == 1) return fake_reply{201, R"({"code":0,"data":{"records":[{"record_id":"rec1"}]}})"};
    return fake_reply{503, "busy, try later"};
  });
  daemon_process d(dir, local_config("retry_base = \"10s\"\nretry_cap = \"10s\""));
  auto a = post_resend(d, resend_body(dest.url("/x")), {{"Prefer", "respond-async, wait=2"}});
  ASSERT_EQ(a.status, 201) << a.body;
  auto j = json::parse(a.body);
  EXPECT_EQ(j["response"]["data"]["records"][0]["record_id"], "rec1");
  EXPECT_EQ(j["state"], "succeeded");
  EXPECT_EQ(j["status"], 201);
  const auto id = j["id"].get<std::string>();
  EXPECT_EQ(sql_value(d.db_path(), "select state from jobs where id = '" + id + "'"), "succeeded");
  // A first answer that is retried is still the answer (with the job's state), via ?wait= too.
  a = http_call(d.port(), "POST", "/resend?wait=2", resend_body(dest.url("/x")).dump());
  ASSERT_EQ(a.status, 503) << a.body;
  j = json::parse(a.body);
  EXPECT_EQ(j["response"], "busy, try later");
  EXPECT_EQ(j["state"], "queued");
  // Without the preference nothing changes; a wait beyond 10 s in the query is refused.
  a = post_resend(d, resend_body(dest.url("/x")));
  EXPECT_EQ(a.status, 202) << a.body;
  a = http_call(d.port(), "POST", "/resend?wait=11", resend_body(dest.url("/x")).dump());
  EXPECT_EQ(a.status, 400) << a.body;
  // Two waits are not a choice the daemon makes for the bot; nothing is queued.
  const auto jobs = sql_value(d.db_path(), "select count(*) from jobs");
  a = http_call(d.port(), "POST", "/resend?wait=0&wait=2", resend_body(dest.url("/x")).dump());
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), jobs);
}

TEST(Resend, PreferIsReadAsRfc7240WritesItAndFieldsGivenTwiceAreNotGuessedAt) {
  temp_dir dir;
  fake_server dest([](const received&) { return fake_reply{201, R"({"code":0})"}; });
  daemon_process d(dir, local_config());
  // Spaces around "=" (BWS), a quoted value, the preference on a second Prefer field line: all
  // ask for the wait, so the destination's answer comes back.
  for (const std::map<std::string, std::string>& h :
       {std::map<std::string, std::string>{{"Prefer", "wait = 2"}},
        std::map<std::string, std::string>{{"Prefer", "wait=\"2\""}},
        std::map<std::string, std::string>{{"Prefer", "respond-async"}, {"prefer", "wait=2"}},
        std::map<std::string, std::string>{{"Prefer", "handling=lenient; x=1, WAIT=2"}}}) {
    const auto a = post_resend(d, resend_body(dest.url("/x")), h);
    EXPECT_EQ(a.status, 201) << h.begin()->second << ": " << a.body;
  }
  // A parameter of another preference is not a preference: no wait, a plain 202.
  auto a = post_resend(d, resend_body(dest.url("/x")), {{"Prefer", "respond-async; wait=2"}});
  EXPECT_EQ(a.status, 202) << a.body;
  // Two Idempotency-Key fields: refused, nothing queued, whichever way they are spelled.
  const auto jobs = sql_value(d.db_path(), "select count(*) from jobs");
  a = post_resend(d, resend_body(dest.url("/x")),
                  {{"Idempotency-Key", "bill-1"}, {"idempotency-key", "bill-2"}});
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_EQ(json::parse(a.body)["code"], "bad_idempotency_key");
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), jobs);
}

TEST(Resend, PreferWaitAgainstASlowDestinationIsA202AndTheJobStillSucceeds) {
  temp_dir dir;
  gated_destination dest;
  daemon_process d(dir, local_config());
  const auto a = post_resend(d, resend_body(dest.server.url("/x")), {{"Prefer", "wait=1"}});
  ASSERT_EQ(a.status, 202) << a.body;  // after the 1 s the bot allowed
  const auto id = job_id(a);
  ASSERT_FALSE(id.empty());
  dest.release();
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
}

TEST(Resend, IdempotencyKeyReusedWithAnotherRequestIs422) {
  temp_dir dir;
  fake_server dest([](const received&) { return fake_reply{}; });
  daemon_process d(dir, local_config());
  const auto first = post_resend(d, resend_body(dest.url("/x"), "a"), {{"Idempotency-Key", "k-1"}});
  ASSERT_EQ(first.status, 202) << first.body;
  // The same request again: the same job.
  const auto again = post_resend(d, resend_body(dest.url("/x"), "a"), {{"Idempotency-Key", "k-1"}});
  EXPECT_EQ(again.status, 202) << again.body;
  EXPECT_EQ(job_id(again), job_id(first));
  // Another request under that key: refused, not silently dropped.
  const auto other = post_resend(d, resend_body(dest.url("/x"), "b"), {{"Idempotency-Key", "k-1"}});
  EXPECT_EQ(other.status, 422) << other.body;
  EXPECT_NE(other.body.find("idempotency_key_reused"), std::string::npos) << other.body;
  EXPECT_EQ(sql_value(d.db_path(), "select count(*) from jobs"), "1");
  // Once the job succeeded (its stored credentials scrubbed) the same request is still a repeat.
  ASSERT_TRUE(d.wait_log("job " + job_id(first) + " attempt 1: succeeded")) << d.log();
  const auto late = post_resend(d, resend_body(dest.url("/x"), "a"), {{"Idempotency-Key", "k-1"}});
  EXPECT_EQ(late.status, 202) << late.body;
  EXPECT_EQ(job_id(late), job_id(first));
  EXPECT_EQ(post_resend(d, resend_body(dest.url("/x"), "b"), {{"Idempotency-Key", "k-1"}}).status,
            422);
}

TEST(Cli, VersionAndSighup) {
  temp_dir dir;
  const auto v = run_resendd(dir, {"--version"});
  EXPECT_EQ(v.status, 0);
  EXPECT_NE(v.output.find("resendd 0."), std::string::npos) << v.output;
  daemon_process d(dir, local_config());
  // SIGHUP does not end the daemon (its default action would): it reloads the configuration.
  d.send_signal(SIGHUP);
  ASSERT_TRUE(d.wait_log("SIGHUP: configuration reloaded")) << d.log();
  EXPECT_EQ(http_call(d.port(), "GET", "/healthz").status, 200);
  // healthcheck finds the daemon from the config's listen (a wildcard address means loopback).
  const auto port = std::to_string(d.port());
  dir.write("h1.toml", "[server]\nlisten = \"127.0.0.1:" + port + "\"\n");
  dir.write("h2.toml", "[server]\nlisten = \"0.0.0.0:" + port + "\"\napi_tokens = [\"t\"]\n");
  EXPECT_EQ(run_resendd(dir, {"healthcheck", "--config", dir.file("h1.toml")}).status, 0);
  EXPECT_EQ(run_resendd(dir, {"--config", dir.file("h2.toml"), "healthcheck"}).status, 0);
  d.send_signal(SIGHUP);
  ASSERT_TRUE(d.wait_log_count("SIGHUP:", 2)) << d.log();
  d.send_signal(SIGTERM);
  EXPECT_EQ(d.wait_exit(), 0) << d.log();
}

TEST(Resend, ASucceededJobKeepsNoCredentialsInClear) {
  temp_dir dir;
  fake_server dest([&](const received& r) {
    // The first job succeeds, the second is refused for good.
    return r.target == "/ok" ? fake_reply{} : fake_reply{400, "no"};
  });
  daemon_process d(dir, local_config());
  const auto ok = job_id(post_resend(d, resend_body(dest.url("/ok"))));
  const auto bad = job_id(post_resend(d, resend_body(dest.url("/bad"))));
  ASSERT_TRUE(d.wait_log("job " + ok + " attempt 1: succeeded")) << d.log();
  ASSERT_TRUE(d.wait_log("job " + bad + " attempt 1: dead")) << d.log();
  EXPECT_EQ(dest.requests()[0].header("authorization"), "Bearer t-secret-token-value-123456");
  const auto stored = [&](const std::string& id) {
    return sql_value(d.db_path(), "select request from jobs where id = '" + id + "'");
  };
  // Sent, then scrubbed: the succeeded job's stored request has the token masked ...
  EXPECT_EQ(stored(ok).find("t-secret-token-value-123456"), std::string::npos) << stored(ok);
  EXPECT_NE(stored(ok).find("X-Trace"), std::string::npos) << stored(ok);
  // ... while a dead job keeps it, so that a retry can still send it.
  EXPECT_NE(stored(bad).find("t-secret-token-value-123456"), std::string::npos);
}

TEST(Resend, ASucceededJobsCredentialsAreNotLeftInTheDatabaseFile) {
  SQLITE_ONLY("the bytes of the database file");
  // Once a job succeeds its row is written again with the credentials masked. SQLite leaves the
  // bytes of the row it replaced in the page's free space unless secure_delete is on (upstream's
  // default is off). Here the old row is not at the edge of the free space, so its bytes stay
  // where they were: job B's row was added after A's, and A's new row (with Feishu's answer) is
  // longer than its old one, so it goes elsewhere in the page.
  temp_dir dir;
  fake_reply created;
  created.body = R"({"code":0,"msg":"success","data":{"records":[{"record_id":"recA1b2C3d4",)"
                 R"("fields":{"amount":128.5,"note":")" +
                 std::string(300, 'n') + R"("}}]}})";
  std::mutex m;
  std::condition_variable cv;
  bool b_queued = false;
  fake_server dest([&](const received& r) {
    if (r.target == "/hold") return fake_reply{503, "busy"};
    std::unique_lock lock(m);
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return b_queued; });
    return created;
  });
  daemon_process d(dir, local_config("retry_base = \"1m\"\nretry_cap = \"1m\""));
  // A is larger than B, so that B's later rows, which SQLite puts at the end of the free space
  // A's old row left, do not cover the start of it, where the credentials are.
  const auto a = job_id(post_resend(d, resend_body(dest.url("/ok"), std::string(350, 'a'))));
  auto body_b = resend_body(dest.url("/hold"));
  body_b["headers"]["Authorization"] = "Bearer t-token-of-the-job-that-waits";
  const auto b = job_id(post_resend(d, body_b));
  ASSERT_FALSE(b.empty());
  {
    std::lock_guard lock(m);
    b_queued = true;
  }
  cv.notify_all();
  ASSERT_TRUE(d.wait_log("job " + a + " attempt 1: succeeded")) << d.log();
  ASSERT_TRUE(d.wait_log("job " + b + " attempt 1: ")) << d.log();
  const auto sent = dest.requests();
  const auto to_a =
      std::find_if(sent.begin(), sent.end(), [](auto& r) { return r.target == "/ok"; });
  ASSERT_NE(to_a, sent.end());
  EXPECT_EQ(to_a->header("authorization"), "Bearer t-secret-token-value-123456");
  // A clean stop copies the log into the file and empties it.
  ASSERT_EQ(d.terminate(), 0) << d.log();
  std::ifstream in(d.db_path(), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(bytes.find("t-secret-token-value-123456"), std::string::npos);
  // B is queued again: it keeps its credentials, and they are found where they are.
  EXPECT_NE(bytes.find("t-token-of-the-job-that-waits"), std::string::npos);
  std::error_code ec;  // the log is gone or empty: nothing of the run is left outside the file
  const auto wal_bytes = std::filesystem::file_size(d.db_path() + "-wal", ec);
  EXPECT_TRUE(ec || wal_bytes == 0) << wal_bytes;
}

TEST(Cli, WithoutConfigTheCliReadsTheServicesConfig) {
  SQLITE_ONLY("the database file named by the config");
  temp_dir dir;
  // As /etc/resendd/resendd.toml would be on an installed VM (RESENDD_CONFIG stands in for it
  // here; the default path is a constant in main.cpp).
  dir.write("service.toml", "[store]\npath = \"" + dir.file("elsewhere.db") + "\"\n");
  ASSERT_EQ(run_resendd(dir, {"migrate"}, {{"RESENDD_CONFIG", dir.file("service.toml")}}).status,
            0);
  EXPECT_TRUE(std::filesystem::exists(dir.file("elsewhere.db")));
  const auto r = run_resendd(dir, {"jobs", "list"}, {{"RESENDD_CONFIG", dir.file("service.toml")}});
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("var/resendd.db")));  // not a second, empty one
  // A RESENDD_CONFIG that names no file is an error, as --config is.
  EXPECT_NE(run_resendd(dir, {"jobs", "list"}, {{"RESENDD_CONFIG", dir.file("none.toml")}}).status,
            0);
}

TEST(Metrics, ParseStrictlyAndMove) {
  temp_dir dir;
  fake_server dest;
  daemon_process d(dir, local_config("retry_base = \"1m\"\nretry_cap = \"1m\""));
  auto m = scrape_metrics(d, dir);
  ASSERT_FALSE(m.empty()) << "the exposition did not parse; see " << dir.file("metrics.txt");
  for (const auto& [k, v] : m) EXPECT_FALSE(std::isnan(v)) << k;
  // The build says which allocator serves malloc: tcmalloc unless built without it (sanitizers).
  EXPECT_EQ(
      m["resendd_build_info{allocator=" RESENDD_DAEMON_ALLOCATOR ",version=" RESENDD_VERSION "}"],
      1);
  EXPECT_EQ(m.count("resendd_accepted_total{route=local}"), 0u);
  EXPECT_EQ(m["resendd_oldest_queued_age_seconds{}"], 0);
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
  EXPECT_EQ(post_resend(d, {{"location", 1}}).status, 400);
  m = scrape_metrics(d, dir);
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m["resendd_accepted_total{route=local}"], 1);
  EXPECT_EQ(m["resendd_attempts_total{outcome=succeeded,route=local}"], 1);
  EXPECT_EQ(m["resendd_jobs_finished_total{route=local,state=succeeded}"], 1);
  EXPECT_EQ(m["resendd_attempt_duration_seconds_count{route=local}"], 1);
  EXPECT_EQ(m["resendd_commit_duration_seconds_count{}"], 1);
  EXPECT_EQ(m["resendd_http_requests_total{path=/resend,status=202}"], 1);
  EXPECT_EQ(m["resendd_http_requests_total{path=/resend,status=400}"], 1);
  EXPECT_EQ(m["resendd_http_request_duration_seconds_count{path=/resend}"], 2);
  EXPECT_EQ(m["resendd_jobs{route=local,state=succeeded}"], 1);
  // A job that waits (a minute, after a 503) shows its age.
  fake_server down([](const received&) { return fake_reply{503, "later"}; });
  post_resend(d, resend_body(down.url("/x")));
  ASSERT_TRUE(d.wait_log(": retry")) << d.log();
  m = scrape_metrics(d, dir);
  EXPECT_EQ(m["resendd_accepted_total{route=local}"], 2);
  EXPECT_EQ(m["resendd_attempts_total{outcome=retry,route=local}"], 1);
  EXPECT_GT(m["resendd_oldest_queued_age_seconds{}"], 0);
}

TEST(Logs, JsonLinesCarryTheirJournaldPriority) {
  temp_dir dir;
  fake_server dest([](const received& r) {
    return r.target == "/ok" ? fake_reply{} : fake_reply{400, "no \"quotes\" here"};
  });
  // JOURNAL_STREAM is what systemd sets when stderr goes to the journal.
  daemon_process d(dir, local_config("", "[log]\nformat = \"json\"\n"),
                   {{"JOURNAL_STREAM", "8:12345"}});
  const auto ok = job_id(post_resend(d, resend_body(dest.url("/ok"))));
  const auto bad = job_id(post_resend(d, resend_body(dest.url("/bad"))));
  ASSERT_TRUE(d.wait_log("job " + ok + " attempt 1: succeeded")) << d.log();
  ASSERT_TRUE(d.wait_log("job " + bad + " attempt 1: dead")) << d.log();
  std::istringstream lines(d.log());
  int n = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    ++n;
    ASSERT_GE(line.size(), 3u);
    ASSERT_TRUE(line[0] == '<' && std::isdigit(static_cast<unsigned char>(line[1])) &&
                line[2] == '>')
        << line;
    const auto j = json::parse(line.substr(3), nullptr, false);
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_TRUE(j.contains("time") && j.contains("level") && j["msg"].is_string()) << line;
    const auto msg = j["msg"].get<std::string>();
    if (msg.find("attempt 1: dead") != std::string::npos) {
      EXPECT_EQ(line.substr(0, 3), "<4>") << line;
    }
    if (msg.find("attempt 1: succeeded") != std::string::npos) {
      EXPECT_EQ(line.substr(0, 3), "<6>") << line;
    }
  }
  EXPECT_GE(n, 4);
}

TEST(Logs, AMessageIsOneLineWhateverABotOrADestinationPutInIt) {
  temp_dir dir;
  // Feishu's msg with a line that reads like the daemon's own, an escape sequence and a C1 CSI.
  const std::string forged = "2026-11-29T00:00:00.000Z info job FORGED attempt 1: succeeded";
  fake_server dest([&](const received&) {
    return fake_reply{200,
                      json{{"code", 1254060}, {"msg", "bad\n" + forged + "\x1b[2J\u009b"}}.dump()};
  });
  daemon_process d(dir, test_config(R"(^http://127\.0\.0\.1:\d+/.*$)", "profile = \"feishu\"", ""));
  // A bot's json_parse path and header name, quoted in the refusals' log lines.
  auto path = resend_body(dest.url("/x"));
  path["commands"]["json_parse"] = {"$.params\n" + forged};
  EXPECT_EQ(post_resend(d, path).status, 400);
  auto header = resend_body(dest.url("/x"));
  header["headers"]["X-A\r\n" + forged] = "v";
  EXPECT_EQ(post_resend(d, header).status, 400);
  const auto id = job_id(post_resend(d, resend_body(dest.url("/x"))));
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: dead")) << d.log();
  d.send_signal(SIGTERM);
  EXPECT_EQ(d.wait_exit(), 0) << d.log();
  const auto log = d.log();
  std::istringstream lines(log);
  int quoted = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line == "<exited>") continue;  // the harness's mark
    // Every line is one of the daemon's own: it starts with its time.
    EXPECT_TRUE(line.size() > 24 && line[4] == '-' && line[10] == 'T' && line[23] == 'Z') << line;
    EXPECT_NE(line.rfind(forged, 0), 0u) << line;
    quoted += line.find("\\n" + forged) != std::string::npos;
  }
  EXPECT_EQ(quoted, 3) << log;  // the path, the header name and Feishu's msg, each escaped
  EXPECT_NE(log.find("\\r\\n" + forged), std::string::npos) << log;
  EXPECT_NE(log.find("\\x1b[2J\\u009b"), std::string::npos) << log;
  EXPECT_EQ(log.find('\x1b'), std::string::npos);
  EXPECT_EQ(log.find("\xc2\x9b"), std::string::npos);
}

TEST(OpenApi, TheDocumentIsValidAndNamesResendAndToken) {
  temp_dir dir;
  auto cfg = local_config();
  cfg.replace(cfg.find("[server]\n"), 9,
              "[server]\npublic_url = \"https://resendd.example.com\"\n");
  daemon_process d(dir, cfg);
  const auto a = http_call(d.port(), "GET", "/openapi.json");
  ASSERT_EQ(a.status, 200);
  dir.write("openapi.json", a.body);
  const std::string cmd = std::string(RESENDD_SOURCE_DIR) + "/scripts/validate_openapi.pl " +
                          dir.file("openapi.json") + " > " + dir.file("errors.txt") + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "see " << dir.file("errors.txt");
  const auto doc = json::parse(a.body);
  EXPECT_EQ(doc["openapi"], "3.0.3");
  EXPECT_TRUE(doc["paths"].contains("/resend"));
  EXPECT_TRUE(doc["paths"].contains("/token"));
  EXPECT_EQ(doc["servers"][0]["url"], "https://resendd.example.com");
  // The CLI prints the same document.
  dir.write("c.toml", "[server]\npublic_url = \"https://resendd.example.com\"\n");
  const auto r = run_resendd(dir, {"openapi", "--config", dir.file("c.toml")});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(json::parse(r.output, nullptr, false), doc);
}

TEST(Https, IntakeOverTlsWithATestCertificate) {
  temp_dir dir;
  const auto cert = make_cert(dir, "localhost");
  fake_server dest;
  auto cfg = local_config();
  cfg.replace(
      cfg.find("[server]\n"), 9,
      "[server]\ntls_cert = \"" + cert.cert_file + "\"\ntls_key = \"" + cert.key_file + "\"\n");
  daemon_process d(dir, cfg);
  EXPECT_NE(d.log().find("(https,"), std::string::npos) << d.log();
  dir.write("body.json", resend_body(dest.url("/x")).dump());
  const auto curl = [&](const std::string& extra) {
    const std::string cmd = "curl -s -o " + dir.file("out.json") + " -w '%{http_code}' --cacert " +
                            dir.file("ca.pem") + " " + extra + " > " + dir.file("code.txt") +
                            " 2>/dev/null";
    std::system(cmd.c_str());
    return read_text(dir.file("code.txt"));
  };
  const auto port = std::to_string(d.port());
  EXPECT_EQ(curl("-X POST -H 'Content-Type: application/json' --data-binary @" +
                 dir.file("body.json") + " https://localhost:" + port + "/resend"),
            "202");
  const auto id = json::parse(read_text(dir.file("out.json")))["id"].get<std::string>();
  ASSERT_TRUE(d.wait_log("job " + id + " attempt 1: succeeded")) << d.log();
  // Plain HTTP on the TLS port gets no HTTP answer; the daemon goes on.
  EXPECT_EQ(curl("http://127.0.0.1:" + port + "/healthz"), "000");
  EXPECT_EQ(curl("https://localhost:" + port + "/healthz"), "200");
  // A client that does not trust the certificate is refused by the handshake.
  EXPECT_EQ(curl("--cacert /dev/null https://localhost:" + port + "/healthz"), "000");
  // SIGHUP reads the files again: a certificate from another CA in their place is served to
  // new connections.
  temp_dir other;
  const auto renewed = make_cert(other, "localhost");
  ASSERT_EQ(cert.cert_file, dir.file("leaf-localhost.pem"));
  dir.write("leaf-localhost.pem", read_text(renewed.cert_file));
  dir.write("leaf-localhost.key", read_text(renewed.key_file));
  d.send_signal(SIGHUP);
  ASSERT_TRUE(d.wait_log("TLS certificate read again")) << d.log();
  EXPECT_EQ(curl("https://localhost:" + port + "/healthz"), "000");  // the old CA
  EXPECT_EQ(curl("--cacert " + other.file("ca.pem") + " https://localhost:" + port + "/healthz"),
            "200");
}
