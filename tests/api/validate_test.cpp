// Input checks of the HTTP layer, without a server.
#include <gtest/gtest.h>

#include <set>

#include "api/validate.hpp"

namespace gpumod::api {
namespace {

TEST(ValidName, AcceptsRealModelNames) {
  for (const char* name : {"qwen3-coder", "BAAI/bge-m3", "Qwen/Qwen3-Coder-30B-A3B-Instruct", "llama3.1:8b",
                           "user@host_model", "a"}) {
    EXPECT_TRUE(valid_name(name)) << name;
  }
}

TEST(ValidName, RejectsEmptyLongAndShellCharacters) {
  for (const char* name :
       {"", "a b", "x;rm -rf /", "$(id)", "`id`", "a|b", "a\nb", "a\"b", "a'b", "a&b", "\xc3\xa9"}) {
    EXPECT_FALSE(valid_name(name)) << name;
  }
  EXPECT_TRUE(valid_name(std::string(128, 'a')));
  EXPECT_FALSE(valid_name(std::string(129, 'a')));
}

TEST(ValidName, ProblemNamesWhatIsWrong) {
  EXPECT_EQ(name_problem("model", "ok"), "");
  EXPECT_NE(name_problem("model", "").find("model is empty"), std::string::npos);
  EXPECT_NE(name_problem("model", std::string(200, 'x')).find("at most 128"), std::string::npos);
  EXPECT_NE(name_problem("model", "a b").find("[A-Za-z0-9._:/@-]"), std::string::npos);
}

struct BadBody {
  const char* body;
  const char* message_part;
};

class ParseRequestBodyBad : public ::testing::TestWithParam<BadBody> {};

TEST_P(ParseRequestBodyBad, IsRejectedWithAnActionableMessage) {
  const auto& c = GetParam();
  auto r = parse_request_body(c.body);
  ASSERT_FALSE(r.ok()) << c.body;
  EXPECT_NE(r.error().find(c.message_part), std::string::npos)
      << "body: " << c.body << "\nmessage: " << r.error();
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseRequestBodyBad,
    ::testing::Values(BadBody{"", "body is empty"}, BadBody{"{", "not valid JSON"},
                      BadBody{"[1,2]", "must be a JSON object"}, BadBody{"\"qwen\"", "must be a JSON object"},
                      BadBody{"{}", "'model' is required"},
                      BadBody{R"({"model": 5})", "'model' must be a string"},
                      BadBody{R"({"model": ""})", "'model' is empty"},
                      BadBody{R"({"model": "a;b"})", "outside [A-Za-z0-9._:/@-]"},
                      BadBody{R"({"model": "m", "priority": "high"})", "'priority' must be an integer"},
                      BadBody{R"({"model": "m", "priority": 1.5})", "'priority' must be an integer"},
                      BadBody{R"({"model": "m", "priority": 101})", "from 0 to 100"},
                      BadBody{R"({"model": "m", "priority": -1})", "from 0 to 100"},
                      BadBody{R"({"model": "m", "timeout_s": "10"})", "'timeout_s' must be a number"},
                      BadBody{R"({"model": "m", "timeout_s": 0})", "'timeout_s' must be greater than 0"},
                      BadBody{R"({"model": "m", "timeout_s": 1e9})", "at most 86400"},
                      BadBody{R"({"model": "m", "keep_alive_s": -5})", "'keep_alive_s' must be between 0"},
                      BadBody{R"({"model": "m", "wait": "no"})", "'wait' must be true or false"},
                      BadBody{R"({"model": "m", "timout_s": 5})", "unknown field 'timout_s'"}));

TEST(ParseRequestBody, ReadsEveryField) {
  auto r = parse_request_body(R"({"model": "qwen3-coder", "priority": 80, "timeout_s": 1.5,
                                  "keep_alive_s": 600, "wait": false})");
  ASSERT_TRUE(r.ok()) << r.error();
  EXPECT_EQ(r->model, "qwen3-coder");
  EXPECT_EQ(r->priority, 80);
  EXPECT_EQ(r->timeout, std::chrono::milliseconds(1500));
  EXPECT_EQ(r->keep_alive, std::chrono::seconds(600));
  EXPECT_FALSE(r->wait);
}

TEST(ParseRequestBody, DefaultsWaitAndLeavesOptionalsUnset) {
  auto r = parse_request_body(R"({"model": "m"})");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->wait);
  EXPECT_FALSE(r->priority.has_value());
  EXPECT_FALSE(r->timeout.has_value());
  EXPECT_FALSE(r->keep_alive.has_value());
}

TEST(RequestId, ClientIdsAreReusedOnlyWhenSane) {
  EXPECT_TRUE(acceptable_request_id("trace-42.a:b_c"));
  EXPECT_FALSE(acceptable_request_id(""));
  EXPECT_FALSE(acceptable_request_id(std::string(65, 'a')));
  EXPECT_FALSE(acceptable_request_id("a b"));
  EXPECT_FALSE(acceptable_request_id("a\r\nX-Evil: 1"));
  EXPECT_FALSE(acceptable_request_id("a/b"));
}

TEST(RequestId, GeneratedIdsAreUniqueAndAcceptable) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) {
    auto id = generate_request_id();
    EXPECT_TRUE(acceptable_request_id(id)) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 1000U);
}

TEST(Tokens, CompareExactly) {
  EXPECT_TRUE(tokens_equal("s3cret", "s3cret"));
  EXPECT_FALSE(tokens_equal("s3cret", "s3cres"));
  EXPECT_FALSE(tokens_equal("s3cret", "s3cret2"));
  EXPECT_FALSE(tokens_equal("", ""));  // an empty token never authenticates
}

TEST(Tokens, BearerHeaderParsing) {
  EXPECT_EQ(bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(bearer_token("bearer abc "), "abc");
  EXPECT_FALSE(bearer_token("Basic abc").has_value());
  EXPECT_FALSE(bearer_token("Bearer ").has_value());
  EXPECT_FALSE(bearer_token("").has_value());
}

TEST(JsonBody, RefusesInvalidUtf8AndDeepNestingWithTheReason) {
  auto bad = parse_json_body(
      "{\"model\":\"a\xff"
      "b\"}");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("not valid UTF-8: byte 0xff at offset 11"), std::string::npos) << bad.error();
  const std::string deep = "{\"x\":" + std::string(200, '[') + std::string(200, ']') + "}";
  auto nested = parse_json_body(deep);
  ASSERT_FALSE(nested.ok());
  EXPECT_NE(nested.error().find("more than 128 levels"), std::string::npos) << nested.error();
  // Brackets inside strings are not nesting.
  const std::string in_string = "{\"x\":\"" + std::string(200, '[') + "\\\"\"}";
  EXPECT_TRUE(parse_json_body(in_string).ok()) << parse_json_body(in_string).error();
  EXPECT_TRUE(parse_json_body("{\"model\":\"caf\xc3\xa9\"}").ok());
  EXPECT_FALSE(parse_json_body("").ok());
  EXPECT_FALSE(parse_json_body("{\"a\":").ok());
}

}  // namespace
}  // namespace gpumod::api
