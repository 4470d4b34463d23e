#include "queue/intake.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "queue/json_path.h"
#include "queue/routes.h"

using namespace resendd;
using nlohmann::json;

namespace {
const std::string bitable =
    "https://open.feishu.cn/open-apis/bitable/v1/apps/APP/tables/TBL/records/batch_create";
const sys_time now{millis{1'800'000'000'000}};

std::variant<store::new_job, intake_error> prep(const json& body, const std::string& key = "") {
  static const config c;
  static const route_table routes(c);
  return prepare_job(body.dump(), key, routes, now);
}

std::string code_of(const std::variant<store::new_job, intake_error>& r) {
  if (auto* e = std::get_if<intake_error>(&r)) return std::to_string(e->status) + " " + e->code;
  return "ok";
}
}  // namespace

TEST(Intake, AcceptsTheSeedRequest) {
  const json body = {{"location", bitable},
                     {"headers", {{"Authorization", "Bearer t-x"}}},
                     {"params", {{"records", {{{"fields", R"({"金额":1})"}}}}}},
                     {"commands", {{"json_parse", {"$.params.records[*].fields"}}}}};
  auto r = prep(body, "k1");
  ASSERT_EQ(code_of(r), "ok");
  const auto& job = std::get<store::new_job>(r);
  EXPECT_EQ(job.route, "feishu-bitable");
  EXPECT_EQ(job.method, "POST");
  EXPECT_EQ(job.idempotency_key, "k1");
  ASSERT_TRUE(job.client_token);
  EXPECT_EQ(job.client_token->size(), 36u);
  EXPECT_EQ((*job.client_token)[14], '4');
  EXPECT_EQ(job.resource_key, "bitable:APP/TBL");
  EXPECT_EQ(json::parse(job.request), body);  // stored as received, commands not applied
}

TEST(Intake, KeepsTheBotsClientToken) {
  auto r = prep({{"location", bitable + "?client_token=0b5c6c4e-0a8e-4a47-9d0a-1c1f6f3b3a11"}});
  ASSERT_EQ(code_of(r), "ok");
  EXPECT_FALSE(std::get<store::new_job>(r).client_token);
}

TEST(Intake, ABotsClientTokenIsOneUuidV4OrRefused) {
  const std::string v4 = "0b5c6c4e-0a8e-4a47-9d0a-1c1f6f3b3a11";
  const std::vector<std::string> refused = {
      "client_token=",
      "client_token",
      "client_token=abc",
      "client_token=%20" + v4,
      "client_token=0b5c6c4e-0a8e-7a47-9d0a-1c1f6f3b3a11",  // a UUIDv7
      "client_token=" + v4 + "&client_token=" + v4,
      "user_id_type=open_id&client_token=x"};
  for (const auto& q : refused) {
    const auto r = prep({{"location", bitable + "?" + q}});
    EXPECT_EQ(code_of(r), "400 bad_location") << q;
    if (auto* e = std::get_if<intake_error>(&r)) {
      EXPECT_NE(e->message.find("UUIDv4"), std::string::npos) << e->message;
    }
  }
  EXPECT_EQ(code_of(prep({{"location", bitable + "?user_id_type=open_id&client_token=" + v4}})),
            "ok");
}

TEST(Intake, EachBadInputHasItsOwnError) {
  EXPECT_EQ(code_of(prep(json::array())), "400 bad_json");
  EXPECT_EQ(code_of(prep({{"x", 1}})), "400 bad_location");
  EXPECT_EQ(code_of(prep({{"location", 5}})), "400 bad_location");
  EXPECT_EQ(code_of(prep({{"location", "/relative"}})), "400 bad_location");
  EXPECT_EQ(code_of(prep({{"location", "ftp://open.feishu.cn/x"}})), "400 bad_location");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"headers", "x"}})), "400 bad_headers");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"headers", {{"a", 1}}}})), "400 bad_headers");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"headers", {{"X", "a\r\nInjected: 1"}}}})),
            "400 bad_headers");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"headers", {{"Bad Name", "v"}}}})),
            "400 bad_headers");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"commands", {{"json_parse", "$.a"}}}})),
            "400 bad_commands");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"commands", {{"json_parse", {1}}}}})),
            "400 bad_commands");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"commands", {{"rm", {"$"}}}}})),
            "400 bad_commands");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"commands", {{"json_parse", {"$.["}}}}})),
            "400 bad_path");
  EXPECT_EQ(code_of(prep({{"location", bitable},
                          {"params", {{"f", "{bad"}}},
                          {"commands", {{"json_parse", {"$.params.f"}}}}})),
            "400 bad_path");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"method", "GE T"}})), "400 bad_method");
  EXPECT_EQ(code_of(prep({{"location", "https://example.com/x"}})), "403 no_route");
  const config c;
  const route_table routes(c);
  EXPECT_EQ(code_of(prepare_job("{not json", "", routes, now)), "400 bad_json");
  EXPECT_EQ(code_of(prepare_job(std::string(5000, '['), "", routes, now)), "400 bad_json");
}

