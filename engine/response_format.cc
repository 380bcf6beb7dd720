#include "engine/response_format.h"

#include <nlohmann/json.hpp>

#include "engine/json_limits.h"
#include "engine/json_schema_regex.h"

namespace kvserve {

Status check_stop_criteria_for_response_format(const StopCriteria& stop) {
  if (stop.ignore_eos)
    return Status::InvalidArgument("stop.ignore_eos cannot be combined with response_format; unset one");
  if (stop.min_tokens > 0)
    return Status::InvalidArgument("stop.min_tokens cannot be combined with response_format; unset one");
  return Status::Ok();
}

Status response_format_regex(const ResponseFormat& format, std::string* regex) {
  switch (format.kind) {
    case ResponseFormat::Kind::kRegex:
      if (format.text.empty())
        return Status::InvalidArgument(
            "response_format.regex is empty; give the pattern the output must match");
      *regex = format.text;
      return Status::Ok();
    case ResponseFormat::Kind::kJsonSchema: {
      nlohmann::ordered_json schema;  // keeps the properties in the schema's order
      if (std::string over = json_over_limits(format.text, kMaxRequestJsonDepth, kMaxRequestJsonMembers);
          !over.empty())
        return Status::InvalidArgument("response_format.json_schema: " + over);
      try {
        schema = nlohmann::ordered_json::parse(format.text);
      } catch (const nlohmann::json::exception& e) {  // a syntax error, or a number out of range
        return Status::InvalidArgument(std::string("response_format.json_schema is not valid JSON: ") +
                                       e.what());
      }
      return json_schema_to_regex(schema, regex);
    }
    case ResponseFormat::Kind::kChoice: {
      if (format.choices.empty())
        return Status::InvalidArgument("response_format.choice is empty; list the strings the output may be");
      if (format.choices.size() > static_cast<size_t>(kMaxResponseChoices))
        return Status::InvalidArgument("response_format.choice has " + std::to_string(format.choices.size()) +
                                       " strings, at most " + std::to_string(kMaxResponseChoices) +
                                       " allowed");
      std::string alternatives;
      for (const std::string& choice : format.choices) {
        if (!alternatives.empty()) alternatives += '|';
        alternatives += regex_escape(choice);
      }
      *regex = "(?:" + alternatives + ")";
      return Status::Ok();
    }
  }
  return Status::InvalidArgument("response_format: unknown kind");
}

}  // namespace kvserve
