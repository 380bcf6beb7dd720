// End-to-end tests of chat input: the real kvserve binary renders a conversation with the model's
// chat template (the embedded tiny model's tokenizer_config.json, or --chat-template) and serves it.
// The expected prompt is worked out by hand from that template (tests/data/models/README.md), and
// the expected ids from the server's plain text tokenization of the pieces between the special
// tokens, which are <s> = 1 and </s> = 2 in the tiny model's vocabulary.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kvserve/v1/kvserve.grpc.pb.h"
#include "tests/e2e/server_process.h"
#include "tests/engine/model_files_test_util.h"

namespace kvserve {
namespace {

using namespace std::chrono_literals;
using testing::ServerProcess;
namespace fs = std::filesystem;

const fs::path kModels = fs::path(KVSERVE_TEST_DATA) / "models";

// A system message, two user turns and an assistant turn between them, with whitespace for the
// template's `| trim` to take off.
v1::Chat conversation() {
  v1::Chat chat;
  for (const auto& [role, content] :
       std::vector<std::pair<std::string, std::string>>{{"system", "You are terse."},
                                                        {"user", " Hi there! "},
                                                        {"assistant", "Hello. "},
                                                        {"user", "Tell me a story."}}) {
    v1::ChatMessage* m = chat.add_messages();
    m->set_role(role);
    m->set_content(content);
  }
  return chat;
}

// The tiny model's template applied by hand: the system prompt folded into the first user turn,
// each user turn "<s>[INST] ... [/INST]", each assistant turn " ... </s>".
const std::string kFirstTurn = "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there! [/INST] Hello. ";
const std::string kSecondTurn = "[INST] Tell me a story. [/INST]";
const std::string kPrompt = "<s>" + kFirstTurn + "</s><s>" + kSecondTurn;

std::unique_ptr<v1::Generation::Stub> stub(const ServerProcess& server) {
  return v1::Generation::NewStub(grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
}

struct Generated {
  grpc::Status status;
  std::vector<uint32_t> tokens;
  uint32_t prompt_tokens = 0;
};

Generated generate(v1::Generation::Stub& client, v1::GenerateRequest request) {
  request.mutable_stop()->set_max_tokens(12);
  request.mutable_stop()->set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 30s);
  auto reader = client.Generate(&ctx, request);
  Generated g;
  v1::GenerateResponse msg;
  while (reader->Read(&msg)) {
    g.tokens.insert(g.tokens.end(), msg.token_ids().begin(), msg.token_ids().end());
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) g.prompt_tokens = msg.usage().prompt_tokens();
  }
  g.status = reader->Finish();
  return g;
}

Generated generate_chat(v1::Generation::Stub& client, const v1::Chat& chat) {
  v1::GenerateRequest request;
  *request.mutable_chat() = chat;
  return generate(client, request);
}

grpc::Status tokenize(v1::Generation::Stub& client, const v1::TokenizeRequest& request,
                      v1::TokenizeResponse* response) {
  grpc::ClientContext ctx;
  return client.Tokenize(&ctx, request, response);
}

std::vector<uint32_t> tokenize_text(v1::Generation::Stub& client, const std::string& text) {
  v1::TokenizeRequest request;
  request.set_text(text);
  v1::TokenizeResponse response;
  EXPECT_TRUE(tokenize(client, request, &response).ok());
  return {response.token_ids().begin(), response.token_ids().end()};
}

bool has_chat_template(v1::Generation::Stub& client) {
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  EXPECT_TRUE(client.GetModelInfo(&ctx, {}, &info).ok());
  return info.chat_template();
}

// Tokenize(chat) gives the hand-made prompt and ids; Generate(chat) generates what those ids do.
void expect_chat_served_as_worked_out(v1::Generation::Stub& client) {
  v1::TokenizeRequest request;
  *request.mutable_chat() = conversation();
  v1::TokenizeResponse response;
  const grpc::Status s = tokenize(client, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.prompt(), kPrompt);
  std::vector<uint32_t> want{1};
  for (uint32_t id : tokenize_text(client, kFirstTurn))
    want.push_back(id);
  want.insert(want.end(), {2, 1});
  for (uint32_t id : tokenize_text(client, kSecondTurn))
    want.push_back(id);
  const std::vector<uint32_t> got(response.token_ids().begin(), response.token_ids().end());
  EXPECT_EQ(got, want);
  // Sent as text, the same characters are only characters: "<s>" is not BOS there.
  const std::vector<uint32_t> as_text = tokenize_text(client, kPrompt);
  EXPECT_EQ(std::count(as_text.begin(), as_text.end(), 1u), 0);
  EXPECT_NE(as_text, got);

  const Generated by_chat = generate_chat(client, conversation());
  ASSERT_TRUE(by_chat.status.ok()) << by_chat.status.error_message();
  v1::GenerateRequest by_ids_request;
  *by_ids_request.mutable_token_ids()->mutable_ids() = response.token_ids();
  const Generated by_ids = generate(client, by_ids_request);
  ASSERT_TRUE(by_ids.status.ok()) << by_ids.status.error_message();
  EXPECT_EQ(by_chat.tokens.size(), 12u);
  EXPECT_EQ(by_chat.tokens, by_ids.tokens);
  EXPECT_EQ(by_chat.prompt_tokens, want.size());
}

TEST(ChatE2E, TheEmbeddedModelRendersItsTemplateTokenizesItAndRefusesBadConversations) {
  ServerProcess server(std::vector<std::string>{});  // embedded:tiny-llama and its tokenizer_config.json
  EXPECT_NE(server.output().find("chat input on, template from embedded:tiny-llama/tokenizer_config.json"),
            std::string::npos)
      << server.output();
  auto client = stub(server);
  EXPECT_TRUE(has_chat_template(*client));
  expect_chat_served_as_worked_out(*client);

  struct Case {
    std::string name;
    v1::Chat chat;
    std::string message;  // a part of the error message
  };
  std::vector<Case> cases;
  cases.push_back({"no messages", v1::Chat(), "chat.messages: empty"});
  v1::Chat no_role = conversation();
  no_role.mutable_messages(1)->clear_role();
  cases.push_back({"empty role", no_role, "chat.messages[1].role"});
  v1::Chat two_users;
  for (int i = 0; i < 2; ++i) {
    two_users.add_messages()->set_role("user");
    two_users.mutable_messages(i)->set_content("hi");
  }
  cases.push_back({"roles that do not alternate", two_users,
                   "chat template refused the conversation: Conversation roles must alternate "
                   "user/assistant/user/assistant/..."});
  v1::Chat system_only;
  system_only.add_messages()->set_role("system");
  cases.push_back({"a prompt the template leaves empty", system_only, "empty prompt"});
  v1::Chat continue_and_open = conversation();
  continue_and_open.set_continue_final_message(true);
  continue_and_open.set_add_generation_prompt(true);
  cases.push_back({"continue the final message and open a new turn", continue_and_open,
                   "continue_final_message and add_generation_prompt exclude each other"});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Generated g = generate_chat(*client, c.chat);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << g.status.error_message();
    EXPECT_NE(g.status.error_message().find(c.message), std::string::npos) << g.status.error_message();
    EXPECT_TRUE(g.tokens.empty());
    v1::TokenizeRequest request;
    *request.mutable_chat() = c.chat;
    v1::TokenizeResponse response;
    const grpc::Status t = tokenize(*client, request, &response);
    EXPECT_EQ(t.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << t.error_message();
    EXPECT_NE(t.error_message().find(c.message), std::string::npos) << t.error_message();
  }
  v1::TokenizeRequest both;
  both.set_text("hello");
  *both.mutable_chat() = conversation();
  v1::TokenizeResponse response;
  const grpc::Status t = tokenize(*client, both, &response);
  EXPECT_EQ(t.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(t.error_message().find("text: must be empty when chat is set"), std::string::npos)
      << t.error_message();
  // Everyone else is still served.
  EXPECT_TRUE(generate_chat(*client, conversation()).status.ok());
}

// A client's begun answer ("prefill"): the prompt stops inside the assistant's turn, after its
// content (the template's trimming of trailing space undone as transformers does), so that the
// model goes on with it; add_generation_prompt defaults to false then.
TEST(ChatE2E, ContinueFinalMessageEndsThePromptInsideTheAnswer) {
  ServerProcess server(std::vector<std::string>{});
  auto client = stub(server);
  v1::Chat chat = conversation();
  v1::ChatMessage* answer = chat.add_messages();
  answer->set_role("assistant");
  answer->set_content("Once upon a ");
  chat.set_continue_final_message(true);
  v1::TokenizeRequest request;
  *request.mutable_chat() = chat;
  v1::TokenizeResponse response;
  const grpc::Status s = tokenize(*client, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // The template writes " Once upon a </s>" (content trimmed, then a space): the cut keeps
  // "Once upon a " and drops the end of turn.
  EXPECT_EQ(response.prompt(), kPrompt + " Once upon a ");
  const Generated by_chat = generate_chat(*client, chat);
  ASSERT_TRUE(by_chat.status.ok()) << by_chat.status.error_message();
  v1::GenerateRequest by_ids;
  *by_ids.mutable_token_ids()->mutable_ids() = response.token_ids();
  EXPECT_EQ(by_chat.tokens, generate(*client, by_ids).tokens);
}

std::string tiny_llama_template() {
  std::ifstream in(kModels / "tiny-llama" / "tokenizer_config.json");
  return nlohmann::json::parse(in).at("chat_template").get<std::string>();
}

// tiny-llama3-gqa ships no template: chat is refused with FAILED_PRECONDITION naming the way on,
// and --chat-template gives it one, whose bos_token / eos_token then come from the vocabulary.
TEST(ChatE2E, AModelWithoutATemplateRefusesChatUntilTheOperatorGivesItOne) {
  const fs::path model = kModels / "tiny-llama3-gqa";
  ASSERT_FALSE(fs::exists(model / "tokenizer_config.json"));
  ASSERT_FALSE(fs::exists(model / "chat_template.jinja"));
  {
    ServerProcess server({"--model", model.string()});
    auto client = stub(server);
    EXPECT_FALSE(has_chat_template(*client));
    const Generated g = generate_chat(*client, conversation());
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << g.status.error_message();
    EXPECT_NE(g.status.error_message().find("this model has no chat template; start kvserve with "
                                            "--chat-template FILE, or send text"),
              std::string::npos)
        << g.status.error_message();
    v1::TokenizeRequest request;
    *request.mutable_chat() = conversation();
    v1::TokenizeResponse response;
    EXPECT_EQ(tokenize(*client, request, &response).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
  model_test::TempDir dir;
  std::ofstream(dir / "llama2.jinja") << tiny_llama_template();
  ServerProcess server({"--model", model.string(), "--chat-template", (dir / "llama2.jinja").string()});
  auto client = stub(server);
  EXPECT_TRUE(has_chat_template(*client));
  expect_chat_served_as_worked_out(*client);
}

// Tool calling over the wire: tools_json, and tool_calls / name / a null content as a message's
// extra_json, through --chat-template with the committed tool-calling template, give the prompt
// Python's jinja2 rendered for the same conversation (tests/data/chat_templates/cases.json).
TEST(ChatE2E, ToolsAndMessageFieldsRenderAsJinja2RendersThem) {
  const fs::path templates = fs::path(KVSERVE_TEST_DATA) / "chat_templates";
  ServerProcess server({"--model", (kModels / "tiny-llama3-gqa").string(), "--chat-template",
                        (templates / "tools.jinja").string()});
  auto client = stub(server);
  std::ifstream in(templates / "cases.json");
  const auto fixture = nlohmann::ordered_json::parse(in);
  int checked = 0;
  for (const auto& c : fixture["cases"]) {
    if (c.value("template_file", "") != "tools.jinja" || !c.contains("output") ||
        !c["context"].contains("tools"))
      continue;
    const auto& ctx = c["context"];
    SCOPED_TRACE(c["name"].get<std::string>());
    v1::TokenizeRequest request;
    v1::Chat* chat = request.mutable_chat();
    bool representable = true;
    for (const auto& m : ctx["messages"]) {
      v1::ChatMessage* message = chat->add_messages();
      message->set_role(m["role"].get<std::string>());
      nlohmann::ordered_json extra = nlohmann::ordered_json::object();
      for (const auto& [key, value] : m.items()) {
        if (key == "role") continue;
        if (key == "content" && value.is_string())
          message->set_content(value.get<std::string>());
        else
          extra[key] = value;
      }
      representable = representable && m.contains("content");
      if (!extra.empty()) message->set_extra_json(extra.dump());
    }
    if (!representable) continue;
    chat->set_add_generation_prompt(ctx["add_generation_prompt"].get<bool>());
    chat->set_tools_json(ctx["tools"].dump());
    v1::TokenizeResponse response;
    const grpc::Status s = tokenize(*client, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.prompt(), c["output"].get<std::string>());
    EXPECT_FALSE(response.token_ids().empty());
    if (++checked == 4) break;
  }
  EXPECT_EQ(checked, 4);

  v1::TokenizeRequest bad;
  *bad.mutable_chat() = conversation();
  bad.mutable_chat()->set_tools_json("{\"not\": \"a list\"}");
  v1::TokenizeResponse response;
  grpc::Status s = tokenize(*client, bad, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("chat.tools_json"), std::string::npos) << s.error_message();
  bad.mutable_chat()->clear_tools_json();
  bad.mutable_chat()->mutable_messages(0)->set_extra_json("[");
  s = tokenize(*client, bad, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("chat.messages[0].extra_json"), std::string::npos) << s.error_message();
}

// Exit status and output of kvserve run with `args`, for runs that must stop at start-up.
std::pair<int, std::string> run_kvserve(const std::string& args) {
  // `timeout`: a kvserve that wrongly starts serving must not hang the test.
  const std::string command =
      "timeout 60 " + std::string(KVSERVE_BINARY) + " --port 0 --metrics-port -1 " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed");
  std::string output;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;)
    output.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

TEST(ChatE2E, AChatTemplateFlagThatDoesNotLoadStopsStartUpNamingTheFile) {
  model_test::TempDir dir;
  const fs::path broken = dir / "broken.jinja";
  std::ofstream(broken) << "{% for message in messages %}{{ message['content'] }}";  // no endfor
  const fs::path missing = dir / "missing.jinja";
  const std::string model = " --model " + (kModels / "tiny-llama3-gqa").string();
  for (const fs::path& file : {broken, missing}) {
    SCOPED_TRACE(file.string());
    const auto [code, output] = run_kvserve(model + " --chat-template " + file.string());
    EXPECT_NE(code, 0) << output;
    EXPECT_NE(output.find(file.string()), std::string::npos) << output;
    EXPECT_EQ(output.find("serving kvserve.v1.Generation"), std::string::npos) << output;
  }
  const auto [code, output] = run_kvserve(model + " --skip-tokenizer --chat-template " + broken.string());
  EXPECT_NE(code, 0) << output;
  EXPECT_NE(output.find("--chat-template needs a tokenizer"), std::string::npos) << output;
}

// A template in the model's own files that does not parse turns chat off with a warning that says
// why; the model still serves text.
TEST(ChatE2E, ABrokenTemplateInTheModelDirectoryTurnsChatOffAndTextStillWorks) {
  model_test::TempDir dir;
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.model"})
    fs::copy_file(kModels / "tiny-llama" / file, dir / file);
  std::ofstream(dir / "tokenizer_config.json")
      << nlohmann::json{{"bos_token", "<s>"}, {"chat_template", "{% if messages %}unclosed"}}.dump();
  ServerProcess server({"--model", dir.path().string()});
  EXPECT_NE(server.output().find("chat input is off"), std::string::npos) << server.output();
  EXPECT_NE(server.output().find("tokenizer_config.json"), std::string::npos) << server.output();
  auto client = stub(server);
  EXPECT_FALSE(has_chat_template(*client));
  EXPECT_EQ(generate_chat(*client, conversation()).status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  v1::GenerateRequest text;
  text.set_text("Once upon a time");
  EXPECT_TRUE(generate(*client, text).status.ok());
}

}  // namespace
}  // namespace kvserve
