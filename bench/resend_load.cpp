// resend_load: POSTs /resend to a running resendd over keep-alive connections on loopback and
// reports the durable intake rate (each 202 means the job is committed) and latency.
//   resend_load [--url http://127.0.0.1:9000/resend] [--connections 32] [--requests 20000]
//               [--seconds 20] [--token TOKEN] [--location URL] [--method GET] [--spread N]
//               [--body FILE]
// --body FILE: the /resend body to send instead of the built-in one (a seed-like Bitable write).
// --spread N: every `{k}` in the location (or in the body file) becomes the request's number
// modulo N, so jobs spread over N Bitable tables, say, instead of queueing behind one.
// Bounded in both count and time; it only talks to the URL given (use loopback).
#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "http/client.h"

using namespace resendd;
namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

int main(int argc, char** argv) {
  std::string url = "http://127.0.0.1:9000/resend", token, method, body_file;
  std::string location =
      "https://open.feishu.cn/open-apis/bitable/v1/apps/bascnLOAD/tables/tblLOAD/records/"
      "batch_create";
  int connections = 32, requests = 20000, seconds = 20, spread = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--url")
      url = v;
    else if (k == "--connections")
      connections = std::stoi(v);
    else if (k == "--requests")
      requests = std::stoi(v);
    else if (k == "--seconds")
      seconds = std::stoi(v);
    else if (k == "--token")
      token = v;
    else if (k == "--location")
      location = v;
    else if (k == "--method")
      method = v;
    else if (k == "--body")
      body_file = v;
    else if (k == "--spread")
      spread = std::max(1, std::stoi(v));
    else
      return std::fprintf(stderr, "unknown option %s\n", k.c_str()), 2;
  }
  std::string templ;
  if (!body_file.empty()) {
    std::ifstream in(body_file);
    if (!in) return std::fprintf(stderr, "cannot read %s\n", body_file.c_str()), 2;
    templ.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto spread_out = [&](std::string text, int n) {
    const std::string k = std::to_string(n % spread);
    for (auto at = text.find("{k}"); at != std::string::npos; at = text.find("{k}", at))
      text.replace(at, 3, k);
    return text;
  };
  auto body_for = [&](int n) {
    if (!templ.empty()) return spread_out(templ, n);
    nlohmann::json request{
        {"location", spread_out(location, n)},
        {"headers", {{"Authorization", "Bearer t-load"}}},
        {"params", {{"records", {{{"fields", R"({"金额": 1, "备注": "load"})"}}}}}},
        {"commands", {{"json_parse", {"$.params.records[*].fields"}}}}};
    if (!method.empty()) request["method"] = method;
    return request.dump();
  };
  asio::io_context io{1};
  client_options opts;
  opts.max_idle_per_origin = std::size_t(connections);
  http_client client(io.get_executor(), opts);
  int started = 0, ok = 0, failed = 0;
  std::vector<double> latencies_ms;
  latencies_ms.reserve(std::size_t(requests));
  const auto t0 = steady::now(), deadline = t0 + std::chrono::seconds(seconds);
  for (int c = 0; c < connections; ++c) {
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          while (started < requests && steady::now() < deadline) {
            outbound_request req;
            req.url = url;
            req.body = body_for(started++);
            req.allow_private = true;
            req.timeout = std::chrono::seconds(10);
            if (!token.empty()) req.headers.emplace_back("Authorization", "Bearer " + token);
            const auto s = steady::now();
            auto r = co_await client.send(std::move(req));
            latencies_ms.push_back(
                std::chrono::duration<double, std::milli>(steady::now() - s).count());
            if (r.answered() && r.status == 202)
              ++ok;
            else
              ++failed;
          }
        },
        asio::detached);
  }
  io.run();
  const double secs = std::chrono::duration<double>(steady::now() - t0).count();
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double p) {
    return latencies_ms.empty() ? 0.0
                                : latencies_ms[std::size_t(p * double(latencies_ms.size() - 1))];
  };
  std::printf(
      "accepted %d, failed %d in %.2f s: %.0f jobs/s durable; latency p50 %.2f ms, p99 %.2f ms\n",
      ok, failed, secs, ok / secs, pct(0.5), pct(0.99));
  return failed ? 1 : 0;
}
