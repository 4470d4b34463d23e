// resendd: a persistent retry queue for chat bots. This file only reads the command line and
// hands over to the composition root (serve) or to one-shot admin commands.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "api/openapi.h"
#include "app/app.h"
#include "config/config.h"
#include "http/client.h"
#include "queue/queue_service.h"
#include "store/db_lock.h"
#include "store/sqlite_store.h"
#include "token/jwt.h"
#include "token/token_service.h"
#include "util/log.h"
#include "util/random.h"

using namespace resendd;
namespace asio = boost::asio;
namespace urls = boost::urls;

namespace {

struct cli_state {
  std::string config_file;
  std::string state, id, older_than, url;  // url: healthcheck's; "" = from server.listen
  std::string purge_states = "succeeded,cancelled";
  int limit = 50;
  bool all_dead = false;
  bool force = false;
  // token flags (override [coze])
  std::string key_file, kid, app_id, aud;
  int ttl = 3600;
  int duration = 86399;
};

constexpr const char* installed_config = "/etc/resendd/resendd.toml";

config load(const cli_state& s) {
  std::optional<std::filesystem::path> file;
  if (!s.config_file.empty()) {
    file = s.config_file;
  } else if (const char* env = std::getenv("RESENDD_CONFIG"); env && *env) {
    file = env;  // a missing file is an error, as with --config
  } else if (std::error_code ec; std::filesystem::exists(installed_config, ec)) {
    // Installed as a service (cmake --install): `resendd jobs list` on the VM reads the
    // daemon's configuration, and so its database, without being told.
    file = installed_config;
  }
  auto env = process_environment();
  if (!s.key_file.empty()) env["JWT_PRIVATE_KEY_FILE"] = s.key_file, env.erase("JWT_PRIVATE_KEY");
  auto cfg = load_config(file, env);
  if (!s.kid.empty()) cfg.coze.public_key_id = s.kid;
  if (!s.app_id.empty()) cfg.coze.app_id = s.app_id;
  return cfg;
}

int print_json(const nlohmann::json& j) {
  // Stored text from before UTF-8 was enforced prints with U+FFFD, never an exception.
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
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

// Prints an admin answer ({"id","state"} / {"count"} / {"error","code"}); exit code 0 on 2xx.
int print_answer(int status, const std::string& body, const std::string& what) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  if (status >= 200 && status < 300) {
    if (j.is_object() && j.contains("count"))
      std::cout << j["count"].dump() << " job(s) " << what << "\n";
    else if (j.is_object() && j.contains("id"))
      std::cout << what << " " << j["id"].get<std::string>() << "\n";
    return 0;
  }
  const std::string msg = j.is_object() && j.contains("error") && j["error"].is_string()
                              ? j["error"].get<std::string>()
                              : body;
  std::cerr << msg << "\n";
  return 1;
}

int print_result(const store::action_result& r, const std::string& id, const std::string& what) {
  using st = store::action_result::status;
  switch (r.what) {
    case st::done:
      if (id.empty())
        std::cout << r.count << " job(s) " << what << "\n";
      else
        std::cout << what << " " << id << "\n";
      return 0;
    case st::not_found:
      std::cerr << "no job " << id << "\n";
      return 1;
    default:
      std::cerr << r.message << "\n";
      return 1;
  }
}

// A command that changes jobs goes through the running daemon when one holds the database (it
// owns the queue), else straight to the file, holding the lock meanwhile.
int change_jobs(const std::string& which, const cli_state& s, const config& cfg) {
  std::optional<millis> older;
  if (which == "purge") {
    older = parse_duration(s.older_than);
    if (!older) return std::cerr << "--older-than takes a duration like 7d\n", 2;
  }
  if (which != "purge" && !s.all_dead && s.id.empty())
    return std::cerr << "give a job id" << (which == "retry" ? " or --state dead" : "") << "\n", 2;
  const std::string what = which == "retry" ? "queued" : which == "cancel" ? "cancelled" : "purged";
  // PostgreSQL: straight to the database; its daemons see the change (fenced, notified).
  const bool shared = cfg.store.backend == "postgres";
  store::lock_holder holder;
  std::unique_ptr<store::database_lock> lock;
  if (!shared) lock = store::database_lock::try_acquire(cfg.store.path, &holder);
  if (!shared && !lock) {
    if (holder.url.empty())
      return std::cerr << "a resendd (pid " << holder.pid << ") holds " << cfg.store.path
                       << " but is not listening yet; try again\n",
             1;
    std::string target = which == "purge" ? "/jobs/purge?older_than=" +
                                                urls::encode(s.older_than, urls::unreserved_chars) +
                                                "&state=" + s.purge_states
                         : s.all_dead     ? "/jobs/retry?state=dead"
                                          : "/jobs/" + urls::encode(s.id, urls::unreserved_chars) +
                                                "/" + which;
    if (which == "retry" && s.force && !s.all_dead) target += "?force=true";
    auto r = run_once<attempt_result>([&](asio::io_context& io) -> asio::awaitable<attempt_result> {
      http_client client(io.get_executor(), client_options{});
      outbound_request req;
      req.method = "POST";
      req.url = holder.url + target;
      if (!cfg.server.api_tokens.empty())
        req.headers.emplace_back("Authorization", "Bearer " + cfg.server.api_tokens.front());
      req.timeout = std::chrono::hours(1);  // a purge of millions of jobs takes a while
      req.allow_private = true;
      co_return co_await client.send(req);
    });
    if (!r.answered())
      return std::cerr << "the daemon (pid " << holder.pid << ") did not answer: " << r.error << "\n",
             1;
    return print_answer(r.status, r.body, what);
  }
  system_clock_source clk;
  auto store = open_store(cfg, clk.now(), false);
  auto& st = *store;
  queue_service q(st, nullptr, clk, queue_timeouts{});
  auto r = run_once<store::action_result>(
      [&](asio::io_context&) -> asio::awaitable<store::action_result> {
        // Not `c ? co_await a : co_await b`: GCC 12 destroys the result of such a conditional
        // twice (seen as free(): invalid pointer).
        if (which == "retry" && s.all_dead) co_return co_await q.retry_dead();
        if (which == "retry") co_return co_await q.retry(s.id, s.force);
        if (which == "cancel") co_return co_await q.cancel(s.id);
        std::vector<std::string> states;
        std::stringstream in(s.purge_states);
        for (std::string one; std::getline(in, one, ',');) states.push_back(one);
        co_return co_await q.purge(*older, states);
      });
  st.close();
  return print_result(r, s.all_dead || which == "purge" ? "" : s.id, what);
}

int cmd_jobs(const std::string& which, const cli_state& s) {
  const auto cfg = load(s);
  if (which != "list" && which != "show") return change_jobs(which, s, cfg);
  // Reads go to the file, read-only, even while a daemon runs (WAL lets them).
  system_clock_source clk;
  auto store = open_store(cfg, clk.now(), true);
  queue_service q(*store, nullptr, clk, queue_timeouts{});
  auto r = run_once<store::read_result>([&](asio::io_context&) -> asio::awaitable<store::read_result> {
    if (which == "list") co_return co_await q.list(s.state, s.limit);
    co_return co_await q.job(s.id);
  });
  if (!r.error.empty()) return std::cerr << r.error << "\n", 1;
  if (!r.value) return std::cerr << "no job " << s.id << "\n", 1;
  if (which == "show")
    mask_job_secrets(*r.value, alerts_route_name);
  else
    for (auto& job : *r.value) mask_job_secrets(job, alerts_route_name);
  return print_json(*r.value);
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
  cli.set_version_flag("--version", std::string("resendd ") + RESENDD_VERSION);
  cli.add_option("--config", s.config_file, "TOML configuration file (optional)");
  cli.fallthrough();
  auto* serve = cli.add_subcommand("serve", "run the daemon (the default)");
  auto* migrate = cli.add_subcommand("migrate", "create or upgrade the database, then exit");
  auto* check =
      cli.add_subcommand("check-config", "validate and print the effective config, secrets masked");
  auto* jobs = cli.add_subcommand("jobs", "look into and act on the queue");
  jobs->require_subcommand(1);
  auto* jl = jobs->add_subcommand("list", "list jobs, newest first");
  jl->add_option("--state", s.state, "queued|delivering|succeeded|dead|cancelled")
      ->check(CLI::IsMember(
          std::vector<std::string>(store::job_states.begin(), store::job_states.end())));
  jl->add_option("--limit", s.limit, "how many")->check(CLI::Range(1, 100000));
  auto* js = jobs->add_subcommand("show", "one job with its attempts");
  js->add_option("id", s.id)->required();
  auto* jr = jobs->add_subcommand("retry", "queue a dead or cancelled job again");
  jr->add_option("id", s.id);
  std::string retry_state;
  jr->add_option("--state", retry_state, "dead: every dead job")->check(CLI::IsMember({"dead"}));
  jr->add_flag("--force", s.force, "also a job that died \"needs reconciliation\"");
  auto* jc = jobs->add_subcommand("cancel", "cancel a queued job");
  jc->add_option("id", s.id)->required();
  auto* jp = jobs->add_subcommand("purge", "delete finished jobs, 1,000 a transaction");
  jp->add_option("--older-than", s.older_than, "duration, e.g. 7d")->required();
  jp->add_option("--state", s.purge_states,
                 "comma-separated: succeeded, cancelled (the default), dead")
      ->check(CLI::Validator(
          [](std::string& list) -> std::string {
            std::stringstream in(list + ",");  // "dead," has an empty second item
            for (std::string one; std::getline(in, one, ',');)
              if (one != "succeeded" && one != "cancelled" && one != "dead")
                return "lists succeeded, cancelled or dead, separated by commas";
            return {};
          },
          "STATES"));
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
  auto* openapi = cli.add_subcommand("openapi", "print the OpenAPI document (for a Coze plugin)");
  health->add_option("--url", s.url, "default: /healthz at server.listen of the config");
  for (auto* sub : {serve, migrate, check, health, openapi}) sub->fallthrough();
  CLI11_PARSE(cli, argc, argv);
  s.all_dead = retry_state == "dead";

  try {
    if (*check) {
      auto cfg = load(s);
      check_key_material(cfg);  // keys and certificates serve could not use are errors here too
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
    if (*openapi) {
      std::cout << openapi_document(load(s)) << "\n";
      return 0;
    }
    if (*health) {
      if (s.url.empty()) s.url = local_base_url(load(s)) + "/healthz";
      return cmd_healthcheck(s);
    }
    auto cfg = load(s);
    if (!setup_logging(cfg.log.level, cfg.log.format))
      return std::cerr << "bad log level or format\n", 2;
    if (*migrate) {
      system_clock_source clk;
      if (cfg.store.backend == "postgres") {
        // Daemons may be running: migrations take an advisory lock and apply once.
        open_store(cfg, clk.now(), false)->close();
        std::cout << "database " << mask_pg_url(cfg.store.url) << " is up to date\n";
        return 0;
      }
      store::lock_holder holder;
      auto lock = store::database_lock::try_acquire(cfg.store.path, &holder);
      if (!lock)
        return std::cerr << "a resendd (pid " << holder.pid << ") is serving " << cfg.store.path
                         << "; it applied its migrations at start\n",
               1;
      store::sqlite_store st(store_options(cfg, false), clk.now());
      st.close();
      std::cout << "database " << cfg.store.path << " is up to date\n";
      return 0;
    }
    system_clock_source clk;
    return run_daemon(cfg, clk, [s] { return load(s); });
  } catch (const config_error& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "resendd: " << e.what() << "\n";
    return 1;
  }
}
