#include "config/config.h"
#include "support/temp_dir.h"
#include "util/log.h"

#include <gtest/gtest.h>

using namespace resendd;

TEST(Config, DefaultsNeedNoFile) {
  const auto c = load_config(std::nullopt, {});
  EXPECT_EQ(c.server.listen, "127.0.0.1:9000");
  EXPECT_EQ(c.store.path, "var/resendd.db");
  ASSERT_EQ(c.routes.size(), 1u);
  EXPECT_EQ(c.routes[0].name, "feishu-bitable");
  EXPECT_EQ(c.routes[0].profile, "feishu");
  EXPECT_EQ(c.delivery.defaults.max_attempts, 20);
  EXPECT_EQ(c.delivery.defaults.retry_base, millis{2000});
}

// The example file documents the defaults: every key it shows says what leaving it out means.
// (A key shown with another value than the built-in one is a default a user who copies the
// example silently does not get, or the other way round.)
TEST(Config, TheExampleFileMeansWhatNoFileMeans) {
  const auto example =
      load_config(std::filesystem::path(RESENDD_SOURCE_DIR) / "config/resendd.toml", {});
  const auto none = load_config(std::nullopt, {});
  EXPECT_EQ(render_config(example), render_config(none));
}

TEST(Config, ReadsEverySection) {
  const auto c = load_config_text(R"(
[server]
listen = "127.0.0.1:0"
api_tokens = ["a", "b"]
max_body_bytes = 2048
[store]
path = "x/y.db"
[delivery]
concurrency = 8
request_timeout = "5s"
retry_base = "10ms"
retry_cap = "1s"
[[routes]]
name = "test"
match = '^http://127\.0\.0\.1:\d+/.*$'
allow_private_networks = true
max_attempts = 3
[log]
level = "debug"
)",
                                  {});
  EXPECT_EQ(c.server.api_tokens.size(), 2u);
  EXPECT_EQ(c.server.max_body_bytes, 2048u);
  EXPECT_EQ(c.delivery.defaults.concurrency, 8);
  ASSERT_EQ(c.routes.size(), 1u);
  EXPECT_EQ(c.routes[0].profile, "generic");
  EXPECT_TRUE(c.routes[0].allow_private_networks);
  const auto s = effective_settings(c, c.routes[0]);
  EXPECT_EQ(s.max_attempts, 3);
  EXPECT_EQ(s.retry_base, millis{10});
  EXPECT_EQ(s.request_timeout, millis{5000});
}

TEST(Config, ReportsEveryBadKeyByName) {
  try {
    load_config_text(R"(
[server]
listen = 9000
colour = "blue"
[delivery]
retry_base = "soon"
max_attempts = 0
[[routes]]
name = "r"
match = "(unclosed"
profile = "magic"
[nonsense]
)",
                     {});
    FAIL() << "expected config_error";
  } catch (const config_error& e) {
    const std::string all = e.what();
    for (const char* key : {"server.listen", "server.colour: unknown key", "delivery.retry_base",
                            "delivery.max_attempts", "routes[0].match", "routes[0].profile",
                            "nonsense: unknown section"})
      EXPECT_NE(all.find(key), std::string::npos) << key << " missing in:\n" << all;
  }
}

TEST(Config, SyntaxErrorsAreReported) {
  EXPECT_THROW(load_config_text("[server\nlisten=", {}), config_error);
}

TEST(Config, EnvironmentOverridesAndSecretsAreMasked) {
  const auto c = load_config_text("[feishu]\napp_id = \"cli_x\"\n",
                                  {{"RESENDD_API_TOKENS", "tok-one-aaaaaaaaaaaaaaaa, tok2"},
                                   {"FEISHU_APP_SECRET", "super-secret-value-123456"},
                                   {"RESENDD_LOG", "warn"},
                                   {"EXPECTED_COZE_API_KEY", "app-1"}});
  EXPECT_EQ(c.server.api_tokens, (std::vector<std::string>{"tok-one-aaaaaaaaaaaaaaaa", "tok2"}));
  EXPECT_EQ(c.feishu.app_secret, "super-secret-value-123456");
  EXPECT_EQ(c.log.level, "warn");
  EXPECT_EQ(c.coze.app_id, "app-1");
  const auto text = render_config(c);
  EXPECT_EQ(text.find("super-secret-value-123456"), std::string::npos);
  EXPECT_EQ(text.find("tok-one-aaaaaaaaaaaaaaaa"), std::string::npos);
  // The rendering is itself a valid config.
  EXPECT_NO_THROW(load_config_text(text, {}));
}