TEST(Intake, MutatedInputNeverThrows) {
  // Deterministic mutations of a valid request: truncations, byte flips, spliced brackets.
  const config c;
  const route_table routes(c);
  const std::string seed = json{{"location", bitable},
                                {"headers", {{"Authorization", "Bearer t-x"}}},
                                {"params", {{"records", {{{"fields", R"({"a":[1,{"b":"c"}]})"}}}}}},
                                {"commands", {{"json_parse", {"$.params.records[*].fields"}}}}}
                               .dump();
  std::uint64_t x = 88172645463325252ull;  // xorshift64: reproducible
  auto next = [&] { return x ^= x << 13, x ^= x >> 7, x ^= x << 17; };
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string s = seed;
    const int edits = 1 + int(next() % 4);
    for (int e = 0; e < edits; ++e) {
      const auto pos = next() % s.size();
      switch (next() % 4) {
        case 0:
          s[pos] = char(next() & 0xff);
          break;
        case 1:
          s.resize(pos);
          break;
        case 2:
          s.insert(pos, std::string(1 + next() % 8, "[{\"'\\.*$"[next() % 8]));
          break;
        default:
          s.erase(pos, 1 + next() % 6);
          break;
      }
      if (s.empty()) s = "{";
    }
    std::variant<store::new_job, intake_error> r;
    ASSERT_NO_THROW(r = prepare_job(s, "", routes, now)) << s;
    accepted += std::holds_alternative<store::new_job>(r);
  }
  EXPECT_GT(accepted, 0);  // some mutations stay valid (e.g. inside a string)
}

TEST(Intake, AddressLiteralsARouteMayNotReachAreRefusedAtOnce) {
  config c;
  route_config any;
  any.name = "any";
  any.match = R"(^https?://.*$)";
  any.profile = "generic";
  any.serialize_by = "";
  c.routes = {any};
  const route_table closed(c);
  const auto at = [&](const route_table& t, const std::string& location) {
    return code_of(prepare_job(json{{"location", location}}.dump(), "", t, now));
  };
  for (const char* l : {"http://10.0.0.1/x", "http://127.0.0.1:9000/x", "http://[::1]/x",
                        "http://[::ffff:127.0.0.1]/x", "http://169.254.169.254/latest",
                        "http://100.64.0.1/x", "http://2130706433/x", "http://0x7f.1/x",
                        "http://0177.0.0.1/x", "http://192.168.1.1/x", "http://0.0.0.0/x"})
    EXPECT_EQ(at(closed, l), "403 private_address") << l;
  // Public literals and names pass (a name is checked after DNS, at the attempt).
  EXPECT_EQ(at(closed, "http://1.1.1.1/x"), "ok");
  EXPECT_EQ(at(closed, "http://[2606:4700:4700::1111]/x"), "ok");
  EXPECT_EQ(at(closed, "http://localhost.example.com/x"), "ok");
  c.routes[0].allow_private_networks = true;
  const route_table open(c);
  EXPECT_EQ(at(open, "http://10.0.0.1/x"), "ok");
  EXPECT_EQ(at(open, "http://[::1]/x"), "ok");
}

