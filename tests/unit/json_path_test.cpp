#include "queue/json_path.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

using namespace resendd;
using nlohmann::json;

TEST(JsonPath, ParsesEveryStepKind) {
  std::string err;
  auto p = parse_json_path("$.params.records[*].fields['a b'][\"c\"][2].*", &err);
  ASSERT_TRUE(p) << err;
  ASSERT_EQ(p->steps.size(), 8u);
  EXPECT_EQ(std::get<std::string>(p->steps[0]), "params");
  EXPECT_TRUE(std::holds_alternative<json_path::wildcard>(p->steps[2]));
  EXPECT_EQ(std::get<std::string>(p->steps[4]), "a b");
  EXPECT_EQ(std::get<std::size_t>(p->steps[6]), 2u);
  EXPECT_TRUE(parse_json_path("$", &err));
}

TEST(JsonPath, RejectsBadPaths) {
  for (const char* bad : {"", "params", "$.", "$[", "$[x]", "$['open", "$..a", "$.a b", "$[1"}) {
    std::string err;
    EXPECT_FALSE(parse_json_path(bad, &err)) << bad;
    EXPECT_FALSE(err.empty());
  }
}

TEST(JsonPath, ReplacesStringsByTheirJson) {
  json doc = {
      {"params",
       {{"records",
         {{{"fields", R"({"金额": 12.5, "备注": "午饭"})"}}, {{"fields", R"({"n": [1, 2]})"}}}}}}};
  ASSERT_FALSE(apply_json_parse(doc, std::vector<std::string>{"$.params.records[*].fields"}));
  EXPECT_TRUE(doc["params"]["records"][0]["fields"].is_object());
  EXPECT_EQ(doc["params"]["records"][0]["fields"]["金额"], 12.5);
  EXPECT_EQ(doc["params"]["records"][1]["fields"]["n"][1], 2);
}

TEST(JsonPath, TargetsThatAreNotJsonStringsAreErrors) {
  json doc = {{"params", {{"a", "not json"}, {"b", 5}, {"c", "{\"x\":1}"}}}};
  json copy = doc;
  EXPECT_TRUE(apply_json_parse(copy, std::vector<std::string>{"$.params.a"}));
  copy = doc;
  EXPECT_TRUE(apply_json_parse(copy, std::vector<std::string>{"$.params.b"}));
  copy = doc;
  EXPECT_TRUE(apply_json_parse(copy, std::vector<std::string>{"$.params.missing"}));
  copy = doc;
  EXPECT_TRUE(apply_json_parse(copy, std::vector<std::string>{"$.params.c[0]"}));
  copy = doc;
  EXPECT_FALSE(apply_json_parse(copy, std::vector<std::string>{"$.params.c"}));
}

TEST(JsonPath, CheckingGivesTheAnswerApplyingGives) {
  // Intake only checks the last path's targets (json::accept, no tree); delivery replaces them.
  // The answers must be the same, errors word for word, for paths that walk into earlier ones.
  const json doc = {{"params",
                     {{"a", "not json"},
                      {"b", 5},
                      {"c", R"({"x": "{\"y\": 1}", "z": "[1,"})"},
                      {"d", R"({"deep": )" + std::string(80, '[') + "}"},
                      {"records", {{{"fields", R"({"n": 1})"}}, {{"fields", "{oops"}}}}}}};
  const std::vector<std::vector<std::string>> cases = {
      {"$.params.a"},
      {"$.params.b"},
      {"$.params.missing"},
      {"$.params.c"},
      {"$.params.c", "$.params.c.x"},
      {"$.params.c", "$.params.c.z"},
      {"$.params.c", "$.params.c.missing"},
      {"$.params.c.x"},
      {"$.params.d"},
      {"$.params.records[*].fields"},
      {"$.params.records[0].fields"},
      {"$.params.records[0].fields", "$.params.records[0].fields.n"},
      {"$.params.records[0].fields", "$.params.c"},
      {"$["},
  };
  int failures = 0;
  for (const auto& paths : cases) {
    json applied = doc, checked = doc;
    const auto a = apply_json_parse(applied, paths);
    const auto c = check_json_parse(checked, paths);
    EXPECT_EQ(a, c) << paths.back();
    failures += a.has_value();
  }
  EXPECT_EQ(failures, 10);  // the table holds both kinds
  json applied = doc, checked = doc;
  ASSERT_FALSE(check_json_parse(checked, {"$.params.c", "$.params.c.x"}));
  ASSERT_FALSE(apply_json_parse(applied, std::vector<std::string>{"$.params.c", "$.params.c.x"}));
  EXPECT_TRUE(checked["params"]["c"].is_object());  // the first path applied, the last only checked
  EXPECT_TRUE(checked["params"]["c"]["x"].is_string());
  EXPECT_TRUE(applied["params"]["c"]["x"].is_object());
}

TEST(JsonPath, WildcardOverEmptyArrayReachesNothing) {
  json doc = {{"params", {{"records", json::array()}}}};
  EXPECT_FALSE(apply_json_parse(doc, std::vector<std::string>{"$.params.records[*].fields"}));
}

TEST(JsonPath, DeepNestingIsRefusedWithoutRecursion) {
  std::string deep(100000, '[');
  EXPECT_FALSE(json_depth_within(deep));
  EXPECT_TRUE(json_depth_within(
      R"({"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["})"));
  json doc = {{"s", std::string(100, '[')}};
  EXPECT_TRUE(apply_json_parse(doc, std::vector<std::string>{"$.s"}));
}
