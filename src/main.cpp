// resendd: a persistent retry queue for chat bots. This file only reads the command line and
// hands over to the composition root (serve) or to one-shot admin commands.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/url/parse.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/app.h"
#include "config/config.h"
#include "http/client.h"
#include "store/job_store.h"
#include "token/jwt.h"
#include "token/token_service.h"
#include "util/log.h"
#include "util/random.h"

using namespace resendd;
namespace asio = boost::asio;

namespace {

struct cli_state {
  std::string config_file;
  std::string state, id, older_than, url = "http://127.0.0.1:9000/healthz";
  int limit = 50;
  bool all_dead = false;
  // token flags (override [coze])
  std::string key_file, kid, app_id, aud;
  int ttl = 3600;
  int duration = 86399;
};

config load(const cli_state& s) {
  std::optional<std::filesystem::path> file;
  if (!s.config_file.empty()) file = s.config_file;
  auto env = process_environment();
  if (!s.key_file.empty()) env["JWT_PRIVATE_KEY_FILE"] = s.key_file, env.erase("JWT_PRIVATE_KEY");
  auto cfg = load_config(file, env);
  if (!s.kid.empty()) cfg.coze.public_key_id = s.kid;
  if (!s.app_id.empty()) cfg.coze.app_id = s.app_id;
  return cfg;
}

int print_json(const nlohmann::json& j) {
  std::cout << j.dump(2) << "\n";
  return 0;
}

// Runs a coroutine to completion on a private io_context (one-shot CLI commands).
template <class T, class F>
T run_once(F make) {
  asio::io_context io;
  auto fut = asio::co_spawn(io, make(io), asio::use_future);
  io.run();
  return fut.get();
}

int cmd_jobs(const std::string& which, const cli_state& s) {
  const auto cfg = load(s);
  system_clock_source clk;
  store::job_store st(cfg.store.path, cfg.store.max_queue_depth, clk.now());
  if (which == "list") return print_json(st.list(s.state, s.limit));
  if (which == "show") {
    auto j = st.job(s.id);
    if (!j) return std::cerr << "no job " << s.id << "\n", 1;
    mask_job_secrets(*j);
    return print_json(*j);
  }
  if (which == "retry") {
    if (s.all_dead)
      return std::cout << st.retry_dead(clk.now()) << " dead job(s) queued again\n", 0;
    if (s.id.empty()) return std::cerr << "give a job id or --state dead\n", 2;
    if (!st.retry(s.id, clk.now()))
      return std::cerr << "job " << s.id << " is not dead or cancelled\n", 1;
    return std::cout << "queued " << s.id << "\n", 0;
  }
  if (which == "cancel") {
    if (!st.cancel(s.id, clk.now()))
      return std::cerr << "job " << s.id << " is not queued or delivering\n", 1;
    return std::cout << "cancelled " << s.id << "\n", 0;
  }
  if (which == "purge") {
    auto d = parse_duration(s.older_than);
    if (!d) return std::cerr << "--older-than takes a duration like 7d\n", 2;
    return std::cout << st.purge_finished_before(clk.now() - *d) << " job(s) purged\n", 0;
  }
  return 2;
}

int cmd_token(bool exchange, const cli_state& s) {
  auto cfg = load(s);
  system_clock_source clk;
  std::string err;
  auto key = rsa_private_key::from_pem(cfg.coze.private_key_pem, &err);
  if (!key) return std::cerr << "private key: " << err << "\n", 1;
  if (cfg.coze.public_key_id.empty() || cfg.coze.app_id.empty())
    return std::cerr << "need --kid and --app-id (or [coze] public_key_id and app_id)\n", 2;
  cfg.coze.jwt_audience = s.aud;
  cfg.coze.jwt_ttl = std::chrono::seconds{s.ttl};
  if (!exchange) {
    auto jwt = coze_jwt(cfg, *key, cfg.coze.public_key_id, clk.now());
    if (!jwt) return std::cerr << "signing failed\n", 1;
    return std::cout << *jwt << "\n", 0;
  }
  auto g = run_once<token_grant>([&](asio::io_context& io) -> asio::awaitable<token_grant> {
    http_client client(io.get_executor(), client_options{cfg.delivery.ca_file});
    token_service tokens(cfg, client, clk);
    co_return co_await tokens.coze_token(cfg.coze.public_key_id, s.duration);
  });
  print_json(g.body);
  return g.status == 0 ? 0 : 1;
}

int cmd_healthcheck(const cli_state& s) {
  auto r = run_once<attempt_result>([&](asio::io_context& io) -> asio::awaitable<attempt_result> {
    http_client client(io.get_executor(), client_options{});
    outbound_request req;
    req.method = "GET";
    req.url = s.url;
    req.timeout = millis{5000};
    req.allow_private = true;
    co_return co_await client.send(req);
  });
  if (r.answered() && r.status == 200) return std::cout << "ok\n", 0;
  std::cerr << "unhealthy: " << (r.answered() ? "HTTP " + std::to_string(r.status) : r.error)
            << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"resendd: a persistent retry queue for chat bots"};
  cli_state s;
  cli.add_option("--config", s.config_file, "TOML configuration file (optional)");
  cli.fallthrough();
  auto* serve = cli.add_subcommand("serve", "run the daemon (the default)");
  auto* migrate = cli.add_subcommand("migrate", "create or upgrade the database, then exit");
  auto* check =
      cli.add_subcommand("check-config", "validate and print the effective config, secrets masked");
  auto* jobs = cli.add_subcommand("jobs", "look into and act on the queue");
  jobs->require_subcommand(1);
  auto* jl = jobs->add_subcommand("list", "list jobs, newest first");
  jl->add_option("--state", s.state, "queued|delivering|succeeded|dead|cancelled");
  jl->add_option("--limit", s.limit, "how many")->check(CLI::Range(1, 100000));
  auto* js = jobs->add_subcommand("show", "one job with its attempts");
  js->add_option("id", s.id)->required();
  auto* jr = jobs->add_subcommand("retry", "queue a dead or cancelled job again");
  jr->add_option("id", s.id);
  std::string retry_state;
  jr->add_option("--state", retry_state, "dead: every dead job")->check(CLI::IsMember({"dead"}));
  auto* jc = jobs->add_subcommand("cancel", "cancel a queued job");
  jc->add_option("id", s.id)->required();
  auto* jp = jobs->add_subcommand("purge", "delete finished jobs");
  jp->add_option("--older-than", s.older_than, "duration, e.g. 7d")->required();
  auto* token = cli.add_subcommand("token", "Coze JWT tools");
  token->require_subcommand(1);
  auto* tm = token->add_subcommand("mint", "print a signed JWT");
  auto* tx = token->add_subcommand("exchange", "mint a JWT, exchange it, print Coze's JSON");
  for (auto* t : {tm, tx}) {
    t->add_option("--key", s.key_file, "RSA private key (PEM)");
    t->add_option("--kid", s.kid, "public key id");
    t->add_option("--app-id", s.app_id, "OAuth app id (iss)");
  }
  for (auto* t : {tm, tx}) {
    t->add_option("--aud", s.aud, "JWT audience (default: host of coze.token_url)");
    t->add_option("--ttl", s.ttl, "seconds the JWT lives")->check(CLI::Range(1, 86400));
  }
  tx->add_option("--duration", s.duration, "seconds asked for the access token")
      ->check(CLI::Range(1, 86399));
  auto* health = cli.add_subcommand("healthcheck", "exit 0 when the daemon answers /healthz");
  health->add_option("--url", s.url);
  for (auto* sub : {serve, migrate, check}) sub->fallthrough();
  CLI11_PARSE(cli, argc, argv);
  s.all_dead = retry_state == "dead";

  try {
    if (*check) {
      auto cfg = load(s);
      std::cout << render_config(cfg);
      return 0;
    }
    if (*jobs) {
      setup_logging("warn");
      for (auto* sub : {jl, js, jr, jc, jp})
        if (*sub) return cmd_jobs(sub->get_name(), s);
    }
    if (*token) {
      setup_logging("warn");
      return cmd_token(bool(*tx), s);
    }
    if (*health) return cmd_healthcheck(s);
    auto cfg = load(s);
    if (!setup_logging(cfg.log.level)) return std::cerr << "bad log level\n", 2;
    if (*migrate) {
      system_clock_source clk;
      store::job_store st(cfg.store.path, cfg.store.max_queue_depth, clk.now());
      std::cout << "database " << cfg.store.path << " is up to date\n";
      return 0;
    }
    system_clock_source clk;
    return run_daemon(cfg, clk);
  } catch (const config_error& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "resendd: " << e.what() << "\n";
    return 1;
  }
}
