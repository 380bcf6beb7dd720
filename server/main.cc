// kvserve: the gRPC server. Loads a model (by default the tiny one compiled in), runs the engine on
// its own thread, serves kvserve.v1.Generation plus the standard health and reflection services,
// exports metrics over HTTP, and drains gracefully on SIGTERM / SIGINT.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "engine/engine.h"
#include "engine/model.h"
#include "server/backend_factory.h"
#include "server/engine_runner.h"
#include "server/generation_service.h"
#include "server/hub_download.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/openai_http.h"
#include "server/reasoning.h"
#include "server/served_model.h"
#include "server/tool_calls.h"

namespace {

struct Flags {
  kvserve::ServedModelFlags model;
  std::string host = "0.0.0.0";
  int port = 50051;
  std::string metrics_host = "0.0.0.0";
  int metrics_port = 9090;  // -1 = no metrics endpoint
  std::string openai_host = "0.0.0.0";
  int openai_port = -1;           // -1 = no OpenAI-compatible API
  int openai_threads = 0;         // 0 = as many requests as the engine can hold (see openai_threads())
  int responses_store_mb = 64;    // the Responses API's stored responses; 0 = none
  std::string served_model_name;  // empty = --model as given
  std::vector<std::string> lora_modules;  // NAME=DIR each
  std::string tool_call_parser = "auto";
  std::string reasoning_parser = "auto";
  kvserve::BackendChoice backend;
  int block_size = 16;
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  int max_model_len = 0;  // 0 = the model's
  int max_queue = 1024;
  int num_speculative_tokens = 0;
  int prompt_lookup_min = 2;
  int prompt_lookup_max = 4;
  bool download_only = false;
  std::string scheduling_policy = "fcfs";
  double max_priority_wait_s = 60;
  int default_max_tokens = 0;
  size_t max_request_bytes = 1 << 20;
  int max_stop_strings = 16;
  double drain_timeout_s = 30;
  std::string log_level = "info";
  int debug_step_delay_ms = 0;
  int debug_fail_after_steps = 0;
  std::string tls_cert, tls_key, tls_client_ca;
  std::string auth_token_file;
};

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(std::string("cannot read ") + what + " " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

constexpr int kMaxOpenAiThreads = 16384;

// The OpenAI API's worker threads at most. Each request holds one while it is served, so with
// fewer than the engine can hold (running and queued) the excess would wait in the HTTP server,
// unseen by the scheduler and by --max-queue; the 64 more answer the quick requests (refusals,
// /health, /v1/models) while the engine is full. With no queue limit, 4096 stand for one.
int openai_threads(const Flags& f) {
  if (f.openai_threads > 0) return f.openai_threads;
  const int64_t held = int64_t{f.max_num_seqs} + (f.max_queue > 0 ? f.max_queue : 4096) + 64;
  return static_cast<int>(std::min<int64_t>(held, kMaxOpenAiThreads));
}

// Plain TCP, TLS, or mutual TLS (clients must present a certificate signed by --tls-client-ca).
std::shared_ptr<grpc::ServerCredentials> server_credentials(const Flags& f) {
  if (f.tls_cert.empty() != f.tls_key.empty())
    throw std::runtime_error("--tls-cert and --tls-key go together");
  if (f.tls_cert.empty()) {
    if (!f.tls_client_ca.empty()) throw std::runtime_error("--tls-client-ca needs --tls-cert and --tls-key");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions options(f.tls_client_ca.empty()
                                                ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_key_cert_pairs.push_back(
      {read_file(f.tls_key, "TLS key"), read_file(f.tls_cert, "TLS certificate")});
  if (!f.tls_client_ca.empty()) options.pem_root_certs = read_file(f.tls_client_ca, "client CA");
  return grpc::SslServerCredentials(options);
}

// The bearer token: from --auth-token-file (first line), else $KVSERVE_AUTH_TOKEN; empty = no auth.
// Never a flag value, which any local user could read from the process list.
std::string auth_token(const Flags& f) {
  std::string token;
  if (!f.auth_token_file.empty()) {
    token = read_file(f.auth_token_file, "token file");
    token = token.substr(0, token.find_first_of("\r\n"));
    if (token.empty()) throw std::runtime_error("the token file " + f.auth_token_file + " is empty");
  } else if (const char* env = std::getenv("KVSERVE_AUTH_TOKEN")) {
    token = env;
  }
  return token;
}

// SIGTERM and SIGINT are blocked on the main thread before it starts any other, so every thread
// kvserve starts inherits the mask and the main thread takes them with sigwait. Libraries may have
// started threads before main() runs, though (OpenBLAS starts its pool when it loads); the kernel
// hands a signal the main thread is not waiting for to one of those, whose default action would
// kill the process. This handler, which only such threads can run, passes it on to the main thread.
pthread_t main_thread;

extern "C" void forward_to_main_thread(int sig) {
  const int saved_errno = errno;
  pthread_kill(main_thread, sig);  // pending on the main thread until its next sigwait
  errno = saved_errno;
}

sigset_t block_stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  main_thread = pthread_self();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  struct sigaction action {};
  action.sa_handler = forward_to_main_thread;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  return signals;
}

// Waits for SIGTERM or SIGINT and returns it.
int wait_for_signal(const sigset_t& signals) {
  int sig = 0;
  sigwait(&signals, &sig);
  return sig;
}

// True when SIGTERM or SIGINT arrives within `timeout`.
bool signal_within(const sigset_t& signals, std::chrono::milliseconds timeout) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  const timespec wait{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  return sigtimedwait(&signals, nullptr, &wait) > 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kvserve: an LLM inference server with a paged KV cache, over gRPC"};
  Flags f;
  app.add_option("--model", f.model.model,
                 "Hugging Face model directory; a Hub model id (org/name: fetched into the Hub's cache, "
                 "HF_HOME, with HF_TOKEN for gated models); " +
                     std::string(kvserve::kEmbeddedModelSpec) +
                     " (built in); or random:<shape>[:seed] (seeded random weights of a published shape, "
                     "for benchmarks: llama3-8b, llama3.2-1b, tiny)")
      ->capture_default_str();
  app.add_option("--revision", f.model.revision, "of a Hub model id: the branch, tag or commit to serve")
      ->capture_default_str();
  app.add_flag("--download-only", f.download_only,
               "fetch the Hub model id --model names into the Hub cache, print its directory and exit (an "
               "init container's or an image build's step; serve it later with HF_HUB_OFFLINE=1)");
  app.add_flag(
      "--skip-tokenizer", f.model.skip_tokenizer,
      "load no tokenizer (neither tokenizer.model nor tokenizer.json is read): requests send token ids");
  app.add_option(
      "--chat-template", f.model.chat_template,
      "Jinja chat template file for chat input, instead of the model's own (chat_template.jinja, "
      "tokenizer_config.json's chat_template or chat_template.json); docs/models.md#chat-templates says "
      "what it may use");
  app.add_option("--host", f.host, "address to serve gRPC on")->capture_default_str();
  app.add_option("--port", f.port, "gRPC port (0 = any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--metrics-host", f.metrics_host, "address for the HTTP metrics endpoint")
      ->capture_default_str();
  app.add_option("--metrics-port", f.metrics_port, "HTTP port for /metrics and /health (-1 = off, 0 = any)")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  app.add_option("--openai-host", f.openai_host, "address for the OpenAI-compatible HTTP API")
      ->capture_default_str();
  app.add_option("--openai-port", f.openai_port,
                 "HTTP port for the OpenAI-compatible API: /v1/completions, /v1/chat/completions, /v1/models "
                 "(-1 = off, 0 = any)")
      ->check(CLI::Range(-1, 65535))
      ->capture_default_str();
  app.add_option("--openai-threads", f.openai_threads,
                 "OpenAI-compatible API: requests served at once (each holds a thread, started when "
                 "needed); more wait for one. 0 = --max-num-seqs + --max-queue + 64, so that the "
                 "engine's queue, not the HTTP server, holds and refuses the excess")
      ->check(CLI::Range(0, kMaxOpenAiThreads))
      ->capture_default_str();
  app.add_option("--responses-store-mb", f.responses_store_mb,
                 "OpenAI-compatible API: MiB of memory for stored /v1/responses (read back and continued by "
                 "previous_response_id; the least recently used go first); 0 = store none")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  app.add_option(
      "--served-model-name", f.served_model_name,
      "the model's name for clients (GetModelInfo, the OpenAI API's `model`); default: --model as given");
  app.add_option("--lora-modules", f.lora_modules,
                 "LoRA adapters to serve beside the model, as NAME=DIR (PEFT's adapter_config.json and "
                 "adapter_model.safetensors): requests name one (lora_adapter, or the OpenAI API's model)")
      ->expected(1, -1);
  app.add_option("--tool-call-parser", f.tool_call_parser,
                 "OpenAI API: how the model writes tool calls, read out of its replies as tool_calls for "
                 "tool_choice \"auto\": auto (what the chat template teaches), hermes, llama3_json, mistral, "
                 "granite or none")
      ->check(CLI::IsMember({"auto", "hermes", "llama3_json", "mistral", "granite", "none"}))
      ->capture_default_str();
  app.add_option(
         "--reasoning-parser", f.reasoning_parser,
         "OpenAI API: read a chat reply's <think> block out as reasoning (reasoning_content, a "
         "Responses reasoning item): auto (when the chat template writes <think> tags), think or none")
      ->check(CLI::IsMember({"auto", "think", "none"}))
      ->capture_default_str();
  app.add_option("--block-size", f.block_size, "KV block size in tokens")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--backend", f.backend.kind,
                 "auto (CUDA when a GPU is present, but CPU for a mixture-of-experts model), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}))
      ->capture_default_str();
  app.add_option("--num-kv-blocks", f.backend.num_kv_blocks,
                 "KV blocks in the pool (0 = from --gpu-memory-utilization or --kv-cache-gib)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--gpu-memory-utilization", f.backend.gpu_memory_utilization,
                 "CUDA: fraction of the GPU's memory this process may use; the KV pool gets what weights and "
                 "activations leave")
      ->check(CLI::Range(0.05, 0.99))
      ->capture_default_str();
  app.add_option("--cuda-device", f.backend.cuda_device, "CUDA: device index")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("!--no-cuda-graphs", f.backend.cuda_graphs,
               "CUDA: launch every decode step's kernels one by one instead of replaying CUDA graphs");
  app.add_option("--kv-cache-gib", f.backend.kv_cache_gib,
                 "CPU: memory for the KV cache when --num-kv-blocks is 0")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-num-seqs", f.max_num_seqs, "running sequences at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", f.max_num_batched_tokens, "token budget per engine step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-model-len", f.max_model_len, "prompt + output tokens at most (0 = the model's)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-queue", f.max_queue,
                 "requests waiting beyond the free running seats at most; more get RESOURCE_EXHAUSTED (0 = "
                 "no limit)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--num-speculative-tokens", f.num_speculative_tokens,
                 "speculative decoding by prompt lookup: up to this many tokens, found by matching the "
                 "end of a request's text earlier in its prompt or output, are checked in each decode "
                 "step; the tokens are those drawn without it (on the GPU up to rounding) (0 = off)")
      ->check(CLI::Range(0, kvserve::kMaxDraftTokens))
      ->capture_default_str();
  app.add_option("--prompt-lookup-min", f.prompt_lookup_min,
                 "with --num-speculative-tokens: the fewest last tokens matched to find a draft")
      ->check(CLI::Range(1, kvserve::kMaxNgram))
      ->capture_default_str();
  app.add_option("--prompt-lookup-max", f.prompt_lookup_max,
                 "with --num-speculative-tokens: the most last tokens matched (longer matches first)")
      ->check(CLI::Range(1, kvserve::kMaxNgram))
      ->capture_default_str();
  app.add_option(
         "--scheduling-policy", f.scheduling_policy,
         "fcfs: first come, first served (requests must leave priority at 0); priority: requests "
         "carry a priority (lower runs sooner), and a better one overtakes and may preempt worse ones")
      ->check(CLI::IsMember({"fcfs", "priority"}))
      ->capture_default_str();
  app.add_option("--max-priority-wait", f.max_priority_wait_s,
                 "with --scheduling-policy priority: seconds of waiting in the queue after which a request "
                 "goes ahead of every request that has not waited as long, whatever their priorities, so "
                 "that none waits forever (0 = no bound: strict priority)")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  app.add_option("--default-max-tokens", f.default_max_tokens,
                 "at most this many tokens for requests that leave max_tokens unset (0 = no cap: as many as "
                 "the model's length and the KV pool leave after the prompt, as vLLM)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-request-bytes", f.max_request_bytes, "largest request accepted")
      ->capture_default_str();
  app.add_option("--max-stop-strings", f.max_stop_strings, "stop strings per request at most")
      ->capture_default_str();
  app.add_option("--drain-timeout", f.drain_timeout_s, "seconds running requests get to finish on SIGTERM")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--threads", f.backend.cpu_threads, "CPU backend threads (0 = all cores)")
      ->capture_default_str();
  app.add_option("--log-level", f.log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--tls-cert", f.tls_cert, "PEM server certificate (chain); enables TLS")->group("Security");
  app.add_option("--tls-key", f.tls_key, "PEM private key of --tls-cert")->group("Security");
  app.add_option("--tls-client-ca", f.tls_client_ca,
                 "PEM CA: require client certificates it signed (mutual TLS)")
      ->group("Security");
  app.add_option(
         "--auth-token-file", f.auth_token_file,
         "file whose first line is the bearer token every RPC must carry (or set KVSERVE_AUTH_TOKEN); "
         "health and reflection stay open")
      ->group("Security");
  app.add_option("--debug-step-delay-ms", f.debug_step_delay_ms,
                 "testing only: sleep this long after every engine step (slows a tiny model down)")
      ->check(CLI::NonNegativeNumber)
      ->group("Debugging");
  app.add_option(
         "--debug-fail-after-steps", f.debug_fail_after_steps,
         "testing only: make every engine step after this many fail, as a GPU error would (0 = never)")
      ->check(CLI::NonNegativeNumber)
      ->group("Debugging");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(f.log_level));
  const std::string served_name = f.served_model_name.empty() ? f.model.model : f.served_model_name;
  std::vector<std::string> lora_names;
  for (const std::string& module : f.lora_modules) {
    const size_t eq = module.find('=');
    const std::string name = module.substr(0, eq);
    std::string problem;
    const auto name_char = [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) ||
             std::string_view("._:/+-").find(ch) != std::string_view::npos;
    };
    if (eq == std::string::npos || name.empty() || eq + 1 == module.size())
      problem = "give each as NAME=DIR";
    else if (name.size() > 128 || !std::all_of(name.begin(), name.end(), name_char))
      problem = "a name is 1 to 128 letters, digits and . _ : / + - (what requests send as the model)";
    else if (name == served_name || std::find(lora_names.begin(), lora_names.end(), name) != lora_names.end())
      problem = "the name '" + name + "' is taken (by the model or another adapter)";
    if (!problem.empty()) {
      std::fprintf(stderr, "kvserve: --lora-modules %s: %s\n", module.c_str(), problem.c_str());
      return 2;
    }
    lora_names.push_back(name);
    f.backend.lora_modules.emplace_back(name, module.substr(eq + 1));
  }

  // Before any thread starts: a SIGTERM / SIGINT during start-up waits, and drains the server as
  // soon as it serves.
  const sigset_t signals = block_stop_signals();

  if (f.download_only) {
    if (!kvserve::is_hub_model_id(f.model.model)) {
      std::fprintf(stderr, "kvserve: --download-only needs a Hub model id (org/name) as --model, not %s\n",
                   f.model.model.c_str());
      return 2;
    }
    // Progress to stderr: stdout is the directory alone, for a script to read.
    spdlog::set_default_logger(spdlog::stderr_color_mt("kvserve"));
    spdlog::set_level(spdlog::level::from_str(f.log_level));
    try {
      const std::filesystem::path dir =
          kvserve::fetch_hub_model(f.model.model, f.model.revision, kvserve::HubSettings::from_environment());
      std::printf("%s\n", dir.c_str());
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kvserve: %s\n", e.what());
      return 2;
    }
  }

  kvserve::ServedModel served;
  std::shared_ptr<const kvserve::Model> model;
  // Start-up time is logged in two parts: reading the model files, and building the backend
  // (weights to their device, the KV pool), which holds most of it for a large model on a GPU.
  const auto start = std::chrono::steady_clock::now();
  try {
    served = kvserve::load_served_model(f.model);
    model = std::move(served.model);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvserve: %s\n", e.what());
    return 2;
  }
  const kvserve::ModelConfig mc = model->config;  // outlives `model`, released below
  const auto loaded = std::chrono::steady_clock::now();

  kvserve::EngineConfig config;
  config.scheduler.block_size = f.block_size;
  config.scheduler.max_num_seqs = f.max_num_seqs;
  config.scheduler.max_num_batched_tokens = f.max_num_batched_tokens;
  config.scheduler.max_model_len = f.max_model_len > 0
                                       ? std::min(f.max_model_len, kvserve::max_supported_len(mc))
                                       : kvserve::max_supported_len(mc);
  config.scheduler.max_waiting = 0;  // the runner enforces --max-queue, counting its inbox too
  config.scheduler.policy = f.scheduling_policy == "priority" ? kvserve::SchedulingPolicy::kPriority
                                                              : kvserve::SchedulingPolicy::kFcfs;
  // A positive bound under a millisecond is one: 0 would mean none.
  config.scheduler.max_priority_wait = std::chrono::milliseconds(
      f.max_priority_wait_s > 0 ? std::max<long long>(1, std::llround(f.max_priority_wait_s * 1000)) : 0);
  config.scheduler.speculative = {.max_draft_tokens = f.num_speculative_tokens,
                                  .min_ngram = f.prompt_lookup_min,
                                  .max_ngram = f.prompt_lookup_max};
  config.eos_token_ids = mc.eos_token_ids;
  config.tokenizer = served.tokenizer;
  // The backend sizes the KV pool (from GPU memory, or --kv-cache-gib on the CPU); the scheduler
  // then allocates from exactly that many blocks.
  kvserve::BuiltBackend built;
  try {
    built = kvserve::build_backend(f.backend, model, config.scheduler);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvserve: %s\n", e.what());
    return 2;
  }
  const auto built_at = std::chrono::steady_clock::now();
  config.scheduler.num_blocks = built.num_blocks;
  model.reset();  // the CPU backend holds its own reference; the CUDA backend has the weights on the GPU
  if (kvserve::Status s = config.scheduler.validate(); !s.ok()) {
    std::fprintf(stderr, "kvserve: %s\n", s.message().c_str());
    return 2;
  }

  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::string token;
  try {
    credentials = server_credentials(f);
    token = auth_token(f);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvserve: %s\n", e.what());
    return 2;
  }

  spdlog::info(
      "model {}: {}{} ({} layers, hidden {}, {} heads / {} kv heads, head_dim {}, vocab {}, weights {})",
      f.model.model, mc.architecture,
      mc.checkpoint_architecture.empty() ? "" : ", the text model of a " + mc.checkpoint_architecture,
      mc.num_layers, mc.hidden_size, mc.num_heads, mc.num_kv_heads, mc.head_dim, mc.vocab_size, mc.dtype);
  if (mc.fp8_weights)
    spdlog::info("quantized checkpoint: {}; dequantized at load, computed unquantized",
                 quantization_summary(mc));
  if (mc.moe) spdlog::info("mixture of experts: {}", moe_summary(mc));
  if (mc.embedding_only)
    spdlog::info(
        "the checkpoint has no LM head (an embedding model): Embed and /v1/embeddings are served, "
        "Generate is refused");
  spdlog::info("{}", built.description);
  for (const auto& [name, dir] : f.backend.lora_modules)
    spdlog::info("LoRA adapter {} from {}", name, dir.string());
  if (const long long pool_tokens = static_cast<long long>(built.num_blocks) * f.block_size;
      pool_tokens + 1 < config.scheduler.max_model_len)
    spdlog::warn(
        "the KV pool holds {} tokens, fewer than max_model_len {}: one request can fill it (a request "
        "without max_tokens is given what the pool holds), preempting the others; give the cache more "
        "memory or lower --max-model-len",
        pool_tokens, config.scheduler.max_model_len);
  spdlog::info("chat input {}{}", served.chat_template ? "on, template from " : "", served.chat_source);
  // tool_choice "auto" needs the model's call format; the template that teaches it tells which.
  kvserve::ToolCallFormat tool_call_format =
      f.tool_call_parser != "auto" ? *kvserve::tool_call_format_from_name(f.tool_call_parser)
      : served.chat_template       ? kvserve::detect_tool_call_format(served.chat_template->source())
                                   : kvserve::ToolCallFormat::kNone;
  spdlog::info("tool calls for tool_choice \"auto\": {} ({})",
               kvserve::tool_call_format_name(tool_call_format),
               f.tool_call_parser != "auto" ? "--tool-call-parser" : "from the chat template");
  if (const std::string hidden =
          served.tokenizer ? kvserve::tool_call_markers_hidden(tool_call_format, *served.tokenizer) : "";
      !hidden.empty()) {
    spdlog::warn("tool calls for tool_choice \"auto\" off: {}", hidden);
    tool_call_format = kvserve::ToolCallFormat::kNone;
  }
  const std::vector<std::string> tool_call_control_markers =
      served.tokenizer ? kvserve::tool_call_control_markers(tool_call_format, *served.tokenizer)
                       : std::vector<std::string>{};
  const bool reasoning =
      f.reasoning_parser == "think" || (f.reasoning_parser == "auto" && served.chat_template &&
                                        kvserve::template_teaches_thinking(served.chat_template->source()));
  spdlog::info("reasoning in chat replies: {} ({})", reasoning ? "<think> read out" : "none",
               f.reasoning_parser != "auto" ? "--reasoning-parser" : "from the chat template");
  spdlog::info("start-up: model {:.2f} s, backend {:.2f} s",
               std::chrono::duration<double>(loaded - start).count(),
               std::chrono::duration<double>(built_at - loaded).count());
  spdlog::info(
      "max_model_len {}, max_num_seqs {}, max_num_batched_tokens {}, max_queue {}, default_max_tokens {}",
      config.scheduler.max_model_len, f.max_num_seqs, f.max_num_batched_tokens, f.max_queue,
      f.default_max_tokens);
  if (config.scheduler.policy == kvserve::SchedulingPolicy::kPriority)
    spdlog::info("scheduling by priority; {}",
                 f.max_priority_wait_s > 0
                     ? fmt::format("a request waits at most {} s behind better ones", f.max_priority_wait_s)
                     : std::string("no bound on the wait (--max-priority-wait 0)"));
  else
    spdlog::info("scheduling first come, first served");
  if (f.num_speculative_tokens > 0) {
    spdlog::info(
        "speculative decoding by prompt lookup: up to {} draft tokens per step, from matches of "
        "the last {} to {} tokens",
        f.num_speculative_tokens, f.prompt_lookup_max, f.prompt_lookup_min);
    // A CPU step costs per token, not per step: checking drafts is extra work there (docs/benchmarks.md).
    if (built.backend->name() == "cpu")
      spdlog::warn(
          "speculative decoding on the CPU backend saves steps but not time: it computes every "
          "draft token (--num-speculative-tokens 0 turns it off)");
  } else {
    spdlog::info("speculative decoding off (--num-speculative-tokens)");
  }

  spdlog::info("transport {}; bearer token {}",
               f.tls_cert.empty() ? "plaintext" : (f.tls_client_ca.empty() ? "TLS" : "mutual TLS"),
               token.empty() ? "off" : "required");

  kvserve::Metrics metrics;
  metrics.set_lora_adapters(lora_names);
  if (f.debug_fail_after_steps > 0)
    built.backend = kvserve::fail_after_steps(std::move(built.backend), f.debug_fail_after_steps);
  auto engine = std::make_unique<kvserve::Engine>(config, std::move(built.backend));
  // An engine failure takes the path of SIGTERM (the main thread's sigwait below receives it):
  // health goes NOT_SERVING, the server stops, the exit
  // status says so and the supervisor restarts the process.
  kvserve::EngineRunner runner(std::move(engine),
                               {.max_waiting = f.max_queue,
                                .metrics = &metrics,
                                .step_delay = std::chrono::milliseconds(f.debug_step_delay_ms),
                                .on_engine_failure = [](const std::string&) { kill(getpid(), SIGTERM); },
                                .lora_adapters = lora_names});
  kvserve::GenerationService service(runner, mc, served.tokenizer,
                                     {.default_max_tokens = f.default_max_tokens,
                                      .max_request_bytes = f.max_request_bytes,
                                      .max_stop_strings = f.max_stop_strings,
                                      .model_name = served_name,
                                      .device = built.device,
                                      .metrics = &metrics,
                                      .auth_token = token,
                                      .chat_template = served.chat_template,
                                      .lora_adapters = lora_names});

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(f.host + ":" + std::to_string(f.port), credentials, &bound_port);
  builder.RegisterService(&service);
  // gRPC's own limit sits well above ours, so that an oversize request reaches the service and gets
  // INVALID_ARGUMENT naming the limit rather than a transport error.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<size_t>(f.max_request_bytes + (1 << 20), 1u << 30)));
  // Probe idle connections so that a peer that vanished without a reset does not hold its stream.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  // gRPC sets SO_REUSEPORT by default: a second kvserve started on this port would then listen
  // beside this one and silently take a share of its clients. It must fail instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    std::fprintf(stderr, "kvserve: cannot listen on %s:%d (address in use or not available here)\n",
                 f.host.c_str(), f.port);
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);

