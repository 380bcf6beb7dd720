// kvserve-client: sends one prompt to a kvserve server and streams the text back as it arrives,
// the quickest way to see the server work (scripts/run.sh uses it for its demo request). With
// --chat the prompt is one user message, rendered by the server's chat template.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "kvserve/v1/kvserve.grpc.pb.h"

int main(int argc, char** argv) {
  CLI::App app{"kvserve-client: stream one generation from a kvserve server"};
  std::string target = "127.0.0.1:50051", prompt, system;
  bool chat = false;
  int max_tokens = 64;
  float temperature = 0.0f;
  uint64_t seed = 0;
  bool has_seed = false;
  std::vector<std::string> stops;
  double timeout_s = 60, wait_ready_s = 0;
  app.add_option("prompt", prompt, "the prompt text (with --chat, the user's message)")->required();
  app.add_flag("--chat", chat, "send the prompt as a chat: one user message, in the model's chat template");
  app.add_option("--system", system, "with --chat: a system message before the user's")->needs("--chat");
  app.add_option("--target", target, "server address host:port")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "tokens to generate at most")->capture_default_str();
  app.add_option("--temperature", temperature, "0 = greedy")->capture_default_str();
  app.add_option("--seed", seed, "sampling seed")->each([&](const std::string&) { has_seed = true; });
  app.add_option("--stop", stops, "stop string (repeatable)");
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
  for (const std::string& s : stops)
    request.mutable_stop()->add_stop(s);
  request.mutable_sampling()->set_temperature(temperature);
  if (has_seed) request.mutable_sampling()->set_seed(seed);

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  const auto start = std::chrono::steady_clock::now();
  double ttft_ms = -1;
  auto reader = stub->Generate(&ctx, request);
  kvserve::v1::GenerateResponse msg, last;
  if (!chat) std::printf("%s", prompt.c_str());  // a chat's answer stands on its own
  while (reader->Read(&msg)) {
    if (ttft_ms < 0)
      ttft_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s", msg.text().c_str());
    std::fflush(stdout);
    if (msg.finish_reason() != kvserve::v1::FINISH_REASON_UNSPECIFIED) last = msg;
  }
  std::printf("\n");
  const grpc::Status status = reader->Finish();
  if (!status.ok()) {
    std::fprintf(stderr, "kvserve-client: %s: %s\n", target.c_str(), status.error_message().c_str());
    return 1;
  }
  const double total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr,
               "[%s: finish=%s prompt_tokens=%u completion_tokens=%u cached_prompt_tokens=%u ttft=%.1fms "
               "total=%.1fms]\n",
               last.request_id().c_str(), kvserve::v1::FinishReason_Name(last.finish_reason()).c_str(),
               last.usage().prompt_tokens(), last.usage().completion_tokens(),
               last.usage().cached_prompt_tokens(), ttft_ms, total_ms);
  return 0;
}
