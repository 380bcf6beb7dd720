// A Jinja template interpreter for chat templates: the language subset Hugging Face chat templates
// are written in, rendered as transformers renders them (jinja2's ImmutableSandboxedEnvironment with
// trim_blocks, lstrip_blocks and loop controls; raise_exception, strftime_now and a JSON tojson).
// What is supported is listed in docs/models.md ("Chat templates"). What is not fails instead of
// rendering differently: an unsupported statement when the template is parsed, with its line; an
// unknown filter or test, or a value the interpreter does not model (an integer past 64 bits, a
// generator printed), when rendering reaches it.
#pragma once

#include <chrono>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "engine/jinja_value.h"

namespace kvserve::jinja {

struct Stmt;

struct RenderOptions {
  std::tm now{};                               // what strftime_now() formats
  size_t max_output_bytes = size_t{64} << 20;  // a template that writes more fails instead
  int max_call_depth = 32;                     // macro recursion
  // Chat templates render in microseconds; one that loops over something huge fails instead of
  // holding a request thread. Also bounded: strings (kMaxStringBytes) and lists (kMaxListItems).
  std::chrono::milliseconds time_limit{2000};
};

class Template {
 public:
  // Throws Error "line N: ..." for a syntax error or a construct outside the supported subset.
  explicit Template(std::string_view source);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the entries of `variables` (a dict) as the template's variables. Throws
  // RaisedError for raise_exception(), Error "line N: ..." for anything else that fails.
  std::string render(const Value& variables, const RenderOptions& options) const;
  std::string render(const nlohmann::ordered_json& variables, const RenderOptions& options) const;

 private:
  std::vector<std::unique_ptr<Stmt>> body_;
};

}  // namespace kvserve::jinja
