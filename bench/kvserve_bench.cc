// kvserve-bench: load generator for a kvserve.v1 Generation server, or for an OpenAI-compatible API.
//
//   kvserve-bench --requests 2000 --concurrency 64 --output-len 16          closed loop
//   kvserve-bench --duration 30 --rate 50 --prompt-len uniform:64:512      open loop, Poisson arrivals
//   kvserve-bench --api openai --target 127.0.0.1:8000 --vocab 32000 ...   the same over HTTP
//
// Exit status: 0 when at least one request completed, 1 when none did, 2 when the target cannot be
// reached or set-up fails; bad flags exit as CLI11 does (non-zero, with the reason).
#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_driver.h"
#include "bench/bench_options.h"
#include "bench/bench_report.h"
#include "bench/bench_workload.h"
#include "bench/openai_call.h"
#include "kvserve/v1/kvserve.grpc.pb.h"

namespace {

using kvserve::bench::BenchOptions;

std::chrono::system_clock::time_point seconds_from_now(double seconds) {
  return std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                std::chrono::duration<double>(seconds));
}

std::vector<std::shared_ptr<grpc::Channel>> connect(const BenchOptions& options) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (uint32_t i = 0; i < options.channels; ++i) {
    grpc::ChannelArguments arguments;
    // Without a channel-local subchannel pool, channels to one target share a single TCP connection.
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    arguments.SetMaxReceiveMessageSize(-1);
    channels.push_back(
        grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), arguments));
  }
  for (const auto& channel : channels) {
    if (!channel->WaitForConnected(seconds_from_now(options.connect_timeout_s))) {
      std::fprintf(
          stderr,
          "kvserve-bench: error: cannot reach %s: no connection within %.1f s (is the server running "
          "and listening there? see --target, --connect-timeout)\n",
          options.target.c_str(), options.connect_timeout_s);
      return {};
    }
  }
  return channels;
}

// The server's own description, also the default --vocab. Null when the server does not answer it.
nlohmann::ordered_json ask_model_info(const std::shared_ptr<grpc::Channel>& channel,
                                      const BenchOptions& options, std::string& error) {
  auto stub = kvserve::v1::Generation::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(seconds_from_now(options.connect_timeout_s));
  kvserve::v1::ModelInfo info;
  const grpc::Status status = stub->GetModelInfo(&context, kvserve::v1::GetModelInfoRequest(), &info);
  if (!status.ok()) {
    error =
        std::string(kvserve::bench::status_code_name(status.error_code())) + ": " + status.error_message();
    return nullptr;
  }
  return {{"model", info.model()},           {"architecture", info.architecture()},
          {"vocab_size", info.vocab_size()}, {"backend", info.backend()},
          {"device", info.device()},         {"max_num_seqs", info.max_num_seqs()}};
}

// host:port (an http:// in front is allowed) split for the HTTP client; false when it is not that.
bool split_target(std::string target, std::string& host, int& port) {
  if (target.starts_with("http://")) target.erase(0, 7);
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = target.substr(0, colon);
  try {
    size_t used = 0;
    port = std::stoi(target.substr(colon + 1), &used);
    return used == target.size() - colon - 1 && port > 0 && port < 65536;
  } catch (const std::exception&) {
    return false;
  }
}

// The OpenAI-compatible server's GET /v1/models: the first model's id (and max_model_len where the
// server says it). Null, with `error` set, when it does not answer.
nlohmann::ordered_json ask_openai_models(const std::string& host, int port, const BenchOptions& options,
                                         std::string& error) {
  httplib::Client client(host, port);
  const auto timeout = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::duration<double>(options.connect_timeout_s));
  client.set_connection_timeout(timeout.count() / 1000000, timeout.count() % 1000000);
  client.set_read_timeout(timeout.count() / 1000000, timeout.count() % 1000000);
  const httplib::Result res = client.Get("/v1/models");
  if (!res) {
    error = httplib::to_string(res.error());
    return nullptr;
  }
  const auto models = nlohmann::json::parse(res->body, nullptr, /*allow_exceptions=*/false);
  if (res->status != 200 || !models.is_object() || !models.contains("data") || !models["data"].is_array() ||
      models["data"].empty() || !models["data"][0].is_object() || !models["data"][0].contains("id")) {
    error = "HTTP " + std::to_string(res->status) + ": " + res->body.substr(0, 200);
    return nullptr;
  }
  const auto& first = models["data"][0];
  nlohmann::ordered_json server = {{"model", first["id"]}, {"backend", "?"}};
  if (first.contains("max_model_len")) server["max_model_len"] = first["max_model_len"];
  return server;
}

