#include "server/served_model.h"

#include <spdlog/spdlog.h>

#include <exception>
#include <filesystem>
#include <optional>
#include <system_error>
#include <utility>

#include "engine/random_model.h"
#include "server/embedded_model.h"
#include "server/hub_download.h"

namespace kvserve {
namespace {

// The chat template: the operator's --chat-template file, else the model directory's. One that an
// operator names must work (start-up fails otherwise); a broken one in the model's own files only
// turns chat input off, so that a model that served text before chat input existed still does.
void load_chat_template(const ServedModelFlags& flags, const std::filesystem::path& dir, ServedModel& out) {
  const Tokenizer& tok = *out.tokenizer;
  // What the template gets as bos_token / eos_token where tokenizer_config.json names none. A
  // tokenizer.json has no EOS of its own: config.json's first eos_token_id is the model's.
  std::optional<TokenId> eos_id = tok.eos_id();
  if (!eos_id && !out.model->config.eos_token_ids.empty()) eos_id = out.model->config.eos_token_ids.front();
  const std::string bos = tok.bos_id() ? tok.token_spelling(*tok.bos_id()) : std::string();
  const std::string eos = eos_id ? tok.token_spelling(*eos_id) : std::string();

  if (!flags.chat_template.empty()) {
    try {
      out.chat_template =
          std::make_shared<const ChatTemplate>(ChatTemplate::load_file(flags.chat_template, dir, bos, eos));
    } catch (const std::exception& e) {
      throw ModelLoadError(std::string("--chat-template: ") + e.what());
    }
    out.chat_source = flags.chat_template + " (--chat-template)";
    return;
  }
  const std::string where = flags.model == kEmbeddedModelSpec ? flags.model : dir.string();
  std::string source_file;
  try {
    out.chat_template = ChatTemplate::load_from_model_dir(dir, bos, eos, &source_file);
  } catch (const ModelLoadError& e) {
    spdlog::warn(
        "chat input is off: the model's chat template does not load ({}); text and token ids are still "
        "served; pass --chat-template FILE to use one that works",
        e.what());
    out.chat_source = "off: the model's chat template does not load";
    return;
  }
  if (!out.chat_template)
    out.chat_source = "off: " + where + " has no chat template (pass --chat-template FILE to add one)";
  else
    out.chat_source = where + "/" + source_file;
}

}  // namespace

ServedModel load_served_model(const ServedModelFlags& flags) {
  const std::string& spec = flags.model;
  ServedModel out;
  out.chat_source = "off: no tokenizer";
  if (!flags.chat_template.empty() && (flags.skip_tokenizer || is_random_model_spec(spec)))
    throw ModelLoadError(
        "--chat-template needs a tokenizer to encode the prompt: leave it out with --skip-tokenizer or a "
        "random: model");
  // Weights stay where they are (mapped files, random generators) for the backend to read in its own
  // format: the CUDA backend copies a bf16 checkpoint straight to the GPU, and an 8B model never
  // occupies host memory as float32. Random models (benchmarks) have no files and no tokenizer.
  if (is_random_model_spec(spec)) {
    out.model = std::make_unique<Model>(load_random_model_spec(spec, WeightLoading::kDeferred));
    return out;
  }
  if (spec != kEmbeddedModelSpec) {
    // A name that is no local path but has a Hub id's shape is fetched into (or found in) the
    // Hub's cache; the directory then loads as any other.
    std::error_code ec;
    const bool from_hub = !std::filesystem::exists(spec, ec) && is_hub_model_id(spec);
    if (!from_hub && flags.revision != "main")
      spdlog::warn("--revision {} is for Hub model ids; {} is a local path, served as it is", flags.revision,
                   spec);
    const std::filesystem::path dir =
        from_hub ? fetch_hub_model(spec, flags.revision, HubSettings::from_environment())
                 : std::filesystem::path(spec);
    out.model = std::make_unique<Model>(load_model(dir, WeightLoading::kDeferred));
    if (flags.skip_tokenizer) {
      spdlog::warn("--skip-tokenizer: no tokenizer; requests must send token_ids and stop_token_ids");
      return out;
    }
    try {
      out.tokenizer = Tokenizer::load_from_model_dir(out.model->dir);
    } catch (const ModelLoadError& e) {
      throw ModelLoadError(std::string(e.what()) +
                           " (or pass --skip-tokenizer to serve requests that send token_ids)");
    }
    // Text is encoded without a per-request check of the ids: a tokenizer that can produce ids the
    // model does not have would fail the engine on the first such request.
    if (out.tokenizer->vocab_size() > out.model->config.vocab_size)
      throw ModelLoadError(
          "the tokenizer in " + out.model->dir.string() + " has " +
          std::to_string(out.tokenizer->vocab_size()) + " token ids but config.json's vocab_size is " +
          std::to_string(out.model->config.vocab_size) +
          ": they do not belong together; pass the model's own tokenizer, or --skip-tokenizer to serve "
          "requests that send token_ids");
    load_chat_template(flags, out.model->dir, out);
    return out;
  }
  const std::filesystem::path dir = write_embedded_model();
  try {
    out.model = std::make_unique<Model>(load_model(dir));
    out.tokenizer = Tokenizer::load(dir / "tokenizer.model");
    load_chat_template(flags, dir, out);
  } catch (...) {
    std::filesystem::remove_all(dir);
    throw;
  }
  std::filesystem::remove_all(dir);  // everything is in memory now
  out.model->dir = spec;
  return out;
}

}  // namespace kvserve
