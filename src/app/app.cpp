#include "app/app.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>

#ifdef RESENDD_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "api/handlers.h"
#include "http/client.h"
#include "http/server.h"
#include "queue/alerts.h"
#include "queue/dispatcher.h"
#include "queue/first_answers.h"
#include "queue/queue_service.h"
#include "queue/routes.h"
#include "store/db_lock.h"
#include "store/pg_store.h"
#include "store/sqlite_store.h"
#include "token/token_service.h"
#include "util/errors.h"
#include "util/log.h"
#include "util/memory.h"
#include "util/metrics.h"

namespace resendd {

namespace asio = boost::asio;

namespace {

// Everything said to systemd goes through here (a no-op without systemd or NOTIFY_SOCKET).
void notify_systemd([[maybe_unused]] const char* state) {
#ifdef RESENDD_HAVE_SYSTEMD
  sd_notify(0, state);
#endif
}

// The watchdog interval the service manager asked for (WatchdogSec=), zero when none.
std::chrono::microseconds watchdog_interval() {
#ifdef RESENDD_HAVE_SYSTEMD
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) return std::chrono::microseconds(usec);
#endif
  return {};
}

// Queued jobs of a route the configuration no longer names are dead at their next attempt unless
// their location matches another route (delivery matches by location); on PostgreSQL they are
// left to a daemon whose routes take them. Said at start and at each reload, while the route can
// still be brought back.
void warn_of_unnamed_routes(const store::job_counts& counts, const route_table& routes, bool shared,
                            std::string_view when) {
  std::int64_t jobs = 0;
  std::string names;
  for (const auto& [k, n] : counts) {
    const std::string& route = k.second;  // (clang 14 captures no structured binding)
    const auto named = [&route](const auto& r) { return r->cfg.name == route; };
    if (k.first != "queued" || n <= 0 || std::ranges::any_of(routes.all(), named)) continue;
    jobs += n;
    names += (names.empty() ? "" : ", ") + route;
  }
  if (jobs == 0) return;
  if (shared)  // PostgreSQL: another daemon may name them (dispatcher.cpp, unroutable)
    spdlog::warn(
        "{}{} queued job(s) of route(s) [{}], which this daemon's configuration does not name: "
        "unless a route of it matches their location, it leaves them to a daemon whose routes "
        "take them, and max_age ends those that none takes",
        when, jobs, names);
  else
    spdlog::warn(
        "{}{} queued job(s) of route(s) [{}], which the configuration no longer names: each is "
        "dead at its next attempt unless its location matches another route (bring the route "
        "back, then `resendd jobs retry --state dead`)",
        when, jobs, names);
}

// Runs the io_context until it is stopped. An exception thrown inside a completion handler (Beast
// throws from its parser on, say, an oversized trailer field) propagates out of run(): the
// operation it belonged to is gone, and with it the coroutine waiting on it, whose frame is
// destroyed (its guards free what it held). Only that connection or delivery ends; the daemon
// logs it once and runs on (Asio allows run() to be called again after such an exception).
void run_io(asio::io_context& io) {
  for (;;) {
    try {
      io.run();
      return;
    } catch (const std::exception& e) {
      spdlog::error("io: an operation ended on an error and was dropped: {}", e.what());
    } catch (...) {
      spdlog::error("io: an operation ended on an unknown error and was dropped");
    }
  }
}

// The descriptor limit: the soft limit raised to the hard one, then checked against what the
// server may open (connections, plus deliveries, plus the store's files).
void raise_fd_limit(const config& cfg) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  const auto need =
      rlim_t(cfg.server.max_connections) + rlim_t(cfg.delivery.defaults.concurrency) + 64;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < need)
    spdlog::warn(
        "open files limit {} is below what server.max_connections ({}) and "
        "delivery.concurrency ({}) may need ({}): raise LimitNOFILE or lower them",
        lim.rlim_cur, cfg.server.max_connections, cfg.delivery.defaults.concurrency, need);
}

}  // namespace

store::sqlite_options store_options(const config& cfg, bool read_only) {
  store::sqlite_options o;
  o.path = cfg.store.path;
  o.max_queue_depth = cfg.store.max_queue_depth;
  o.max_pending_writes = std::size_t(cfg.store.max_pending_writes);
  o.busy_timeout = cfg.store.busy_timeout;
  o.max_size = cfg.store.max_size;
  o.read_only = read_only;
  return o;
}