TEST(Config, ApiTokensAreTokensAClientCanSend) {
  // An empty token would let a public listener start with no token anyone can use; one with a
  // control character or a space at either end can never match a Bearer header. They stop
  // start-up, and the message never quotes the token.
  for (const char* bad : {R"([""])", R"(["ok-token", ""])", R"([" words"])", R"(["words "])",
                          "[\"tab\\twords\"]", "[\"words\\n\"]"}) {
    try {
      load_config_text(std::string("[server]\nlisten = \"0.0.0.0:9000\"\napi_tokens = ") + bad +
                           "\n",
                       {});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const config_error& e) {
      EXPECT_NE(std::string(e.what()).find("server.api_tokens["), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("words"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(load_config_text("[server]\napi_tokens = [\"two words\"]\n", {}));
  // A credential file may hold one token a line (CRLF too), or a comma-separated list.
  test::temp_dir dir;
  dir.write("api_tokens", "tok-one\r\ntok-two\n\n, tok-three \n");
  const auto c = load_config_text("", {{"CREDENTIALS_DIRECTORY", dir.path().string()}});
  EXPECT_EQ(c.server.api_tokens, (std::vector<std::string>{"tok-one", "tok-two", "tok-three"}));
}

TEST(Config, CredentialsRoutesNeedTheirSecrets) {
  EXPECT_THROW(load_config_text(R"(
[[routes]]
name = "r"
match = ".*"
credentials = "feishu_tenant"
)",
                                {}),
               config_error);
}

TEST(Config, PostgresBackendNeedsAUrlAndItsPasswordIsNeverShown) {
  EXPECT_EQ(load_config(std::nullopt, {}).store.backend, "sqlite");  // the default, as documented
  try {
    load_config_text("[store]\nbackend = \"postgres\"\n", {});
    ADD_FAILURE() << "a postgres backend without a URL was accepted";
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("store.url"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_config_text("[store]\nbackend = \"mysql\"\n", {}), config_error);
  const auto c = load_config_text(
      "[store]\nbackend = \"postgres\"\n",
      {{"RESENDD_STORE_URL", "postgresql://resendd:hunter2-pass@db.internal:5432/q?sslmode=require"}});
  EXPECT_EQ(c.store.url, "postgresql://resendd:hunter2-pass@db.internal:5432/q?sslmode=require");
  const auto text = render_config(c);
  EXPECT_EQ(text.find("hunter2-pass"), std::string::npos) << text;
  EXPECT_NE(text.find("postgresql://resendd:***@db.internal:5432/q?sslmode=require"),
            std::string::npos)
      << text;
  EXPECT_NO_THROW(load_config_text(text, {}));
}

TEST(Config, PgUrlMaskingCoversEveryPasswordForm) {
  EXPECT_EQ(resendd::mask_pg_url("postgresql://u:secret@h/db"), "postgresql://u:***@h/db");
  EXPECT_EQ(resendd::mask_pg_url("postgres://u@h/db?password=secret&x=1"),
            "postgres://u@h/db?password=***&x=1");
  EXPECT_EQ(resendd::mask_pg_url("host=h user=u password=secret dbname=q"),
            "host=h user=u password=*** dbname=q");
  EXPECT_EQ(resendd::mask_pg_url("host=h password='se cret' dbname=q"),
            "host=h password=*** dbname=q");
  EXPECT_EQ(resendd::mask_pg_url("postgresql://u@h/db"), "postgresql://u@h/db");
}

TEST(Config, ARoutesProfileBringsItsSafeDefaults) {
  const auto c = load_config_text(R"(
[[routes]]
name = "by-host"
match = '^https://open\.larksuite\.com/open-apis/.*$'
[[routes]]
name = "feishu-written"
match = '^https://example\.com/x$'
profile = "feishu"
[[routes]]
name = "feishu-unserialized"
match = '^https://open\.feishu\.cn/open-apis/im/.*$'
serialize_by = ""
[[routes]]
name = "plain"
match = '^https://example\.com/y$'
)",
                                  {});
  ASSERT_EQ(c.routes.size(), 4u);
  EXPECT_EQ(c.routes[0].profile, "feishu");  // inferred from the match
  EXPECT_TRUE(c.routes[0].profile_inferred);
  EXPECT_EQ(c.routes[0].serialize_by, "bitable_table");
  EXPECT_EQ(c.routes[0].key_concurrency, 1);
  EXPECT_FALSE(c.routes[1].profile_inferred);
  EXPECT_EQ(c.routes[1].serialize_by, "bitable_table");
  EXPECT_EQ(c.routes[2].serialize_by, "");  // said so
  EXPECT_EQ(c.routes[3].profile, "generic");
  EXPECT_EQ(c.routes[3].serialize_by, "");
  EXPECT_NE(render_config(c).find("profile = \"feishu\"  # inferred"), std::string::npos);
}

TEST(Config, APublicListenWithoutTokensIsRefusedWhenRead) {
  EXPECT_THROW(load_config_text("[server]\nlisten = \"0.0.0.0:9000\"\n", {}), config_error);
  EXPECT_THROW(load_config_text("[server]\nlisten = \"[::]:9000\"\n", {}), config_error);
  EXPECT_NO_THROW(load_config_text("[server]\nlisten = \"[::1]:9000\"\n", {}));
  EXPECT_NO_THROW(load_config_text("[server]\nlisten = \"127.0.0.2:9000\"\n", {}));
  EXPECT_NO_THROW(load_config_text("[server]\nlisten = \"0.0.0.0:9000\"\napi_tokens = [\"t\"]\n", {}));
  EXPECT_NO_THROW(load_config_text(
      "[server]\nlisten = \"0.0.0.0:9000\"\nallow_unauthenticated_public = true\n", {}));
}

TEST(Config, AListenerThatServeCannotBindIsRefusedWhenRead) {
  // Found by hand: a host name passed check-config and serve then stopped with exit 1; an
  // address with five parts was called public instead of malformed.
  for (const char* listen : {"myhost.example:9000", "1.2.3.4.5:9000", "[not-v6]:9000"}) {
    try {
      load_config_text(std::string("[server]\nlisten = \"") + listen +
                           "\"\napi_tokens = [\"t\"]\n",
                       {});
      ADD_FAILURE() << listen << " was accepted";
    } catch (const config_error& e) {
      EXPECT_NE(std::string(e.what()).find("is not an IP address or localhost"), std::string::npos)
          << e.what();
    }
  }
  for (const char* listen : {"localhost:0", "[::1]:0", "127.0.0.1:0", "[::]:0", "0.0.0.0:0"})
    EXPECT_NO_THROW(load_config_text(
        std::string("[server]\nlisten = \"") + listen + "\"\napi_tokens = [\"t\"]\n", {}))
        << listen;
}

// Found by fuzz_config: toml11 3.7.1 reads past its buffer reporting invalid UTF-8 inside a
// literal string (ASan: heap-buffer-overflow). The text is checked first.
TEST(Config, TextThatIsNotUtf8IsRefusedBeforeTheTomlParserSeesIt) {
  const std::string bad =
      "[log]\nlevel = \"info\"\n[[routes]]\nname = \"r\"\nmatch = "
      "'^https://open\\.feishu\\.cn/open-apis/bitable/v1/apps/[^/]+/tables/[^/]+/records/"
      "batch_cr\x9b\x9e\x8b\x9a\xd7\xa4\xc0\xa3.*)?$'\n";
  try {
    load_config_text(bad, {});
    FAIL() << "accepted";
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid UTF-8 (line 5, byte 140)"), std::string::npos)
        << e.what();
  }
  // Valid UTF-8 in a literal string is fine.
  EXPECT_NO_THROW(load_config_text("[[routes]]\nname = '账单'\nmatch = '^https://x/$'\n", {}));
}
