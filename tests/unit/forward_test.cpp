#include "queue/forward.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "queue/json_path.h"
#include "store/queue_store.h"
#include "util/log.h"
#include "util/utf8.h"

using namespace resendd;
using nlohmann::json;

namespace {

// The reference: parse the request, apply the paths to the document, take params.
json reference_params(const std::string& request) {
  json req = json::parse(request);
  std::vector<std::string> paths;
  for (const auto& p : req["commands"]["json_parse"]) paths.push_back(p.get<std::string>());
  EXPECT_FALSE(apply_json_parse(req, paths));
  return req["params"];
}

forwarded forward_ok(const std::string& request) {
  auto r = forward_request(request);
  if (auto* e = std::get_if<std::string>(&r)) ADD_FAILURE() << *e;
  return std::get<forwarded>(r);
}

// Random JSON text, built as text so that spacing, number spellings, escapes and duplicate keys
// are whatever the generator chose.
class gen {
 public:
  explicit gen(unsigned seed) : rng_(seed) {}

  std::string ws() {
    static const char* spaces[] = {"", "", " ", "\n  ", "\t", "  "};
    return spaces[pick(6)];
  }
  std::string value(int depth) {
    const int k = depth > 3 ? int(pick(3)) : int(pick(6));
    if (k == 0) {
      static const char* numbers[] = {"0",
                                      "-0",
                                      "1E2",
                                      "123456789012345678901234567890",
                                      "18446744073709551616",
                                      "3.14159",
                                      "-1.5e-7",
                                      "42",
                                      "1764115200000",
                                      "0.1000"};
      return numbers[pick(10)];
    }
    if (k == 1) {
      static const char* lits[] = {"true", "false", "null"};
      return lits[pick(3)];
    }
    if (k == 2) {
      static const char* strings[] = {
          R"("a")",         R"("金额")", R"("\u91d1\n")", R"("\ud83d\ude00")",
          R"("q\"uote\\")", R"("")",     R"("午饭 🍜")"};
      return strings[pick(7)];
    }
    if (k == 3 || k == 4) return object(depth + 1, false);
    std::string out = "[" + ws();
    const auto n = pick(4);
    for (std::size_t i = 0; i < n; ++i) out += (i ? "," + ws() : "") + value(depth + 1) + ws();
    return out + "]";
  }
  std::string object(int depth, bool) {
    static const char* keys[] = {"a", "b", "金额", "a", "备注", "x y"};
    std::string out = "{" + ws();
    const auto n = pick(4);
    for (std::size_t i = 0; i < n; ++i)
      out += std::string(i ? "," + ws() : "") + "\"" + keys[pick(6)] + "\"" + ws() + ":" + ws() +
             value(depth + 1) + ws();
    return out + "}";
  }
  // `inner` as the body of a JSON string: quotes, backslashes and controls escaped; other
  // characters raw or as \u escapes, at random.
  std::string as_string(const std::string& inner) {
    std::string out = "\"";
    for (std::size_t i = 0; i < inner.size();) {
      const auto c = static_cast<unsigned char>(inner[i]);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += char(c);
        ++i;
      } else if (c == '\n') {
        out += "\\n", ++i;
      } else if (c == '\t') {
        out += "\\t", ++i;
      } else if (c < 0x80) {
        out += char(c), ++i;
      } else {
        const std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        unsigned cp = c & (len == 4 ? 0x07 : len == 3 ? 0x0F : 0x1F);
        for (std::size_t j = 1; j < len; ++j) cp = (cp << 6) | (inner[i + j] & 0x3F);
        if (pick(2)) {
          out += inner.substr(i, len);
        } else {
          char buf[16];
          if (cp >= 0x10000) {
            const unsigned v = cp - 0x10000;
            std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10),
                          0xDC00 + (v & 0x3FF));
          } else {
            std::snprintf(buf, sizeof buf, "\\u%04x", cp);
          }
          out += buf;
        }
        i += len;
      }
    }
    return out + "\"";
  }
  std::size_t pick(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }

 private:
  std::mt19937 rng_;
};

}  // namespace

