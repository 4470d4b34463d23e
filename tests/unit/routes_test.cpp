#include "queue/routes.h"

#include <gtest/gtest.h>

#include "queue/intake.h"

using namespace resendd;

TEST(Routes, DefaultRouteIsTheSeedAllowList) {
  const config c;
  route_table t(c);
  const std::string ok =
      "https://open.feishu.cn/open-apis/bitable/v1/apps/bascn1/tables/tbl2/records/batch_create";
  EXPECT_NE(t.match(ok), nullptr);
  EXPECT_NE(t.match(ok + "?user_id_type=open_id"), nullptr);
  EXPECT_EQ(
      t.match("https://open.feishu.cn/open-apis/bitable/v1/apps/a/tables/b/records/batch_delete"),
      nullptr);
  EXPECT_EQ(
      t.match("http://open.feishu.cn/open-apis/bitable/v1/apps/a/tables/b/records/batch_create"),
      nullptr);
  EXPECT_EQ(t.match("https://evil.example/?https://open.feishu.cn/open-apis/bitable/v1/apps/a/"
                    "tables/b/records/batch_create"),
            nullptr);
  EXPECT_EQ(t.match(ok + "x"), nullptr);
}

TEST(Routes, PatternMustMatchTheWholeLocation) {
  config c;
  c.routes[0].match = "https://a\\.example/x";
  route_table t(c);
  EXPECT_NE(t.match("https://a.example/x"), nullptr);
  EXPECT_EQ(t.match("https://a.example/x/y"), nullptr);
}

TEST(Routes, LongInputIsLinearTime) {
  config c;
  c.routes[0].match = "(a+)+b";  // catastrophic for backtracking engines
  route_table t(c);
  EXPECT_EQ(t.match(std::string(100000, 'a')), nullptr);
}

TEST(Routes, ResourceKeys) {
  route_config r;
  r.serialize_by = "bitable_table";
  EXPECT_EQ(resource_key(r,
                         "https://open.feishu.cn/open-apis/bitable/v1/apps/APP/tables/TBL/records/"
                         "batch_create?x=1"),
            "bitable:APP/TBL");
  r.serialize_by = "host";
  EXPECT_EQ(resource_key(r, "https://open.feishu.cn:8443/a/b"), "https://open.feishu.cn:8443");
  r.serialize_by = "path";
  EXPECT_EQ(resource_key(r, "http://h/a/b?q=1"), "http://h/a/b");
  r.serialize_by = "";
  EXPECT_EQ(resource_key(r, "http://h/a"), "");
}

TEST(Routes, ClientTokenLocations) {
  EXPECT_TRUE(takes_client_token(
      "https://open.feishu.cn/open-apis/bitable/v1/apps/a/tables/b/records/batch_create"));
  EXPECT_TRUE(
      takes_client_token("https://open.feishu.cn/open-apis/bitable/v1/apps/a/tables/b/records"));
  EXPECT_TRUE(takes_client_token(
      "http://127.0.0.1:8/open-apis/bitable/v1/apps/a/tables/b/records?user_id_type=x"));
  EXPECT_FALSE(takes_client_token(
      "https://open.feishu.cn/open-apis/bitable/v1/apps/a/tables/b/records/batch_update"));
}

TEST(Routes, LocationsAreNormalizedToWhatTheClientSends) {
  const auto norm = [](const char* l) {
    auto n = normalize_location(l);
    return n.error.empty() ? n.url : "error: " + n.error;
  };
  EXPECT_EQ(norm("HTTPS://Open.Feishu.CN/open-apis/./x/../y/%7e%41?a=%41"),
            "https://open.feishu.cn/open-apis/y/~A?a=A");
  EXPECT_EQ(norm("https://h/a/b/../../../../c"), "https://h/c");  // never above the root
  EXPECT_EQ(norm("https://h/a/%2e%2E/b/.."), "https://h/");
  EXPECT_EQ(norm("https://h/a/%2e%2E/b/./"), "https://h/b/");
  EXPECT_EQ(norm("https://h"), "https://h/");
  EXPECT_EQ(norm("https://h/a%2Fb"), "https://h/a%2Fb");  // an encoded slash stays encoded
  EXPECT_EQ(norm("https://h//a"), "https://h//a");
  // The scheme's own port, or an empty one, is dropped; any other is kept, without leading zeros.
  EXPECT_EQ(norm("https://Open.Feishu.CN:443/x"), "https://open.feishu.cn/x");
  EXPECT_EQ(norm("http://h:80/x"), "http://h/x");
  EXPECT_EQ(norm("https://h:/x"), "https://h/x");
  EXPECT_EQ(norm("https://h:0443/x"), "https://h/x");
  EXPECT_EQ(norm("https://h:80/x"), "https://h:80/x");
  EXPECT_EQ(norm("http://h:443/x"), "http://h:443/x");
  EXPECT_EQ(norm("http://127.0.0.1:08080/x"), "http://127.0.0.1:8080/x");
  EXPECT_EQ(norm("https://[::1]:443/x"), "https://[::1]/x");
  EXPECT_EQ(norm("https://[::1]:8443/x"), "https://[::1]:8443/x");
  // Hosts that would name another host than the text shows, and user info, are refused.
  EXPECT_NE(norm("http://evil.com%00.example.com/").find("error: location's host"),
            std::string::npos);
  EXPECT_NE(norm("http://127.0.0.1%2f.example.com/").find("error: location's host"),
            std::string::npos);
  EXPECT_NE(norm("https://open.feishu.cn@evil.example/").find("user info"), std::string::npos);
  EXPECT_NE(norm("ftp://h/").find("error"), std::string::npos);
  // A fragment is refused and the bot is told why (it read "not an absolute URL" before).
  EXPECT_NE(norm("https://h/#frag").find("error: location must not carry a fragment"),
            std::string::npos);
  EXPECT_NE(norm("https://h/x?a=1#").find("must not carry a fragment"), std::string::npos);
  EXPECT_EQ(norm("ftp#x").find("fragment"), std::string::npos);  // not a URL at all
  EXPECT_NE(norm("https://h/a b").find("error"), std::string::npos);
}

TEST(Routes, MethodsDefaultToPostOnTheBuiltInRouteAndAllOnAWrittenOne) {
  const config builtin;
  EXPECT_TRUE(allows_method(builtin.routes[0], "POST"));
  EXPECT_FALSE(allows_method(builtin.routes[0], "DELETE"));
  route_config written;
  written.methods.clear();
  EXPECT_TRUE(allows_method(written, "DELETE"));
  written.methods = {"GET", "PUT"};
  EXPECT_TRUE(allows_method(written, "PUT"));
  EXPECT_FALSE(allows_method(written, "POST"));
}
