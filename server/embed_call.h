// One Embed call: an engine request per input (Request::embedding), submitted all or none, and
// the answer once every one has ended. A cancelled or expired call aborts them, and their blocks
// return to the pool at the engine's next step.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "engine/model.h"
#include "engine/request.h"
#include "engine/status.h"
#include "engine/tokenizer.h"
#include "kvserve/v1/kvserve.pb.h"
#include "server/engine_runner.h"

namespace kvserve {

// The most inputs one Embed call may carry (as OpenAI's embeddings API allows).
inline constexpr int kMaxEmbedInputs = 2048;

// Turns an Embed call's inputs into engine requests (ids `client_id`/0, /1, ...), or says
// (INVALID_ARGUMENT) which field is wrong, naming the input. `tokenizer` may be null (token id
// inputs only); an input may have max_model_len - 1 tokens (the request draws one token).
Status to_embed_requests(const v1::EmbedRequest& in, const ModelConfig& model, const Tokenizer* tokenizer,
                         int max_model_len, const std::string& client_id, std::vector<Request>* out);

class EmbedReactor final : public grpc::ServerUnaryReactor {
 public:
  // `response` is gRPC's, filled in before the call finishes OK.
  EmbedReactor(EngineRunner& runner, v1::EmbedResponse* response);

  // Submits the requests (requests[i] answers input i); on failure returns why, and the caller
  // finishes the call with reject().
  Status start(std::vector<Request> requests);
  void reject(const grpc::Status& status);

  void OnCancel() override;
  void OnDone() override;

 private:
  struct Call;
  struct InputChannel;
  EngineRunner& runner_;
  std::shared_ptr<Call> call_;  // shared with the runner's channels, which may outlive this
};

}  // namespace kvserve
