#include "server/embed_call.h"

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>

#include "server/generation_service.h"

namespace kvserve {

Status to_embed_requests(const v1::EmbedRequest& in, const ModelConfig& model, const Tokenizer* tokenizer,
                         int max_model_len, const std::string& client_id, std::vector<Request>* out) {
  if (in.inputs_size() == 0) return Status::InvalidArgument("inputs: send at least one input to embed");
  if (in.inputs_size() > kMaxEmbedInputs)
    return Status::InvalidArgument("inputs: " + std::to_string(in.inputs_size()) + " inputs, at most " +
                                   std::to_string(kMaxEmbedInputs) +
                                   " per call; split them over several calls");
  if (in.dimensions() > static_cast<uint32_t>(model.hidden_size))
    return Status::InvalidArgument("dimensions " + std::to_string(in.dimensions()) +
                                   " is more than the model's hidden size of " +
                                   std::to_string(model.hidden_size) + "; send at most that, or 0 for all");
  out->clear();
  for (int i = 0; i < in.inputs_size(); ++i) {
    const v1::EmbedInput& input = in.inputs(i);
    const std::string where = "inputs[" + std::to_string(i) + "]";
    Request r;
    r.id = client_id + "/" + std::to_string(i);
    switch (input.input_case()) {
      case v1::EmbedInput::kText:
        if (input.text().empty())
          return Status::InvalidArgument(where + ".text: empty; send at least one character");
        if (!tokenizer)
          return Status::InvalidArgument(where +
                                         ".text: this model has no tokenizer; send token_ids instead");
        if (Status s = encode_text(*tokenizer, input.text(), /*add_bos=*/!in.no_bos(), &r.prompt); !s.ok())
          return Status::InvalidArgument(where + "." + s.message());
        break;
      case v1::EmbedInput::kTokenIds:
        if (input.token_ids().ids().empty())
          return Status::InvalidArgument(where + ".token_ids.ids: empty; send at least one token id");
        for (int k = 0; k < input.token_ids().ids_size(); ++k) {
          const uint32_t id = input.token_ids().ids(k);
          if (id >= static_cast<uint32_t>(model.vocab_size))
            return Status::InvalidArgument(where + ".token_ids.ids[" + std::to_string(k) +
                                           "] = " + std::to_string(id) + " is outside the vocabulary [0, " +
                                           std::to_string(model.vocab_size) + ")");
          r.prompt.push_back(static_cast<TokenId>(id));
        }
        break;
      case v1::EmbedInput::INPUT_NOT_SET:
        return Status::InvalidArgument(where + ": set text or token_ids");
    }
    if (static_cast<int64_t>(r.prompt.size()) >= max_model_len)
      return Status::InvalidArgument(
          where + ": " + std::to_string(r.prompt.size()) + " tokens, more than the " +
          std::to_string(max_model_len - 1) +
          " an input may have on this server (--max-model-len, less the one token an "
          "embedding request draws); shorten it, nothing is cut");
    // One greedy token, whatever it is, ends the request: the engine takes the embedding at the
    // step that computes the prompt's last token, which is the step that draws that token.
    r.stop.max_tokens = 1;
    r.stop.ignore_eos = true;
    r.priority = in.priority();
    r.embedding = {true, static_cast<int>(in.dimensions()), !in.no_normalize()};
    out->push_back(std::move(r));
  }
  return Status::Ok();
}

// What the reactor and its inputs' channels share: the channels may outlive the reactor.
struct EmbedReactor::Call {
  Call(EmbedReactor* r, v1::EmbedResponse* resp) : reactor(r), response(resp) {}

  void on_output(size_t index, StepOutput out) {
    if (out.finish == FinishReason::kNone) return;  // an embedding request has one output, its last
    std::unique_lock lock(mu);
    if (out.embedding.empty()) {
      aborted = true;  // cancelled, or the server is shutting down
    } else {
      v1::Embedding* e = response->mutable_embeddings(static_cast<int>(index));
      e->mutable_values()->Add(out.embedding.begin(), out.embedding.end());
      e->set_prompt_tokens(static_cast<uint32_t>(out.num_prompt_tokens));
      e->set_cached_prompt_tokens(static_cast<uint32_t>(out.num_cached_prompt_tokens));
    }
    if (--remaining > 0 || reactor == nullptr) return;
    grpc::Status status = grpc::Status::OK;
    if (cancelled) {
      status = grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled");
    } else if (aborted) {
      status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "the server shut down before this request finished; retry elsewhere");
    } else {
      uint32_t prompt_tokens = 0, cached = 0;
      for (const v1::Embedding& e : response->embeddings()) {
        prompt_tokens += e.prompt_tokens();
        cached += e.cached_prompt_tokens();
      }
      response->mutable_usage()->set_prompt_tokens(prompt_tokens);
      response->mutable_usage()->set_cached_prompt_tokens(cached);
    }
    EmbedReactor* r = std::exchange(reactor, nullptr);
    lock.unlock();
    r->Finish(status);  // never under the lock: gRPC may run OnDone, which deletes the reactor
  }

  std::mutex mu;
  EmbedReactor* reactor;        // null once Finish is called
  v1::EmbedResponse* response;  // gRPC's, valid until Finish
  std::vector<RequestId> ids;   // the runner's, one per input
  size_t remaining = 0;         // inputs not ended yet
  bool aborted = false;         // an input ended without its embedding
  bool cancelled = false;
};

struct EmbedReactor::InputChannel : OutputChannel {
  InputChannel(std::shared_ptr<Call> c, size_t i) : call(std::move(c)), index(i) {}
  void on_output(StepOutput output) override { call->on_output(index, std::move(output)); }
  std::shared_ptr<Call> call;
  size_t index;
};

EmbedReactor::EmbedReactor(EngineRunner& runner, v1::EmbedResponse* response)
    : runner_(runner), call_(std::make_shared<Call>(this, response)) {}

// The lock is held across submit_all() so that a cancel arriving meanwhile sees the ids, and an
// output arriving meanwhile finds the response sized.
Status EmbedReactor::start(std::vector<Request> requests) {
  std::lock_guard lock(call_->mu);
  std::vector<std::shared_ptr<OutputChannel>> channels;
  for (size_t i = 0; i < requests.size(); ++i) {
    channels.push_back(std::make_shared<InputChannel>(call_, i));
    call_->response->add_embeddings();
  }
  call_->remaining = requests.size();
  Status s = runner_.submit_all(std::move(requests), std::move(channels), &call_->ids);
  if (!s.ok()) call_->response->clear_embeddings();
  return s;
}

void EmbedReactor::reject(const grpc::Status& status) {
  {
    std::lock_guard lock(call_->mu);
    call_->reactor = nullptr;
  }
  Finish(status);
}

void EmbedReactor::OnCancel() {
  std::vector<RequestId> ids;
  {
    std::lock_guard lock(call_->mu);
    if (call_->reactor == nullptr) return;  // answered already
    call_->cancelled = true;
    ids = call_->ids;
  }
  for (const RequestId& id : ids)
    runner_.abort(id);  // each then ends kAborted, and the last one finishes the call
}

void EmbedReactor::OnDone() {
  delete this;
}

}  // namespace kvserve