TEST(Intake, RoutesDecideOnTheUrlThatIsSentAndOnTheMethod) {
  const std::string base = "https://open.feishu.cn/open-apis/bitable/v1/apps/APP/tables/";
  // A query, an encoded slash or percent-encoding in a segment does not pass the built-in route.
  EXPECT_EQ(code_of(prep({{"location", base + "TBL?/records/batch_create"}, {"method", "DELETE"}})),
            "403 no_route");
  EXPECT_EQ(code_of(prep({{"location", base + "TBL?/records/batch_create"}})), "403 no_route");
  EXPECT_EQ(code_of(prep({{"location", base + "T%2FBL/records/batch_create"}})), "403 no_route");
  EXPECT_EQ(code_of(prep({{"location", base + "TBL/x/../../../../admin/records/batch_create"}})),
            "403 no_route");
  // Hosts that are not what they look like.
  EXPECT_EQ(code_of(prep({{"location", "http://evil.com%00.open.feishu.cn/x"}})),
            "400 bad_location");
  EXPECT_EQ(code_of(prep({{"location", "http://127.0.0.1%2f.open.feishu.cn/x"}})),
            "400 bad_location");
  // The built-in route sends POST only.
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"method", "DELETE"}})), "403 method_not_allowed");
  EXPECT_EQ(code_of(prep({{"location", bitable}, {"method", "post"}})), "ok");
  // What is stored (and sent, and matched) is the normalized URL.
  auto r = prep({{"location",
                  "HTTPS://OPEN.FEISHU.CN/open-apis/bitable/v1/apps/APP/./tables/TBL/"
                  "records/batch_create?user_id_type=%6fpen_id"}});
  ASSERT_EQ(code_of(r), "ok");
  EXPECT_EQ(std::get<store::new_job>(r).location, bitable + "?user_id_type=open_id");
  // https's own port names the same origin as none; another port is another origin.
  r = prep({{"location",
             "https://open.feishu.cn:443/open-apis/bitable/v1/apps/APP/tables/TBL/"
             "records/batch_create"}});
  ASSERT_EQ(code_of(r), "ok");
  EXPECT_EQ(std::get<store::new_job>(r).location, bitable);
  EXPECT_EQ(code_of(prep({{"location",
                           "https://open.feishu.cn:8443/open-apis/bitable/v1/apps/APP/"
                           "tables/TBL/records/batch_create"}})),
            "403 no_route");
}

// Intake reads bodies with Boost.JSON, delivery with nlohmann::json: what intake accepts must be
// exactly what delivery can read and apply its json_parse commands to. Each text here is one
// where the two libraries, left alone, disagree.
TEST(Intake, AcceptsExactlyWhatDeliveryCanRead) {
  static const config c;
  static const route_table routes(c);
  const std::string loc = "\"location\":\"" + bitable + "\"";
  const std::string cmd = ",\"commands\":{\"json_parse\":[\"$.f\"]}";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xEF\xBB\xBF{" + loc + "}", "ok"},                        // a BOM: nlohmann skips it
      {"\xEF\xBB\xBF\xEF\xBB\xBF{" + loc + "}", "400 bad_json"},  // only one
      {"{" + loc + std::string("}\0 and anything", 16), "ok"},    // a NUL ends nlohmann's input
      {"{" + loc + ",\"n\":1e400}", "400 bad_json"},              // Boost.JSON: infinity
      {"{" + loc + ",\"n\":[-1.8e308]}", "400 bad_json"},
      {"{" + loc + ",\"n\":1" + std::string(400, '0') + "}", "400 bad_json"},
      {"{" + loc + ",\"n\":1e-400,\"m\":123456789012345678901234567890}", "ok"},
      {"{" + loc + ",\"n\":0E144444444666344444446663}", "ok"},  // Boost.JSON: overflow
      {"{" + loc + ",\"n\":1e-99999999999999999999}", "ok"},
      {"{" + loc + ",\"n\":0e5555}", "ok"},    // Boost.JSON: infinity
      {"{\"location\":5," + loc + "}", "ok"},  // the last of a key wins
      {"{" + loc + ",\"location\":5}", "400 bad_location"},
      {"{" + loc + ",\"f\":\"{\\\"n\\\":1e400}\"" + cmd + "}", "400 bad_path"},
      {"{" + loc + ",\"f\":\"\xEF\xBB\xBF{}\"" + cmd + "}", "ok"},
      {"{" + loc + ",\"f\":\"{}\\u0000x\"" + cmd + "}", "ok"},
      {"{" + loc + ",\"f\":\"{\\\"a\\\":\\\"\\\\ud800\\\"}\"" + cmd + "}", "400 bad_path"},
  };
  for (const auto& [body, want] : cases) {
    SCOPED_TRACE(json(body).dump(-1, ' ', true, json::error_handler_t::replace));
    const auto r = prepare_job(body, "", routes, now);
    EXPECT_EQ(code_of(r), want);
    if (code_of(r) != "ok") continue;
    // Accepted: delivery reads the stored text and applies the commands without an error.
    auto doc = json::parse(std::get<store::new_job>(r).request, nullptr, false);
    ASSERT_FALSE(doc.is_discarded());
    std::vector<std::string> paths;
    if (doc.contains("commands")) paths = doc["commands"]["json_parse"];
    EXPECT_EQ(apply_json_parse(doc, paths), std::nullopt);
  }
}