std::unique_ptr<store::queue_store> open_store(const config& cfg, sys_time now, bool read_only,
                                               const std::string& daemon_name) {
  if (cfg.store.backend == "postgres") {
    store::pg_options o;
    o.url = cfg.store.url;
    o.max_queue_depth = cfg.store.max_queue_depth;
    o.max_pending_writes = std::size_t(cfg.store.max_pending_writes);
    o.busy_timeout = cfg.store.busy_timeout;
    o.read_only = read_only;
    o.daemon_name = daemon_name;
    return std::make_unique<store::pg_store>(o, now);
  }
  return std::make_unique<store::sqlite_store>(store_options(cfg, read_only), now);
}

bool split_listen(const std::string& listen, std::string& host, std::uint16_t& port) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) return false;
  host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  try {
    const int p = std::stoi(listen.substr(colon + 1));
    if (p < 0 || p > 65535) return false;
    port = static_cast<std::uint16_t>(p);
  } catch (...) {
    return false;
  }
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

void check_key_material(const config& cfg) {
  std::vector<std::string> problems;
  try {
    coze_signing_key(cfg);
  } catch (const config_error& e) {
    problems.insert(problems.end(), e.problems().begin(), e.problems().end());
  }
  if (!cfg.server.tls_cert.empty()) {
    try {
      load_tls_context(cfg.server.tls_cert, cfg.server.tls_key);
    } catch (const std::exception& e) {
      problems.push_back("server.tls_cert/tls_key: " + std::string(e.what()));
    }
  }
  if (!cfg.delivery.ca_file.empty()) {
    try {
      asio::ssl::context ctx(asio::ssl::context::tls_client);
      ctx.load_verify_file(cfg.delivery.ca_file);
    } catch (const std::exception& e) {
      problems.push_back("delivery.ca_file: " + std::string(e.what()));
    }
  }
  if (!problems.empty()) throw config_error(std::move(problems));
}

