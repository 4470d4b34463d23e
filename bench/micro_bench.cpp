// Micro-benchmarks: intake validation, json_parse, classification, durable enqueues through
// the store writer (group commit), claims and outcomes with no HTTP, and the claim on a large
// queue.
// Run: build/bench/resendd_bench --benchmark_repetitions=5
// The claim benchmark builds its queue once (RESENDD_BENCH_JOBS jobs, default 1,000,000, over 10
// routes and 100,000 keys) in $TMPDIR and reuses it across runs.
#include <benchmark/benchmark.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "queue/classify.h"
#include "queue/forward.h"
#include "queue/intake.h"
#include "queue/json_path.h"
#include "queue/routes.h"
#include "store/sqlite_store.h"
#include "support/wait_for.h"
#include "util/log.h"
#include "util/random.h"

using namespace resendd;
using nlohmann::json;

namespace {
const std::string location =
    "https://open.feishu.cn/open-apis/bitable/v1/apps/bascnAPP/tables/tblTABLE/records/"
    "batch_create";

// A Bitable write as a bot sends it: `fields` as a JSON string, json_parse on it.
std::string job_body(json headers, const std::string& fields) {
  return json{{"location", location},
              {"headers", std::move(headers)},
              {"params", {{"records", {{{"fields", fields}}}}}},
              {"commands", {{"json_parse", {"$.params.records[*].fields"}}}}}
      .dump();
}

std::string seed_body() {
  return job_body({{"Authorization", "Bearer t-xxxxxxxxxxxxxxxxxxxxxxxx"}},
                  R"({"金额": 32.5, "分类": "餐饮", "备注": "午饭", "日期": 1764115200000})");
}

// The benchmark table's job (scripts/bench.sh): a ~1 KB write with a token in its headers.
std::string bench_body() {
  return job_body({{"Authorization", "Bearer t-bench-0123456789abcdef"},
                   {"Content-Type", "application/json; charset=utf-8"}},
                  R"({"金额": 128.5, "备注": "午饭 )" + std::string(600, 'x') +
                      R"(", "分类": "餐饮", "日期": 1764115200000, "账户": "招商银行信用卡"})");
}
}  // namespace

static void BM_PrepareJob(benchmark::State& state) {
  const config c;
  const route_table routes(c);
  const auto body = seed_body();
  const sys_time now{millis{1'800'000'000'000}};
  for (auto _ : state) benchmark::DoNotOptimize(prepare_job(body, "", routes, now));
}
BENCHMARK(BM_PrepareJob);

static void BM_ApplyJsonParse(benchmark::State& state) {
  const auto doc = json::parse(seed_body());
  const std::vector<std::string> paths{"$.params.records[*].fields"};
  for (auto _ : state) {
    json copy = doc;
    benchmark::DoNotOptimize(apply_json_parse(copy, paths));
  }
}
BENCHMARK(BM_ApplyJsonParse);

// What a delivery does with the stored request on the network thread: build what it sends...
static void BM_ForwardRequest(benchmark::State& state) {
  const auto body = bench_body();
  for (auto _ : state) benchmark::DoNotOptimize(forward_request(body));
}
BENCHMARK(BM_ForwardRequest);

// ... and, once it succeeded, take the credentials out of what is kept.
static void BM_ScrubRequest(benchmark::State& state) {
  const auto body = bench_body();
  for (auto _ : state) benchmark::DoNotOptimize(scrub_request_secrets(body));
}
BENCHMARK(BM_ScrubRequest);

static void BM_ClassifyFeishu(benchmark::State& state) {
  attempt_result r;
  r.status = 200;
  r.body = R"({"code":1254060,"msg":"TextFieldConvFail","data":{}})";
  for (auto _ : state) benchmark::DoNotOptimize(classify("feishu", r));
}
BENCHMARK(BM_ClassifyFeishu);

