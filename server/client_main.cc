// kvserve-client: sends one prompt to a kvserve server and streams the text back as it arrives,
// the quickest way to see the server work (scripts/run.sh uses it for its demo request). With
// --chat the prompt is one user message, rendered by the server's chat template. With --n above 1
// the choices arrive interleaved, so each is printed whole once the call ends. --regex,
// --json-schema (a file) and --choice ask for structured output. --embed prints the prompt's
// embedding (the Embed RPC) instead, one line of values.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"

int main(int argc, char** argv) {
  CLI::App app{"kvserve-client: stream one generation from a kvserve server"};
  std::string target = "127.0.0.1:50051", prompt, system, lora_adapter;
  bool chat = false;
  int max_tokens = 64;
  unsigned n = 1;
  float temperature = 0.0f;
  uint64_t seed = 0;
  bool has_seed = false;
  std::vector<std::string> stops, choices;
  std::string regex, json_schema_file;
  double timeout_s = 60, wait_ready_s = 0;
  bool embed = false;
  unsigned dimensions = 0;
  app.add_option("prompt", prompt, "the prompt text (with --chat, the user's message)")->required();
  auto* chat_flag = app.add_flag("--chat", chat,
                                 "send the prompt as a chat: one user message, in the model's chat template");
  app.add_flag("--embed", embed,
               "print the prompt's embedding (the final hidden state at its last token, unit length) on one "
               "line instead of generating")
      ->excludes(chat_flag);
  app.add_option("--dimensions", dimensions, "with --embed: keep the first this many values (0 = all)");
  app.add_option("--system", system, "with --chat: a system message before the user's")->needs("--chat");
  app.add_option("--target", target, "server address host:port")->capture_default_str();
  app.add_option("--lora-adapter", lora_adapter,
                 "a LoRA adapter the server serves (--lora-modules), by name; default: the base model");
  app.add_option("--max-tokens", max_tokens, "tokens to generate at most")->capture_default_str();
  app.add_option("--temperature", temperature, "0 = greedy")->capture_default_str();
  app.add_option("--n", n, "choices to generate from the prompt (each printed whole at the end)")
      ->check(CLI::Range(1u, 128u))
      ->capture_default_str();
  app.add_option("--seed", seed, "sampling seed")->each([&](const std::string&) { has_seed = true; });
  app.add_option("--stop", stops, "stop string (repeatable)");
  auto* format_regex =
      app.add_option("--regex", regex, "structured output: the whole output matches this regex");
  auto* format_schema = app.add_option("--json-schema", json_schema_file,
                                       "structured output: a JSON schema file the output is an instance of")
                            ->check(CLI::ExistingFile);
  auto* format_choice = app.add_option("--choice", choices,
                                       "structured output: the output is one of these strings (repeatable)");
  format_regex->excludes(format_schema)->excludes(format_choice);
  format_schema->excludes(format_choice);
  app.add_option("--timeout", timeout_s, "seconds before the request is abandoned")->capture_default_str();
  app.add_option("--wait-ready", wait_ready_s, "seconds to wait for the server to come up")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  if (wait_ready_s > 0 &&
      !channel->WaitForConnected(std::chrono::system_clock::now() +
                                 std::chrono::milliseconds(static_cast<int64_t>(wait_ready_s * 1000)))) {
    std::fprintf(stderr, "kvserve-client: no server at %s after %.0f s\n", target.c_str(), wait_ready_s);
    return 2;
  }
  auto stub = kvserve::v1::Generation::NewStub(channel);
  const auto deadline = [&] {
    return std::chrono::system_clock::now() +
           std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  };
  if (embed) {
    kvserve::v1::EmbedRequest request;
    request.add_inputs()->set_text(prompt);
    request.set_dimensions(dimensions);
    request.set_lora_adapter(lora_adapter);
    kvserve::v1::EmbedResponse response;
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline());
    const auto start = std::chrono::steady_clock::now();
    if (const grpc::Status status = stub->Embed(&ctx, request, &response); !status.ok()) {
      std::fprintf(stderr, "kvserve-client: %s: %s\n", target.c_str(), status.error_message().c_str());
      return 1;
    }
    const auto& values = response.embeddings(0).values();
    for (int i = 0; i < values.size(); ++i)
      std::printf(i == 0 ? "%.9g" : " %.9g", values[i]);  // 9 digits: each float exactly
    std::printf("\n");
    std::fprintf(stderr,
                 "[%s: embedding of %d values, prompt_tokens=%u cached_prompt_tokens=%u total=%.1fms]\n",
                 response.request_id().c_str(), values.size(), response.embeddings(0).prompt_tokens(),
                 response.embeddings(0).cached_prompt_tokens(),
                 std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    return 0;
  }
  kvserve::v1::GenerateRequest request;
  if (chat) {
    kvserve::v1::Chat* conversation = request.mutable_chat();
    if (!system.empty()) {
      kvserve::v1::ChatMessage* m = conversation->add_messages();
      m->set_role("system");
      m->set_content(system);
    }
    kvserve::v1::ChatMessage* m = conversation->add_messages();
    m->set_role("user");
    m->set_content(prompt);
  } else {
    request.set_text(prompt);
  }
  request.mutable_stop()->set_max_tokens(static_cast<uint32_t>(max_tokens));
  request.set_lora_adapter(lora_adapter);
  for (const std::string& s : stops)
    request.mutable_stop()->add_stop(s);
  request.mutable_sampling()->set_temperature(temperature);
  if (has_seed) request.mutable_sampling()->set_seed(seed);
  request.set_n(n);
  if (!regex.empty()) request.mutable_response_format()->set_regex(regex);
  if (!json_schema_file.empty()) {
    std::ifstream in(json_schema_file);
    std::ostringstream text;
    text << in.rdbuf();
    request.mutable_response_format()->set_json_schema(text.str());
  }
  for (const std::string& c : choices)
    request.mutable_response_format()->mutable_choice()->add_values(c);

  grpc::ClientContext ctx;
  ctx.set_deadline(deadline());
  const auto start = std::chrono::steady_clock::now();
  double ttft_ms = -1;
  auto reader = stub->Generate(&ctx, request);
  kvserve::v1::GenerateResponse msg;
  std::vector<kvserve::v1::GenerateResponse> last(n);  // each choice's final message
  std::vector<std::string> texts(n);
  const std::string echo = chat ? "" : prompt;  // a chat's answer stands on its own
  if (n == 1) std::printf("%s", echo.c_str());
  while (reader->Read(&msg)) {
    if (ttft_ms < 0)
      ttft_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (msg.index() >= n) continue;  // not from a kvserve that honours n
    if (n == 1) {
      std::printf("%s", msg.text().c_str());
      std::fflush(stdout);
    }
    texts[msg.index()] += msg.text();
    if (msg.finish_reason() != kvserve::v1::FINISH_REASON_UNSPECIFIED) last[msg.index()] = msg;
  }
  if (n == 1) std::printf("\n");
  const grpc::Status status = reader->Finish();
  if (n > 1)
    for (unsigned i = 0; i < n; ++i)
      std::printf("--- choice %u ---\n%s%s\n", i, echo.c_str(), texts[i].c_str());
  if (!status.ok()) {
    std::fprintf(stderr, "kvserve-client: %s: %s\n", target.c_str(), status.error_message().c_str());
    return 1;
  }
  const double total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  for (unsigned i = 0; i < n; ++i) {
    const kvserve::v1::GenerateResponse& end = last[i];
    std::fprintf(stderr,
                 "[%s%s: finish=%s prompt_tokens=%u completion_tokens=%u cached_prompt_tokens=%u ttft=%.1fms "
                 "total=%.1fms]\n",
                 end.request_id().c_str(), n > 1 ? ("/" + std::to_string(i)).c_str() : "",
                 kvserve::v1::FinishReason_Name(end.finish_reason()).c_str(), end.usage().prompt_tokens(),
                 end.usage().completion_tokens(), end.usage().cached_prompt_tokens(), ttft_ms, total_ms);
  }
  return 0;
}