int run_daemon(const config& initial, const clock& clk, std::function<config()> reread) {
  check_key_material(initial);
  // The running configuration: every part reads it from here, and a reload (SIGHUP) changes
  // what may change while serving, on the io thread (config.h apply_reloadable).
  config live = initial;
  const config& cfg = live;
  std::string host;
  std::uint16_t port = 0;
  if (!split_listen(cfg.server.listen, host, port))
    throw std::runtime_error("server.listen: \"" + cfg.server.listen + "\" is not IP:PORT");
  // A public listen without api_tokens was refused when the config was read (config.cpp).

  raise_fd_limit(cfg);

  // SQLite: one daemon per database, decided before anything touches the queue: a second one
  // must not re-queue the first one's deliveries. PostgreSQL: any number; each re-queues only
  // its own slot's deliveries (store/pg_store.h).
  const bool shared = cfg.store.backend == "postgres";
  std::unique_ptr<store::database_lock> lock;
  if (!shared) {
    store::lock_holder holder;
    lock = store::database_lock::try_acquire(cfg.store.path, &holder);
    if (!lock)
      throw std::runtime_error(
          "another resendd" +
          (holder.pid ? " (pid " + std::to_string(holder.pid) + ")" : std::string()) +
          " is serving " + cfg.store.path + "; refusing to start");
  }

  // Order matters: the store outlives everything that posts to it; the io_context outlives the
  // store, whose writer posts completions onto it.
  asio::io_context io{1};
  char hostname[256] = {};
  ::gethostname(hostname, sizeof hostname - 1);
  auto store_ptr =
      open_store(cfg, clk.now(), false, std::string(hostname) + "/" + cfg.server.listen);
  auto& store = *store_ptr;
  // We hold the lock (SQLite) or our slot (PostgreSQL): whatever we were delivering was cut off
  // by a process that is gone. Its attempt stays counted, so a job that kills the daemon dies
  // after max_attempts restarts.
  if (int n = store.requeue_delivering(clk.now(), false))
    spdlog::warn("store: {} job(s) were being delivered when resendd last stopped; queued again",
                 n);
  route_table routes(cfg);
  client_options copts;
  copts.ca_file = cfg.delivery.ca_file;
  copts.max_response_bytes = cfg.delivery.max_response_bytes;
  copts.idle_timeout = cfg.delivery.idle_timeout;
  // Every delivery slot may be talking to one origin (Feishu): keep a connection for each, or
  // most deliveries pay a new TCP (and TLS) handshake. Idle ones still go after idle_timeout.
  copts.max_idle_per_origin = std::max<std::size_t>(copts.max_idle_per_origin,
                                                    std::size_t(cfg.delivery.defaults.concurrency));
  // Large requests are parsed here, not on the network thread (queue/intake.h
  // large_request_bytes): the /resend check, and a delivery's build and scrub.
  asio::thread_pool work_pool(1);
  http_client client(io.get_executor(), copts);
  token_service tokens(cfg, client, clk);
  dispatcher dispatch(io, store, routes, client, clk, cfg, &tokens);
  queue_service queue(store, &dispatch, clk, queue_timeouts{cfg.store.commit_timeout});
  const bool public_listener = !asio::ip::make_address(host).is_loopback();
  first_answers answers;
  dispatch.report_first_answers(&answers);
  dispatch.parse_large_on(&work_pool);
  alerter alerts(io, queue, cfg, clk);
  dispatch.report_deaths(&alerts);
  api handlers({cfg, queue, routes, dispatch, clk, &tokens, public_listener, &answers, &work_pool});
  server_options sopts{host,
                       port,
                       cfg.server.max_body_bytes,
                       16 * 1024,
                       cfg.server.read_timeout,
                       cfg.server.max_connections,
                       cfg.server.max_connections_per_client,
                       cfg.server.tls_cert,
                       cfg.server.tls_key};
  http_server server(io, sopts,
                     [&handlers](incoming_request r) { return handlers.handle(std::move(r)); });

  // Shutdown: stop accepting, let deliveries finish within shutdown_grace, then stop. The
  // handler is installed before "listening on" is said, so no early SIGTERM is lost.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  asio::steady_timer grace(io), idle_check(io), retention(io), heartbeat(io);
  // Once no delivery is in flight: wait for requests still being answered (a /resend waiting
  // for its commit), then stop. Checked every 10 ms; the grace timer bounds it.
  std::function<void()> stop_when_idle = [&] {
    if (server.busy() == 0) return io.stop();
    idle_check.expires_after(std::chrono::milliseconds(10));
    idle_check.async_wait([&](const boost::system::error_code& e) {
      if (!e) stop_when_idle();
    });
  };
  // SIGHUP reloads the configuration: read (with the TLS files) on a thread of its own, applied
  // on the io thread. A configuration that does not load changes nothing.
  asio::signal_set hangups(io, SIGHUP);
  asio::thread_pool reloader(1);
  std::function<void()> await_hangup;
  const auto apply_reload = [&](const config& next, std::shared_ptr<asio::ssl::context> tls) {
    const auto restart = keys_needing_restart(live, next);
    config merged = live;
    apply_reloadable(merged, next);
    try {
      routes.replace(merged);
    } catch (const std::exception& e) {
      spdlog::error("SIGHUP: the configuration was not reloaded: {}; nothing changed", e.what());
      return;
    }
    // Field by field: the parts holding `cfg` see the new values, and nothing else moves.
    apply_reloadable(live, next);
    dispatch.routes_changed();
    dispatch.wake();
    const bool tls_again = tls && !cfg.server.tls_cert.empty();  // HTTPS stays on
    if (tls_again) server.replace_tls(tls);
    std::string names;
    for (const auto& r : routes.all()) names += (names.empty() ? "" : ", ") + r->cfg.name;
    std::string rest;
    for (const auto& k : restart) rest += (rest.empty() ? "" : ", ") + k;
    spdlog::info("SIGHUP: configuration reloaded: routes [{}], {} api token(s), log level {}{}{}",
                 names, cfg.server.api_tokens.size(), cfg.log.level,
                 tls_again ? ", TLS certificate read again" : "",
                 rest.empty() ? "" : "; changed but kept until a restart: " + rest);
    set_log_level(cfg.log.level);  // after the line above, which a quieter level would hide
    warn_of_unnamed_routes(queue.counts(), routes, shared, "SIGHUP: ");
  };
  await_hangup = [&] {
    hangups.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec) return;
      if (!reread) {
        spdlog::warn("SIGHUP: no configuration to read again; nothing changed");
        return await_hangup();
      }
      notify_systemd("RELOADING=1");
      // Reading the file and the PEM files is disk I/O: not on the network thread.
      asio::post(reloader, [&] {
        std::shared_ptr<config> next;
        std::shared_ptr<asio::ssl::context> tls;
        std::string error;
        try {
          next = std::make_shared<config>(reread());
          if (!next->server.tls_cert.empty())
            tls = load_tls_context(next->server.tls_cert, next->server.tls_key);
        } catch (const config_error& e) {
          for (const auto& p : e.problems()) error += (error.empty() ? "" : "; ") + p;
        } catch (const std::exception& e) {
          error = e.what();
        }
        asio::post(io, [&, next, tls, error] {
          if (next && error.empty())
            apply_reload(*next, tls);
          else
            spdlog::error("SIGHUP: the configuration was not reloaded: {}; nothing changed", error);
          notify_systemd("READY=1");
          await_hangup();
        });
      });
    });
  };
  await_hangup();
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    hangups.cancel();
    retention.cancel();
    heartbeat.cancel();
    spdlog::info("signal {}: shutting down (in flight: {})", sig, dispatch.in_flight());
    notify_systemd("STOPPING=1");
    server.stop();
    // Deaths waiting in an alert batch are queued before the store closes.
    dispatch.stop([&] { alerts.flush([&] { stop_when_idle(); }); });
    grace.expires_after(cfg.delivery.shutdown_grace);
    grace.async_wait([&](const boost::system::error_code& e) {
      if (e) return;
      spdlog::warn("shutdown: {} deliveries still in flight after {}; they will be queued again",
                   dispatch.in_flight(), format_duration(cfg.delivery.shutdown_grace));
      io.stop();
    });
  });

  const auto bound = server.start();
  const std::string scheme = cfg.server.tls_cert.empty() ? "http://" : "https://";
  if (lock)
    lock->publish(scheme + (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                  std::to_string(bound));
  spdlog::info("listening on {}:{} ({}, store {}, {} route(s), concurrency {})",
               host.find(':') != std::string::npos ? "[" + host + "]" : host, bound,
               cfg.server.tls_cert.empty() ? "http" : "https",
               shared ? mask_pg_url(cfg.store.url) : cfg.store.path, routes.all().size(),
               cfg.delivery.defaults.concurrency);
  warn_of_unnamed_routes(queue.counts(), routes, shared, "");
  store.on_wake([&dispatch] { dispatch.wake(); });  // another daemon queued a job or freed a slot
  dispatch.start();
  alerts.start();
  metrics().set("resendd_build_info",
                "The running build and the allocator serving malloc; the value is always 1.",
                {{"version", RESENDD_VERSION}, {"allocator", std::string(allocator_name())}}, 1);
  // Retention: a pass every retention.interval deletes finished jobs past their keep time.
  std::function<void()> schedule_retention = [&] {
    retention.expires_after(cfg.retention.interval);
    retention.async_wait([&](const boost::system::error_code& e) {
      if (e) return;
      asio::co_spawn(
          io,
          [&]() -> asio::awaitable<void> {
            const auto n =
                co_await queue.apply_retention(cfg.retention.succeeded, cfg.retention.dead);
            spdlog::log(n > 0 ? spdlog::level::info : spdlog::level::debug,
                        "retention: {} finished job(s) deleted", n);
          },
          [&](std::exception_ptr e) {
            if (e) spdlog::error("retention: a pass failed: {}", exception_message(e));
            schedule_retention();  // the next pass comes whatever this one did
          });
    });
  };
  if (cfg.retention.succeeded > millis{0} || cfg.retention.dead > millis{0}) schedule_retention();
  notify_systemd("READY=1");
  // Heartbeat from the event loop: WATCHDOG=1 at half the watchdog interval (a loop that stops
  // turning stops pinging, and systemd restarts the daemon) and STATUS= with the queue's figures.
  const auto watchdog = watchdog_interval();
  const auto beat = watchdog.count() > 0
                        ? std::chrono::duration_cast<std::chrono::milliseconds>(watchdog / 2)
                        : std::chrono::milliseconds(10'000);
  std::function<void()> heartbeat_tick = [&] {
    std::int64_t queued = 0, delivering = 0;
    for (const auto& [key, n] : queue.counts()) {
      if (key.first == "queued") queued += n;
      if (key.first == "delivering") delivering += n;
    }
    const std::string status = (watchdog.count() > 0 ? "WATCHDOG=1\n" : "") +
                               std::string("STATUS=queued ") + std::to_string(queued) +
                               ", delivering " + std::to_string(delivering) + ", in flight " +
                               std::to_string(dispatch.in_flight());
    notify_systemd(status.c_str());
    heartbeat.expires_after(beat);
    heartbeat.async_wait([&](const boost::system::error_code& e) {
      if (!e) heartbeat_tick();
    });
  };
  heartbeat_tick();

  // One thread runs all network I/O (server, client, timers): Beast streams and their timers are
  // not thread-safe, and the heavy work (SQLite commits) has its own thread in the store writer.
  run_io(io);

  // Deliveries cut off by the deadline go back to the queue with their attempt given back; the
  // writer then drains, checkpoints the WAL into the database file and stops.
  if (int n = store.requeue_delivering(clk.now(), true))
    spdlog::warn("shutdown: {} job(s) queued again", n);
  store.close();
  spdlog::info("stopped");
  return 0;
}

}  // namespace resendd
