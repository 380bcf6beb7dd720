// What kvserve serves, read as its flags say: the model (weights left where they are for the backend
// to read in its own format), its tokenizer and its chat template.
#pragma once

#include <memory>
#include <string>

#include "engine/chat_template.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace kvserve {

// The default model, compiled into the binary (server/embedded_model.h).
inline constexpr char kEmbeddedModelSpec[] = "embedded:tiny-llama";

struct ServedModelFlags {
  // A model directory, a Hugging Face Hub model id (org/name, server/hub_download.h),
  // kEmbeddedModelSpec, or random:<shape>.
  std::string model = kEmbeddedModelSpec;
  std::string revision = "main";  // of a Hub model: a branch, tag or commit
  bool skip_tokenizer = false;
  std::string chat_template;  // --chat-template: the operator's template file; empty = the model's
};

struct ServedModel {
  std::unique_ptr<Model> model;
  std::shared_ptr<const Tokenizer> tokenizer;         // null: requests send token ids
  std::shared_ptr<const ChatTemplate> chat_template;  // null: no chat input
  std::string chat_source;  // where the template came from, or why there is none (for the log)
};

// Throws (ModelLoadError, with what to change) when the files do not load, or the flags ask for what
// they cannot give (a --chat-template that does not load, or one without a tokenizer).
ServedModel load_served_model(const ServedModelFlags& flags);

}  // namespace kvserve
