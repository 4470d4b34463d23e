// Micro-benchmarks: intake validation, json_parse, classification, and durable enqueues through
// the store writer (group commit). Run: build/bench/resendd_bench --benchmark_repetitions=5
#include <benchmark/benchmark.h>

#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>

#include "queue/classify.h"
#include "queue/intake.h"
#include "queue/json_path.h"
#include "queue/routes.h"
#include "store/job_store.h"
#include "util/random.h"

using namespace resendd;
using nlohmann::json;

namespace {
const std::string location =
    "https://open.feishu.cn/open-apis/bitable/v1/apps/bascnAPP/tables/tblTABLE/records/"
    "batch_create";

std::string seed_body() {
  return json{
      {"location", location},
      {"headers", {{"Authorization", "Bearer t-xxxxxxxxxxxxxxxxxxxxxxxx"}}},
      {"params",
       {{"records",
         {{{"fields",
            R"({"金额": 32.5, "分类": "餐饮", "备注": "午饭", "日期": 1764115200000})"}}}}}},
      {"commands", {{"json_parse", {"$.params.records[*].fields"}}}}}
      .dump();
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

static void BM_ClassifyFeishu(benchmark::State& state) {
  attempt_result r;
  r.status = 200;
  r.body = R"({"code":1254060,"msg":"TextFieldConvFail","data":{}})";
  for (auto _ : state) benchmark::DoNotOptimize(classify("feishu", r));
}
BENCHMARK(BM_ClassifyFeishu);

// Durable enqueues: `range(0)` producers submit at once; each iteration waits for all commits.
static void BM_DurableEnqueue(benchmark::State& state) {
  const auto dir = std::filesystem::temp_directory_path() / ("resendd-bench-" + uuid_v4());
  {
    store::job_store s((dir / "q.db").string(), 1LL << 40, sys_time{});
    const auto body = seed_body();
    const int batch = int(state.range(0));
    for (auto _ : state) {
      std::vector<std::promise<void>> done(static_cast<std::size_t>(batch));
      for (int i = 0; i < batch; ++i) {
        store::new_job j{uuid_v7(sys_time{}), "feishu-bitable", "POST", location, body, {}, {}, {}};
        s.enqueue(std::move(j), sys_time{},
                  [&done, i](store::enqueue_result) { done[std::size_t(i)].set_value(); });
      }
      for (auto& d : done) d.get_future().get();
    }
    state.SetItemsProcessed(state.iterations() * batch);
  }
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_DurableEnqueue)->Arg(1)->Arg(16)->Arg(128)->UseRealTime();

BENCHMARK_MAIN();
