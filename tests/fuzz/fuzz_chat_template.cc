// Chat templates: a client's conversation rendered through each committed template
// (tests/data/chat_templates/*.jinja, written in the styles of the common model families), and
// template source itself (an operator's --chat-template file or a model's tokenizer_config.json)
// parsed and rendered. Properties: parsing throws only jinja::Error; rendering throws only
// jinja::Error (raise_exception's RaisedError included); neither crashes, hangs or exhausts
// memory (the interpreter bounds time, nesting, strings and lists), and the output stays within
// RenderOptions::max_output_bytes plus what one statement may add.
//
// Input layout: byte 0 = flags; bit 0 set: the rest up to the first '\0' is template source and
// what follows is the conversation, else the whole rest is the conversation for every committed
// template. Conversation: messages separated by '\1'; each message's first byte picks its role
// (system, user, assistant, tool, or the rest of a short name), the remainder is its content.
// Bit 1: add_generation_prompt.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "engine/jinja.h"

namespace {

using kvserve::jinja::Template;

constexpr size_t kMaxOutput = 1 << 20;

std::vector<Template> load_committed_templates() {
  std::vector<Template> out;
  for (const auto& entry : std::filesystem::directory_iterator(KVSERVE_TEST_DATA "/chat_templates")) {
    if (entry.path().extension() != ".jinja") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    out.emplace_back(text.str());
  }
  if (out.empty()) {
    std::fprintf(stderr, "fuzz_chat_template: no templates under %s\n", KVSERVE_TEST_DATA "/chat_templates");
    std::abort();
  }
  return out;
}

nlohmann::ordered_json conversation(std::string_view data, bool add_generation_prompt) {
  static const char* const kRoles[] = {"system", "user", "assistant", "tool"};
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  size_t from = 0;
  while (from <= data.size()) {
    size_t end = data.find('\1', from);
    if (end == std::string_view::npos) end = data.size();
    std::string_view m = data.substr(from, end - from);
    std::string role = "user";
    if (!m.empty()) {
      const auto pick = static_cast<unsigned char>(m[0]);
      role = pick < 240 ? kRoles[pick % 4] : std::string(m.substr(1, pick - 240));
      m.remove_prefix(std::min(m.size(), size_t{1} + (pick < 240 ? 0 : pick - 240)));
    }
    // Any bytes, ill-formed UTF-8 included: json only carries them here, it never dumps them.
    messages.push_back({{"role", role}, {"content", std::string(m)}});
    from = end + 1;
  }
  return {{"messages", messages},
          {"add_generation_prompt", add_generation_prompt},
          {"bos_token", "<s>"},
          {"eos_token", "</s>"}};
}

void render(const Template& t, const nlohmann::ordered_json& vars) {
  kvserve::jinja::RenderOptions options;
  options.max_output_bytes = kMaxOutput;
  options.time_limit = std::chrono::milliseconds(2000);
  try {
    const std::string out = t.render(vars, options);
    if (out.size() > kMaxOutput + kvserve::jinja::kMaxStringBytes) {
      std::fprintf(stderr, "fuzz_chat_template: output of %zu bytes passed the limit\n", out.size());
      std::abort();
    }
  } catch (const kvserve::jinja::Error&) {
    // raise_exception, a type error, or a limit: the request fails with a message.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Template> committed = load_committed_templates();
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const bool add_generation_prompt = (flags & 2) != 0;
  if (flags & 1) {
    const size_t nul = rest.find('\0');
    const std::string_view source = rest.substr(0, nul);
    const std::string_view chat = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
    try {
      const Template t(source);
      render(t, conversation(chat, add_generation_prompt));
    } catch (const kvserve::jinja::Error&) {
      // A template that does not parse: start-up refuses it with the line.
    }
    return 0;
  }
  const nlohmann::ordered_json vars = conversation(rest, add_generation_prompt);
  for (const Template& t : committed)
    render(t, vars);
  return 0;
}