  std::atomic<bool> draining{false};
  kvserve::MetricsHttpServer http(metrics, [&] { return !draining.load(); });
  if (f.metrics_port >= 0) {
    if (kvserve::Status s = http.start(f.metrics_host, f.metrics_port); !s.ok()) {
      std::fprintf(stderr, "kvserve: metrics endpoint: %s\n", s.message().c_str());
      return 1;
    }
    spdlog::info("metrics on http://{}:{}/metrics", f.metrics_host, http.bound_port());
  }
  // The OpenAI-compatible API runs each request through the service above, in process.
  // A slow reader's stream merges its backlog into one message, which may pass gRPC's default 4 MiB.
  grpc::ChannelArguments in_process;
  in_process.SetMaxReceiveMessageSize(-1);
  kvserve::OpenAiHttpServer openai(server->InProcessChannel(in_process),
                                   {.served = {.model = served_name,
                                               .tool_call_format = tool_call_format,
                                               .tool_call_control_markers = tool_call_control_markers,
                                               .reasoning = reasoning,
                                               .max_request_bytes = f.max_request_bytes,
                                               .lora_adapters = lora_names},
                                    .tokenizer = served.tokenizer,
                                    .max_request_bytes = f.max_request_bytes,
                                    .threads = openai_threads(f),
                                    .tls_cert = f.tls_cert,
                                    .tls_key = f.tls_key,
                                    .tls_client_ca = f.tls_client_ca,
                                    .healthy = [&] { return !draining.load(); },
                                    .responses_store_bytes = static_cast<size_t>(f.responses_store_mb) << 20,
                                    .metrics = &metrics});
  if (f.openai_port >= 0) {
    if (kvserve::Status s = openai.start(f.openai_host, f.openai_port); !s.ok()) {
      std::fprintf(stderr, "kvserve: OpenAI-compatible API: %s\n", s.message().c_str());
      return 1;
    }
    // Tests and scripts read the port from this line.
    std::printf("kvserve: serving the OpenAI-compatible API on %s://%s:%d/v1\n",
                f.tls_cert.empty() ? "http" : "https", f.openai_host.c_str(), openai.bound_port());
    spdlog::info("OpenAI API: up to {} requests at once", openai_threads(f));
    if (f.responses_store_mb > 0)
      spdlog::info("OpenAI API: stores /v1/responses in up to {} MiB, in memory (--responses-store-mb)",
                   f.responses_store_mb);
  }
  // Tests and scripts read the port from this line.
  std::printf("kvserve: serving kvserve.v1.Generation on %s:%d\n", f.host.c_str(), bound_port);
  std::fflush(stdout);

