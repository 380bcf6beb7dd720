// A gRPC GenerateResponse as the service sends it, and the typed server-sent events the Responses
// and Messages APIs write, for the tests of the HTTP APIs' reply writers.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "kvserve/v1/kvserve.pb.h"
#include "server/openai_response.h"

namespace kvserve::testing {

// One message of choice 0 with `text` (one token); a finishing one carries usage: 12 prompt tokens
// (8 of them cached) and 3 completion tokens.
inline v1::GenerateResponse reply_message(const std::string& text,
                                          v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED) {
  v1::GenerateResponse m;
  m.set_request_id("r7");
  m.set_text(text);
  m.add_token_ids(1);
  m.set_finish_reason(finish);
  if (finish != v1::FINISH_REASON_UNSPECIFIED) {
    m.mutable_usage()->set_prompt_tokens(12);
    m.mutable_usage()->set_completion_tokens(3);
    m.mutable_usage()->set_cached_prompt_tokens(8);
  }
  return m;
}

// A typed stream's events ("event: TYPE" then "data: {json}", a blank line after each): their
// JSON, each one's event name checked against its data's type.
inline std::vector<nlohmann::json> events_of(const std::string& events) {
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  while (pos < events.size()) {
    const size_t data = events.find("\ndata: ", pos);
    const size_t end = events.find("\n\n", pos);
    EXPECT_EQ(events.compare(pos, 7, "event: "), 0) << events.substr(pos);
    if (data == std::string::npos || end == std::string::npos) break;
    const std::string name = events.substr(pos + 7, data - pos - 7);
    out.push_back(nlohmann::json::parse(events.substr(data + 7, end - data - 7)));
    EXPECT_EQ(out.back()["type"], name);
    pos = end + 2;
  }
  return out;
}

inline std::vector<std::string> types_of(const std::vector<nlohmann::json>& events) {
  std::vector<std::string> types;
  for (const nlohmann::json& e : events)
    types.push_back(e["type"]);
  return types;
}

// A reply to `messages` both ways: `whole`'s body, and the events `streamed` (the same request,
// streaming) writes for them, closing events included.
struct Replies {
  nlohmann::json whole;
  std::vector<nlohmann::json> events;
};
inline Replies replies_both_ways(openai::Reply& whole, openai::Reply& streamed,
                                 const std::vector<v1::GenerateResponse>& messages) {
  Replies out;
  for (const v1::GenerateResponse& m : messages)
    whole.add(m);
  out.whole = nlohmann::json::parse(whole.body());
  std::string events;
  for (const v1::GenerateResponse& m : messages)
    events += streamed.event(m);
  out.events = events_of(events + streamed.closing_events());
  return out;
}

}  // namespace kvserve::testing