namespace {
const sys_time bench_now{millis{1'800'000'000'000}};

// Enqueues the jobs make(first) .. make(first + count - 1), each a {job, when it is due}, all at
// once, and waits until every one has committed.
template <class Make>
void enqueue_and_wait(store::sqlite_store& s, std::size_t first, std::size_t count, Make make) {
  std::vector<std::promise<void>> done(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto [job, due] = make(first + i);
    s.enqueue(std::move(job), due, nullptr,
              [&done, i](store::enqueue_result) { done[i].set_value(); });
  }
  for (auto& d : done) d.get_future().get();
}

// The benchmark table's job as a `feishu` route stores it: the write to table k of 1,000, keyed
// by its table, with a client_token.
store::new_job table_job(std::size_t k, sys_time now, const std::string& body) {
  const std::string table = "tbl" + std::to_string(100000 + k % 1000);
  return {uuid_v7(now),
          "feishu-bitable",
          "POST",
          "https://open.feishu.cn/open-apis/bitable/v1/apps/bascnAPP/tables/" + table +
              "/records/batch_create",
          body,
          {},
          uuid_v4(),
          "bascnAPP/" + table};
}

// `range(0)` producers submit durable enqueues at once; each iteration waits for all commits.
template <class MakeJob>
void durable_enqueues(benchmark::State& state, MakeJob make_job) {
  const auto dir = std::filesystem::temp_directory_path() / ("resendd-bench-" + uuid_v4());
  {
    store::sqlite_options o;
    o.path = (dir / "q.db").string();
    o.max_queue_depth = 1LL << 40;
    store::sqlite_store s(o, sys_time{});
    const auto batch = std::size_t(state.range(0));
    std::size_t k = 0;
    for (auto _ : state) {
      enqueue_and_wait(s, k, batch, [&make_job](std::size_t i) {
        return std::pair{make_job(i), sys_time{}};
      });
      k += batch;
    }
    state.SetItemsProcessed(state.iterations() * std::int64_t(batch));
  }
  std::filesystem::remove_all(dir);
}
}  // namespace

static void BM_DurableEnqueue(benchmark::State& state) {
  const auto body = seed_body();
  durable_enqueues(state, [&body](std::size_t) {
    return store::new_job{uuid_v7(sys_time{}), "feishu-bitable", "POST", location, body, {}, {}, {}};
  });
}
BENCHMARK(BM_DurableEnqueue)->Arg(1)->Arg(16)->Arg(128)->UseRealTime();

// The store alone under the benchmark table's intake: 64 enqueues at once (wrk's 64 connections)
// of the table's job. No HTTP and nothing else on the machine: the most intake can reach here.
static void BM_DurableEnqueueTableJob(benchmark::State& state) {
  const auto body = bench_body();
  durable_enqueues(state, [&body](std::size_t k) { return table_job(k, sys_time{}, body); });
}
BENCHMARK(BM_DurableEnqueueTableJob)->Arg(64)->UseRealTime();