  const int sig = wait_for_signal(signals);
  const std::string engine_failure = runner.failure();
  if (engine_failure.empty())
    spdlog::info("{}: draining; running requests get up to {:.0f} s to finish",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT", f.drain_timeout_s);
  else
    spdlog::error("stopping: the engine failed ({})", engine_failure);
  draining = true;
  health->SetServingStatus(false);
  runner.start_draining();
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(f.drain_timeout_s * 1000));
  // The main thread waits in sigtimedwait nearly all the drain, so that a second signal comes
  // straight to it.
  bool idle = runner.wait_idle(std::chrono::milliseconds(0));
  bool hurry = false;
  while (!idle && std::chrono::steady_clock::now() < deadline) {
    if (signal_within(signals, std::chrono::milliseconds(20))) {
      spdlog::warn("{}: stopping now", runner.failure().empty() ? "second signal" : "the engine failed");
      hurry = true;
      break;
    }
    idle = runner.wait_idle(std::chrono::milliseconds(0));
  }
  if (!idle) spdlog::warn("aborting the requests still running ({})", runner.status().num_running);
  runner.stop();
  // Streams still sending their last messages get what is left of the drain budget, at least 2 s
  // (2 s at most after a second signal): one deadline for both APIs.
  const auto now = std::chrono::steady_clock::now();
  const auto stop_by =
      hurry ? now + std::chrono::seconds(2) : std::max(deadline, now + std::chrono::seconds(2));
  // The OpenAI API's calls read their last messages over the in-process channel, which Shutdown
  // closes at once (it would cut them off with "Transport closed"): they go first.
  openai.wait_idle(std::chrono::duration_cast<std::chrono::milliseconds>(stop_by - now));
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::duration_cast<std::chrono::system_clock::duration>(
                       stop_by - std::chrono::steady_clock::now()));
  openai.stop();
  http.stop();
  spdlog::info("stopped after serving {} requests", runner.status().requests_served);
  return runner.failure().empty() ? 0 : 3;  // also if it failed while draining
}
