// End-to-end tests of GenerateRequest.response_format on the real server: sampled at temperature 1
// from a random-weight model (which left alone writes gibberish), every choice must still come out
// as an allowed text: matching the regex (checked by std::regex, an independent engine), parsing
// as an instance of the JSON schema, or equal to one of the listed strings. Bad formats are
// refused with INVALID_ARGUMENT naming what to change, and the server serves on.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/generation_client.h"
#include "tests/e2e/server_process.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;
using testing::ServerProcess;
using testing::stub;
using testing::wait_all_blocks_free;

const std::string kModel = std::string(KVSERVE_TEST_DATA) + "/models/tiny-llama";

using Call = testing::ReceivedCall;
using testing::generate;

v1::GenerateRequest sampled(uint32_t n, uint32_t max_tokens) {
  v1::GenerateRequest r;
  r.set_text("Reply:");
  r.set_n(n);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_seed(77);
  r.mutable_stop()->set_max_tokens(max_tokens);
  return r;
}

class StructuredOutputE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServerProcess({"--model", kModel}); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static ServerProcess* server_;
};
ServerProcess* StructuredOutputE2E::server_ = nullptr;

TEST_F(StructuredOutputE2E, EverySampledChoiceMatchesTheRegex) {
  auto client = stub(*server_);
  // At most 3 + 1 + 6 characters: once they are out, EOS is the only token allowed, so every
  // choice ends with STOP well within max_tokens.
  const std::string pattern = "[0-9]{3}-[a-z]{2,6}";
  v1::GenerateRequest request = sampled(8, 40);
  request.mutable_response_format()->set_regex(pattern);
  const Call call = generate(*client, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  ASSERT_EQ(call.choices.size(), 8u);
  std::set<std::string> distinct;
  for (const auto& [i, out] : call.choices) {
    EXPECT_EQ(out.finish, v1::FINISH_REASON_STOP) << "choice " << i << ": '" << out.text << "'";
    EXPECT_TRUE(std::regex_match(out.text, std::regex(pattern)))
        << "choice " << i << ": '" << out.text << "'";
    distinct.insert(out.text);
  }
  EXPECT_GT(distinct.size(), 1u) << "eight draws at temperature 1 were all equal";
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

TEST_F(StructuredOutputE2E, EverySampledChoiceIsAnInstanceOfTheJsonSchema) {
  auto client = stub(*server_);
  const nlohmann::json schema = nlohmann::json::parse(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "minLength": 1, "maxLength": 8},
      "age": {"type": "integer"},
      "admin": {"type": "boolean"},
      "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3},
      "note": {"type": ["string", "null"], "maxLength": 5}
    },
    "required": ["name", "age", "tags"]
  })");
  v1::GenerateRequest request = sampled(6, 200);
  request.mutable_response_format()->set_json_schema(schema.dump());
  const Call call = generate(*client, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  ASSERT_EQ(call.choices.size(), 6u);
  for (const auto& [i, out] : call.choices) {
    SCOPED_TRACE("choice " + std::to_string(i) + ": '" + out.text + "'");
    ASSERT_EQ(out.finish, v1::FINISH_REASON_STOP);
    const nlohmann::json j = nlohmann::json::parse(out.text);  // throws (fails the test) if not JSON
    ASSERT_TRUE(j.is_object());
    EXPECT_TRUE(j.at("name").is_string());
    EXPECT_GE(j.at("name").get<std::string>().size(), 1u);
    EXPECT_TRUE(j.at("age").is_number_integer());
    ASSERT_TRUE(j.at("tags").is_array());
    EXPECT_LE(j.at("tags").size(), 3u);
    for (const auto& t : j.at("tags"))
      EXPECT_TRUE(t == "a" || t == "b" || t == "c");
    if (j.contains("admin")) {
      EXPECT_TRUE(j.at("admin").is_boolean());
    }
    if (j.contains("note")) {
      EXPECT_TRUE(j.at("note").is_null() || j.at("note").is_string());
    }
    for (const auto& [key, value] : j.items())
      EXPECT_TRUE(schema.at("properties").contains(key)) << "property '" << key << "' is not in the schema";
  }
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

TEST_F(StructuredOutputE2E, EveryChoiceIsOneOfTheListedStrings) {
  auto client = stub(*server_);
  const std::set<std::string> colours = {"red", "green", "blue", "light blue"};
  v1::GenerateRequest request = sampled(8, 16);
  for (const std::string& c : colours)
    request.mutable_response_format()->mutable_choice()->add_values(c);
  const Call call = generate(*client, request);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  for (const auto& [i, out] : call.choices) {
    EXPECT_EQ(out.finish, v1::FINISH_REASON_STOP);
    EXPECT_TRUE(colours.contains(out.text)) << "choice " << i << ": '" << out.text << "'";
  }
}

TEST_F(StructuredOutputE2E, BadFormatsAreRefusedWithWhatToChangeAndTheServerServesOn) {
  auto client = stub(*server_);
  const auto refused = [&](const v1::GenerateRequest& request, const std::string& says) {
    const Call call = generate(*client, request);
    EXPECT_EQ(call.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << says;
    EXPECT_NE(call.status.error_message().find(says), std::string::npos) << call.status.error_message();
    EXPECT_TRUE(call.choices.empty());
  };
  v1::GenerateRequest r = sampled(1, 8);
  r.mutable_response_format()->set_regex("(ab");
  refused(r, "regex");
  r.mutable_response_format()->set_regex("a(?=b)");
  refused(r, "lookahead");
  r.mutable_response_format()->set_json_schema(R"({"type": "integer", "minimum": 3})");
  refused(r, "minimum");
  r.mutable_response_format()->set_json_schema("{not json");
  refused(r, "not valid JSON");
  r.mutable_response_format()->set_json_schema(R"({"type": "integer", "default": 1e999})");  // out of range
  refused(r, "not valid JSON");
  r.mutable_response_format()->mutable_choice();  // an empty list
  refused(r, "response_format.choice is empty");
  r.mutable_response_format()->Clear();
  refused(r, "set one of regex, json_schema or choice");
  r.mutable_response_format()->set_regex("[a-z]+");
  r.mutable_stop()->set_ignore_eos(true);
  refused(r, "stop.ignore_eos");

  v1::GenerateRequest ok = sampled(2, 8);
  ok.mutable_response_format()->set_regex("(yes|no)");
  const Call call = generate(*client, ok);
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  for (const auto& [i, out] : call.choices)
    EXPECT_TRUE(out.text == "yes" || out.text == "no") << out.text;
  EXPECT_TRUE(wait_all_blocks_free(*client));
}

}  // namespace
}  // namespace kvserve