// The store alone under the benchmark table's delivery: from 64,000 queued table jobs (1,000
// tables, one in flight per table), claims of up to 64 and then each claimed job's outcome as a
// delivery to Feishu's success envelope records it (attempt, masked request), one after the
// other as one dispatcher does. No HTTP: what delivery could reach if sending cost nothing.
static void BM_ClaimAndFinish(benchmark::State& state) {
  const auto dir = std::filesystem::temp_directory_path() / ("resendd-bench-" + uuid_v4());
  {
    store::sqlite_options o;
    o.path = (dir / "q.db").string();
    o.max_queue_depth = 1LL << 40;
    o.max_pending_writes = 1 << 20;
    store::sqlite_store s(o, bench_now);
    const auto body = bench_body();
    constexpr int batch = 64, rounds = 1000;
    enqueue_and_wait(s, 0, std::size_t(batch) * rounds,
                     [&](std::size_t i) { return std::pair{table_job(i, bench_now, body), bench_now}; });
    const std::string answer = R"({"code":0,"msg":"success","data":{"records":[]}})";
    long finished = 0;
    std::atomic<long> applied = 0;
    sys_time now = bench_now + std::chrono::seconds(1);
    for (auto _ : state) {
      if (finished + batch > long(batch) * rounds) {
        state.SkipWithError("the preloaded queue ran out");
        break;
      }
      store::claim_request req{now, millis{60'000}, batch, {{"feishu-bitable", batch, 1}}, 0};
      std::promise<store::claim_result> claimed;
      s.claim(std::move(req), [&claimed](store::claim_result r) { claimed.set_value(std::move(r)); });
      const auto got = claimed.get_future().get();
      std::vector<std::promise<void>> done(got.jobs.size());
      for (std::size_t i = 0; i < got.jobs.size(); ++i) {
        const auto& job = got.jobs[i];
        store::job_finish f;
        f.id = job.id;
        f.route = job.route;
        f.claim_no = job.claim_no;
        f.attempt = {now, millis{3}, 200, 0, "succeeded", "", mask_response(answer, 4096)};
        f.next_state = "succeeded";
        f.next_attempt_at = now;
        f.resource_key = job.resource_key;
        f.scrubbed_request = scrub_request_secrets(job.request);
        s.finish(std::move(f), now, [&done, &applied, i](store::finish_result r) {
          if (r.applied && r.error.empty()) ++applied;
          done[i].set_value();
        });
      }
      for (auto& d : done) d.get_future().get();
      finished += long(got.jobs.size());
      if (!got.error.empty() || got.jobs.empty() || applied != finished) {
        state.SkipWithError("a claim or an outcome did not commit");
        break;
      }
      now += millis{10};
    }
    state.SetItemsProcessed(finished);
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_ClaimAndFinish)->UseRealTime()->Iterations(500);

namespace {
using test::wait_for;

// 1% of the jobs are due now, the rest wait (a backlog in backoff): the claim must not pay for
// them, nor for the 100,000 keys that have nothing due.
std::string claim_db() {
  const char* env = std::getenv("RESENDD_BENCH_JOBS");
  const long jobs = env ? std::atol(env) : 1'000'000;
  const auto path = std::filesystem::temp_directory_path() /
                    ("resendd-claim-bench-" + std::to_string(jobs) + ".db");
  if (std::filesystem::exists(path)) return path.string();
  const auto tmp = path.string() + ".building";
  std::filesystem::remove(tmp);
  {
    store::sqlite_options o;
    o.path = tmp;
    o.max_queue_depth = 1LL << 40;
    o.max_pending_writes = 1 << 20;
    store::sqlite_store s(o, bench_now);
    const auto body = seed_body();
    constexpr long chunk = 20'000;
    for (long base = 0; base < jobs; base += chunk)
      enqueue_and_wait(s, std::size_t(base), std::size_t(std::min(chunk, jobs - base)),
                       [&body](std::size_t i) {
                         const bool due = i % 100 == 0;
                         const bool keyed = i % 10 != 0;
                         store::new_job j{uuid_v7(bench_now),
                                          "r" + std::to_string(i % 10),
                                          "POST",
                                          location,
                                          body,
                                          {},
                                          {},
                                          keyed ? std::optional<std::string>(
                                                      "key" + std::to_string(i % 100'000))
                                                : std::nullopt};
                         return std::pair{std::move(j),
                                          due ? bench_now : bench_now + std::chrono::hours(1)};
                       });
    s.close();
  }
  std::filesystem::rename(tmp, path);
  return path.string();
}
}  // namespace

// One claim of up to 64 jobs on a large queue (manual time: the claim alone); the claimed jobs
// are then put back, due, so every iteration sees the same queue.
static void BM_ClaimLargeQueue(benchmark::State& state) {
  store::sqlite_options o;
  o.path = claim_db();
  o.max_queue_depth = 1LL << 40;
  store::sqlite_store s(o, bench_now);
  std::vector<store::route_limits> limits;
  for (int r = 0; r < 10; ++r) limits.push_back({"r" + std::to_string(r), 64, 1});
  std::size_t rotation = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto res = wait_for<store::claim_result>([&](auto done) {
      s.claim({bench_now, millis{60'000}, 64, limits, rotation++}, std::move(done));
    });
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (res.jobs.empty()) state.SkipWithError("nothing claimed");
    for (auto& j : res.jobs) {
      store::job_finish f;
      f.id = j.id;
      f.route = j.route;
      f.claim_no = j.claim_no;
      f.attempt = {bench_now, millis{1}, 503, {}, "retry", "HTTP 503", ""};
      f.next_state = "queued";
      f.next_attempt_at = bench_now;
      f.counted = false;
      wait_for<store::finish_result>(
          [&](auto done) { s.finish(std::move(f), bench_now, std::move(done)); });
    }
  }
}
BENCHMARK(BM_ClaimLargeQueue)->UseManualTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
