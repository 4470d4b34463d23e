#include "queue/intake.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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
}
