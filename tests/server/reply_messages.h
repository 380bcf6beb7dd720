// A gRPC GenerateResponse as the service sends it, for the tests of the OpenAI API's reply writers.
#pragma once

#include <string>

#include "kvserve/v1/kvserve.pb.h"

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

}  // namespace kvserve::testing