// Property: for random documents, what goes out parses to what the reference produces, and is
// the stored params text byte for byte except that each target string is replaced by the JSON
// text it holds.
TEST(Forward, BodyIsTheStoredTextExceptAtTargets) {
  for (unsigned seed = 1; seed <= 500; ++seed) {
    gen g(seed);
    std::string stored = "{" + g.ws() + "\"records\"" + g.ws() + ":" + g.ws() + "[";
    std::string expected = stored;
    const auto n = 1 + g.pick(3);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string sep = i ? "," + g.ws() : "";
      const std::string inner = g.object(1, true);
      const std::string before = "{" + g.ws() + "\"id\":" + g.value(3) + "," + g.ws() +
                                 "\"fields\"" + g.ws() + ":" + g.ws();
      const std::string after = g.ws() + "," + g.ws() + "\"note\":" + g.value(2) + "}";
      stored += sep + before + g.as_string(inner) + after;
      expected += sep + before + inner + after;
    }
    const std::string tail = "]" + g.ws() + "}";
    stored += tail;
    expected += tail;
    const std::string request =
        R"({"location":"https://open.feishu.cn/x","headers":{"B":"2","A":"\u0031"},)"
        R"("params":)" +
        stored + R"(,"commands":{"json_parse":["$.params.records[*].fields"]}})";
    auto f = forward_ok(request);
    ASSERT_TRUE(f.body) << request;
    EXPECT_TRUE(f.verbatim);
    EXPECT_EQ(*f.body, expected) << "seed " << seed;
    EXPECT_EQ(json::parse(*f.body), reference_params(request)) << "seed " << seed;
    ASSERT_EQ(f.headers.size(), 2u);
    EXPECT_EQ(f.headers[0], (std::pair<std::string, std::string>{"A", "1"}));
  }
}

TEST(Forward, NumbersKeyOrderAndDuplicatesSurvive) {
  const std::string request =
      R"({"location":"http://x/","params":{"z":123456789012345678901234567890, "a":-0,)"
      R"( "n":1E2,"a":18446744073709551616,"f":"{\"id\": 7e0, \"big\": 12345678901234567890123}"},)"
      R"("commands":{"json_parse":["$.params.f"]}})";
  auto f = forward_ok(request);
  EXPECT_EQ(
      *f.body,
      R"({"z":123456789012345678901234567890, "a":-0, "n":1E2,"a":18446744073709551616,"f":{"id": 7e0, "big": 12345678901234567890123}})");
}