// Runs the warm-up and measured phases and reports them; the process's exit status.
int run(BenchOptions& options, kvserve::bench::CallStarter& calls, const nlohmann::ordered_json& server) {
  const kvserve::bench::Workload workload(options);
  kvserve::bench::LoadDriver driver(options, workload, calls);

  if (options.warmup > 0) {
    const auto warmup = driver.run_phase(0, options.warmup, 0);
    std::fprintf(stderr, "kvserve-bench: warmup: %llu of %llu requests completed\n",
                 static_cast<unsigned long long>(warmup.completed),
                 static_cast<unsigned long long>(warmup.sent));
  }
  // Measured requests continue the index sequence: none repeats a warm-up prompt the server may have cached.
  const auto results = driver.run_phase(options.warmup, options.requests, options.duration_s);

  const nlohmann::ordered_json report = kvserve::bench::make_report(options, results, server);
  std::fputs(kvserve::bench::format_table(report).c_str(), stdout);
  std::fflush(stdout);
  if (!options.json_path.empty()) {
    std::ofstream file(options.json_path);
    file << report.dump(2) << '\n';
    if (!file) {
      std::fprintf(stderr, "kvserve-bench: error: cannot write %s\n", options.json_path.c_str());
      return 2;
    }
  }
  if (results.completed == 0) {
    std::fprintf(stderr, "kvserve-bench: error: none of %llu requests completed%s\n",
                 static_cast<unsigned long long>(results.sent),
                 results.errors_by_code.empty() ? "" : " (errors above)");
    return 1;
  }
  return 0;
}

int run_openai(BenchOptions& options) {
  std::string host;
  int port = 0;
  if (!split_target(options.target, host, port)) {
    std::fprintf(stderr, "kvserve-bench: error: --target %s is not host:port\n", options.target.c_str());
    return 2;
  }
  std::string error;
  const nlohmann::ordered_json server = ask_openai_models(host, port, options, error);
  if (server.is_null()) {
    std::fprintf(stderr,
                 "kvserve-bench: error: GET http://%s/v1/models failed (%s): is an OpenAI-compatible API "
                 "served there? (kvserve: --openai-port)\n",
                 options.target.c_str(), error.c_str());
    return 2;
  }
  if (options.model_name.empty()) options.model_name = server["model"].get<std::string>();
  kvserve::bench::OpenAiCallStarter calls(host, port, options.model_name, options.connect_timeout_s);
  return run(options, calls, server);
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions options;
  if (const auto exit_status = kvserve::bench::parse_command_line(argc, argv, options)) return *exit_status;
  if (options.api == "openai") return run_openai(options);

  const auto channels = connect(options);
  if (channels.empty()) return 2;

  std::string model_info_error;
  const nlohmann::ordered_json server = ask_model_info(channels.front(), options, model_info_error);
  if (options.vocab == 0 && !options.text) {
    if (server.is_null() || server["vocab_size"].get<uint32_t>() == 0) {
      std::fprintf(stderr, "kvserve-bench: error: GetModelInfo gave no vocab_size (%s); pass --vocab\n",
                   server.is_null() ? model_info_error.c_str() : "it was 0");
      return 2;
    }
    options.vocab = server["vocab_size"].get<uint32_t>();
    if (options.min_token_id >= options.vocab) {
      std::fprintf(stderr,
                   "kvserve-bench: error: --min-token-id %u is not below the server's vocab_size %u\n",
                   options.min_token_id, options.vocab);
      return 2;
    }
  }

  std::vector<std::unique_ptr<kvserve::v1::Generation::Stub>> stubs;
  for (const auto& channel : channels)
    stubs.push_back(kvserve::v1::Generation::NewStub(channel));
  kvserve::bench::GrpcCallStarter calls(std::move(stubs));
  return run(options, calls, server);
}