TEST(Forward, NoParamsNoBodyAndNullParams) {
  EXPECT_FALSE(forward_ok(R"({"location":"http://x/"})").body);
  EXPECT_FALSE(forward_ok(R"({"location":"http://x/","params":null})").body);
  EXPECT_EQ(*forward_ok(R"({"location":"http://x/","params":[1, 2]})").body, "[1, 2]");
}

TEST(Forward, ParamsItselfAsTarget) {
  auto f = forward_ok(
      R"({"location":"http://x/","params":" {\"a\": 1} ","commands":{"json_parse":["$.params"]}})");
  EXPECT_EQ(*f.body, R"({"a": 1})");
}

// Paths into an earlier path's result, or a target reached twice, go the parsed way: the result
// equals the reference (or intake's error), not verbatim.
TEST(Forward, ChainedPathsFallBackToTheParsedDocument) {
  const std::string request =
      R"({"location":"http://x/","params":{"f":"{\"g\": \"{\\\"h\\\": 1}\"}"},)"
      R"("commands":{"json_parse":["$.params.f", "$.params.f.g"]}})";
  auto f = forward_ok(request);
  EXPECT_FALSE(f.verbatim);
  EXPECT_EQ(json::parse(*f.body), reference_params(request));
  EXPECT_EQ(json::parse(*f.body)["f"]["g"]["h"], 1);

  auto twice = forward_request(
      R"({"location":"http://x/","params":{"f":"{}"},"commands":{"json_parse":["$.params.f","$.params.f"]}})");
  ASSERT_TRUE(std::holds_alternative<std::string>(twice));
  EXPECT_NE(std::get<std::string>(twice).find("not a string"), std::string::npos);
}

TEST(Forward, TargetThatIsNotJsonIsAnError) {
  auto r = forward_request(
      R"({"location":"http://x/","params":{"f":"not json"},"commands":{"json_parse":["$.params.f"]}})");
  ASSERT_TRUE(std::holds_alternative<std::string>(r));
  EXPECT_NE(std::get<std::string>(r).find("not valid JSON"), std::string::npos);
  EXPECT_TRUE(std::holds_alternative<std::string>(forward_request("[1]")));
  EXPECT_TRUE(std::holds_alternative<std::string>(forward_request("{\"params\": ")));
}

// A succeeded job's kept request: the credentials' values are masked in the text, every other
// byte stays (key order, spacing, numbers a parser would round).
TEST(Scrub, MasksCredentialValuesInPlaceAndKeepsEveryOtherByte) {
  const std::string request =
      R"({"location" : "https://open.feishu.cn/x",  "headers":{"X-Trace":"t1",)"
      R"( "Authorization":"Bearer t-secret-token-value-123456", "A":1E2},)"
      R"("params":{"n":123456789012345678901234567890,"s":"\u91d1"}})";
  const auto scrubbed = scrub_request_secrets(request);
  ASSERT_TRUE(scrubbed);
  EXPECT_EQ(*scrubbed, R"({"location" : "https://open.feishu.cn/x",  "headers":{"X-Trace":"t1",)"
                       R"x( "Authorization":"Bearer t-se…(27 chars)", "A":1E2},)x"
                       R"("params":{"n":123456789012345678901234567890,"s":"\u91d1"}})");
  // Nothing to mask: nothing to rewrite.
  EXPECT_FALSE(scrub_request_secrets(R"({"headers":{"X-Trace":"t1"},"params":{}})"));
  EXPECT_FALSE(scrub_request_secrets(R"({"headers":"Authorization","params":{}})"));
}

// Every copy of a credential is masked: duplicate keys (a parser keeps the last, the text keeps
// all), a name spelled with escapes, a second "headers" member.
TEST(Scrub, MasksEveryCopyOfACredential) {
  const std::string request =
      R"({"headers":{"authorization":"Bearer first-secret-0123456789",)"
      R"("Author\u0069zation":"Bearer second-secret-0123456789","Cookie":"sid=cookie-secret-01234"},)"
      R"("headers":{"X-Api-Key":"third-secret-0123456789"}})";
  const auto scrubbed = scrub_request_secrets(request);
  ASSERT_TRUE(scrubbed);
  for (const char* secret : {"first-secret", "second-secret", "cookie-secret", "third-secret"})
    EXPECT_EQ(scrubbed->find(secret), std::string::npos) << secret << " in " << *scrubbed;
  EXPECT_NE(scrubbed->find(R"x("Author\u0069zation":"Bearer seco…(24 chars)")x"), std::string::npos)
      << *scrubbed;
  EXPECT_TRUE(json::accept(*scrubbed));
}

// Property: for random requests, the kept text parses to what the re-serializing way (versions
// before 2026-11-28) kept, and a repeated Idempotency-Key with the request as sent matches a job
// kept either way, and no other request does.
TEST(Scrub, SameDocumentAsTheReserializedWayAndBothFormsMatchARepeat) {
  static const char* names[] = {"Authorization",       "X-Trace",
                                "x-auth-token",        "Content-Type",
                                "Proxy-Authorization", "X-Secret-Thing"};
  static const char* values[] = {R"("Bearer t-0123456789abcdefghij")",
                                 R"("short")",
                                 R"("\u0042earer \ud83d\ude00 0123456789abcdef")",
                                 "17",
                                 "null",
                                 R"("t-\"quoted\"-0123456789abcdef")"};
  int masked = 0;
  for (unsigned seed = 1; seed <= 500; ++seed) {
    gen g(seed);
    std::string headers = "{" + g.ws();
    const auto n = g.pick(5);
    for (std::size_t i = 0; i < n; ++i)
      headers += std::string(i ? "," + g.ws() : "") + "\"" + names[g.pick(6)] + "\"" + g.ws() +
                 ":" + g.ws() + values[g.pick(6)] + g.ws();
    headers += "}";
    const std::string request = "{" + g.ws() + R"("location":"https://open.feishu.cn/x",)" +
                                g.ws() + "\"headers\"" + g.ws() + ":" + g.ws() + headers + "," +
                                g.ws() + "\"params\":" + g.value(1) + g.ws() + "}";
    SCOPED_TRACE(request);
    const auto spliced = scrub_request_secrets(request);
    const auto reserialized = scrub_request_secrets_reserialized(request);
    // A parser reads the same document from either. (Only where a parser would drop a copy of a
    // credential, a duplicate key, does the re-serializing way find nothing to mask: this way
    // still masks the copy in the text.)
    EXPECT_EQ(json::parse(spliced.value_or(request)), json::parse(reserialized.value_or(request)));
    if (reserialized) {
      ASSERT_TRUE(spliced);
    }
    if (!spliced) continue;
    ++masked;
    std::string other = request;  // another request: another location
    other.replace(other.find("cn/x"), 4, "cn/y");
    EXPECT_TRUE(store::same_request(*spliced, request));
    EXPECT_FALSE(store::same_request(*spliced, other));
    if (!reserialized) continue;
    EXPECT_TRUE(store::same_request(*reserialized, request));
    EXPECT_FALSE(store::same_request(*reserialized, other));
  }
  EXPECT_GT(masked, 100);  // the generator does reach the masking
}

// An attempt's kept response: values under names that could be credentials are masked, wherever
// they are nested and however the name is spelled; a response with no such name is kept as it
// came, byte for byte.
TEST(MaskResponse, MasksCredentialsAndKeepsEverythingElseAsItCame) {
  const std::string plain = "{ \"code\": 0,\"msg\":\"success\",\n \"data\":{\"records\":[]} }";
  EXPECT_EQ(mask_response(plain, 4096), plain);
  EXPECT_EQ(mask_response("busy, try later", 4096), "busy, try later");

  const std::string secret = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (const std::string name : {"access_token", "Tenant_Access_TOKEN", "app_secret", "Password",
                                 "authorization", "t\\u006fken"}) {
    const std::string body =
        R"({"code":0,"data":{"list":[{")" + name + R"(":")" + secret + R"("}]}})";
    const auto kept = mask_response(body, 4096);
    EXPECT_EQ(kept.find(secret), std::string::npos) << name << ": " << kept;
    const auto doc = json::parse(kept);
    EXPECT_EQ(doc["code"], 0) << name;
  }
  // client_token is Feishu's idempotency token, not a credential: it stays.
  const std::string ct = R"({"data":{"client_token":"fe599b60-450f-46ff-b2ef-9f6675625b97"}})";
  EXPECT_NE(mask_response(ct, 4096).find("fe599b60-450f-46ff-b2ef-9f6675625b97"),
            std::string::npos);
}

TEST(MaskResponse, CutsLongTextOnACharacterAndKeepsBytesAsBase64) {
  const std::string long_text = std::string(10, 'x') + "\xc3\xa9" + std::string(100, 'y');
  const auto cut = mask_response(long_text, 11);  // 11 falls inside the two-byte é
  EXPECT_EQ(cut, std::string(10, 'x') + "…(truncated)");
  const std::string bytes("\xff\xfe\x00\x01", 4);
  const auto kept = mask_response(bytes, 4096);
  EXPECT_EQ(kept.rfind(std::string(binary_marker), 0), 0u) << kept;
}

TEST(MaskLocation, CredentialsInAQueryOrAHookPathAreMaskedAndTheRestKept) {
  const std::string secret = "SECRETabcdefghijklmnop";  // 22 characters
  // Parameters named like credentials, in any case and percent-encoded, and webhook key names.
  for (const std::string name :
       {"access_token", "Access_Token", "app%5Fsecret", "password", "key", "sign"}) {
    const auto url = "https://example.com/send?a=1&" + name + "=" + secret + "&b=2#frag";
    const auto masked = mask_location(url);
    EXPECT_EQ(masked.find("SECRET"), std::string::npos) << masked;
    EXPECT_EQ(masked, "https://example.com/send?a=1&" + name + "=SECR…(22 chars)&b=2#frag");
  }
  // Feishu's client_token is how operators reconcile a write: it stays, as does everything else.
  const std::string bitable =
      "https://open.feishu.cn/open-apis/bitable/v1/apps/A/tables/T/records/batch_create"
      "?client_token=fe599b60-450f-46ff-b2ef-9f6675625b97&user_id_type=open_id";
  EXPECT_EQ(mask_location(bitable), bitable);
  EXPECT_EQ(mask_location("not a url"), "not a url");
  EXPECT_EQ(mask_location("https://h/x?flag&token"), "https://h/x?flag&token");
  // A custom bot's token is the path segment after /hook/.
  EXPECT_EQ(mask_location("https://open.feishu.cn/open-apis/bot/v2/hook/" + secret),
            "https://open.feishu.cn/open-apis/bot/v2/hook/SECR…(22 chars)");

  // In a job as the admin API shows it: both locations; the alerts route shows only the host.
  auto job = json{{"route", "r"},
                  {"location", "https://h/x?token=" + secret},
                  {"request", {{"location", "https://h/x?token=" + secret}}}};
  mask_job_secrets(job, "alerts");
  EXPECT_EQ(job.dump().find("SECRET"), std::string::npos) << job.dump();
  job = json{{"route", "alerts"}, {"location", "https://hooks.example/" + secret}};
  mask_job_secrets(job, "alerts");
  EXPECT_EQ(job["location"], "https://hooks.example/…(23 chars)");
}

TEST(MaskJob, EveryHeaderNamedLikeACredentialIsShownMasked) {
  const std::string secret = "SECRETabcdefghijklmnop";
  json headers;
  for (const char* name : {"Authorization", "Cookie", "X-Api-Key", "Api-Key", "apikey",
                           "X-Goog-Api-Key", "Ocp-Apim-Subscription-Key", "X-Session-Id",
                           "X-Signature", "X-Auth", "X-Password", "X-Access-Token"})
    headers[name] = secret;
  headers["Idempotency-Key"] = "bill-42";
  headers["Content-Type"] = "application/json";
  auto job = json{{"route", "r"}, {"request", {{"headers", headers}}}};
  mask_job_secrets(job);
  EXPECT_EQ(job.dump().find("SECRET"), std::string::npos) << job.dump();
  EXPECT_EQ(job["request"]["headers"]["Idempotency-Key"], "bill-42");
  EXPECT_EQ(job["request"]["headers"]["Content-Type"], "application/json");
}
