#include "server/generate_stream.h"

#include <deque>
#include <utility>

namespace kvserve {
namespace {

v1::FinishReason to_wire(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kAborted:
      return v1::FINISH_REASON_ABORTED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void set_logprob(TokenId token, float logprob, const std::vector<std::pair<TokenId, float>>& alternatives,
                 v1::TokenLogprob* out) {
  out->set_token_id(static_cast<uint32_t>(token));
  out->set_logprob(logprob);
  for (const auto& [id, alternative] : alternatives) {
    v1::TopLogprob* top = out->add_top();
    top->set_token_id(static_cast<uint32_t>(id));
    top->set_logprob(alternative);
  }
}

}  // namespace

StreamWriter::StreamWriter() : thread_([this] { run(); }) {}

StreamWriter::~StreamWriter() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void StreamWriter::schedule(std::shared_ptr<Flushable> stream) {
  {
    std::lock_guard lock(mu_);
    ready_.push_back(std::move(stream));
  }
  wake_.notify_one();
}

void StreamWriter::run() {
  std::vector<std::shared_ptr<Flushable>> batch;
  while (true) {
    {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stop_ || !ready_.empty(); });
      if (ready_.empty()) return;  // stopping, nothing left
      batch.swap(ready_);
    }
    for (auto& stream : batch)
      stream->flush();
    batch.clear();
  }
}

// The call's state, shared with the runner's channels (which may outlive the reactor) and the
// writer thread. Everything below `mu` is guarded by it.
struct GenerateReactor::Stream : StreamWriter::Flushable, std::enable_shared_from_this<Stream> {
  Stream(GenerateReactor* r, StreamWriter& w, std::string id)
      : reactor(r), writer(w), client_id(std::move(id)) {}

  // Engine thread: queue the output, O(1); the writer thread (or the completion of the write in
  // flight) sends it.
  void on_output(uint32_t index, StepOutput output) {
    std::unique_lock lock(mu);
    if (!reactor || cancelled || finish_called) return;
    std::vector<StepOutput>& queue = pending[index];
    if (queue.empty()) ready.push_back(index);
    queue.push_back(std::move(output));
    if (writing || flush_scheduled) return;
    flush_scheduled = true;
    lock.unlock();
    writer.schedule(shared_from_this());
  }

  // Writer thread.
  void flush() override {
    std::unique_lock lock(mu);
    flush_scheduled = false;
    if (writing || ready.empty() || !reactor || cancelled || finish_called) return;
    start_write_locked(lock);
  }

  bool all_written() const { return num_choices > 0 && num_choices_written == num_choices; }

  // Merges everything pending for the next ready choice into `response` and starts writing it;
  // releases the lock first, since gRPC may run the completion inline.
  void start_write_locked(std::unique_lock<std::mutex>& lock) {
    const uint32_t index = ready.front();
    ready.pop_front();
    outputs.swap(pending[index]);  // pending[index] takes the empty scratch vector
    response.Clear();
    response.set_request_id(client_id);
    response.set_index(index);
    if (reasoning_started) response.set_reasoning_started(true);
    std::string text;
    // A choice's first message carries the usage so far too: the prompt's counts are known once it
    // is computed, and clients show them (an Anthropic stream's message_start) before the end.
    if (!usage_sent[index] && !outputs.empty()) {
      const StepOutput& latest = outputs.back();
      v1::Usage* usage = response.mutable_usage();
      usage->set_prompt_tokens(static_cast<uint32_t>(latest.num_prompt_tokens));
      usage->set_completion_tokens(static_cast<uint32_t>(latest.num_output_tokens));
      usage->set_cached_prompt_tokens(static_cast<uint32_t>(latest.num_cached_prompt_tokens));
      usage_sent[index] = true;
    }
    for (const StepOutput& out : outputs) {
      for (TokenId id : out.prompt_token_ids)
        response.add_prompt_token_ids(static_cast<uint32_t>(id));
      for (const SampledToken& scored : out.prompt_logprobs)
        set_logprob(scored.token, scored.logprob, scored.top_logprobs, response.add_prompt_logprobs());
      if (out.token >= 0) {
        response.add_token_ids(static_cast<uint32_t>(out.token));
        set_logprob(out.token, out.logprob, out.top_logprobs, response.add_logprobs());
      }
      text += out.text;
      if (out.finish != FinishReason::kNone) {
        response.set_finish_reason(to_wire(out.finish));
        response.set_stop_string(out.stop);
        v1::Usage* usage = response.mutable_usage();
        usage->set_prompt_tokens(static_cast<uint32_t>(out.num_prompt_tokens));
        usage->set_completion_tokens(static_cast<uint32_t>(out.num_output_tokens));
        usage->set_cached_prompt_tokens(static_cast<uint32_t>(out.num_cached_prompt_tokens));
        ++num_choices_written;
        if (out.finish == FinishReason::kAborted) aborted_by_server = true;
      }
    }
    outputs.clear();
    response.set_text(std::move(text));
    writing = true;
    GenerateReactor* r = reactor;
    lock.unlock();
    r->StartWrite(&response);
  }

  std::mutex mu;
  GenerateReactor* reactor;  // null once gRPC is done with the call
  StreamWriter& writer;
  bool flush_scheduled = false;  // queued on the writer, which will start the next write
  std::string client_id;
  std::vector<RequestId> internal_ids;  // one per choice
  size_t num_choices = 0;               // set once submitted
  size_t num_choices_written = 0;       // choices whose final message is out (or going out)
  // Outputs not yet written, per choice, and the choices that have some, in the order their
  // first unwritten output arrived (each at most once): a write costs what its message holds,
  // however many choices the call has.
  std::vector<std::vector<StepOutput>> pending;
  std::vector<bool> usage_sent;  // per choice: its first message (with the usage so far) went out
  std::deque<uint32_t> ready;
  std::vector<StepOutput> outputs;  // the outputs of the message being built
  v1::GenerateResponse response;    // the message being written
  bool writing = false;
  // The engine ended a choice (shutdown) rather than the client: the call then ends UNAVAILABLE,
  // which clients and balancers retry, not OK, which they take as complete.
  bool aborted_by_server = false;
  bool reasoning_started = false;  // set on every message
  bool cancelled = false;
  bool finish_called = false;
};

// The runner's channel for one choice: tags its outputs with the choice's index.
struct GenerateReactor::ChoiceChannel : OutputChannel {
  ChoiceChannel(std::shared_ptr<Stream> s, uint32_t i) : stream(std::move(s)), index(i) {}
  void on_output(StepOutput output) override { stream->on_output(index, std::move(output)); }
  std::shared_ptr<Stream> stream;
  uint32_t index;
};

GenerateReactor::GenerateReactor(EngineRunner& runner, StreamWriter& writer, std::string client_id)
    : runner_(runner), stream_(std::make_shared<Stream>(this, writer, std::move(client_id))) {}

// The stream's lock is held across submit_all() so that a cancel arriving meanwhile sees the ids,
// and an output arriving meanwhile waits for `pending` to be sized.
Status GenerateReactor::start(std::vector<Request> requests, bool reasoning_started) {
  std::lock_guard lock(stream_->mu);
  stream_->reasoning_started = reasoning_started;
  std::vector<std::shared_ptr<OutputChannel>> channels;
  for (size_t i = 0; i < requests.size(); ++i)
    channels.push_back(std::make_shared<ChoiceChannel>(stream_, static_cast<uint32_t>(i)));
  stream_->pending.resize(requests.size());
  stream_->usage_sent.resize(requests.size());
  Status s = runner_.submit_all(std::move(requests), std::move(channels), &stream_->internal_ids);
  if (s.ok()) stream_->num_choices = stream_->internal_ids.size();
  return s;
}

void GenerateReactor::reject(const grpc::Status& status) {
  {
    std::lock_guard lock(stream_->mu);
    stream_->finish_called = true;
  }
  Finish(status);  // never under the lock: gRPC may run OnDone, which deletes this, right away
}

void GenerateReactor::OnWriteDone(bool ok) {
  std::unique_lock lock(stream_->mu);
  stream_->writing = false;
  if (!ok || stream_->cancelled) {
    // A write that failed means the client is gone, whether or not OnCancel says so too.
    abort_unfinished_locked();
    finish_locked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
  } else if (stream_->all_written()) {
    finish_locked(lock,
                  stream_->aborted_by_server
                      ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                     "the server shut down before this request finished; retry elsewhere")
                      : grpc::Status::OK);
  } else if (!stream_->ready.empty()) {
    stream_->start_write_locked(lock);
  }
}

void GenerateReactor::OnCancel() {
  std::unique_lock lock(stream_->mu);
  stream_->cancelled = true;
  abort_unfinished_locked();
  if (!stream_->writing)
    finish_locked(lock, grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
}

void GenerateReactor::OnDone() {
  {
    std::lock_guard lock(stream_->mu);
    stream_->reactor = nullptr;
  }
  delete this;
}

// Choices already finished are unknown to the runner by now, which ignores them, as it ignores a
// second abort of the same id.
void GenerateReactor::abort_unfinished_locked() {
  if (stream_->all_written()) return;
  for (const RequestId& id : stream_->internal_ids)
    runner_.abort(id);
}

void GenerateReactor::finish_locked(std::unique_lock<std::mutex>& lock, const grpc::Status& status) {
  if (stream_->finish_called) return;
  stream_->finish_called = true;
  lock.unlock();
  Finish(status);
}

std::vector<Request> expand_choices(Request request, uint32_t n) {
  std::vector<Request> choices;
  if (n <= 1) {
    choices.push_back(std::move(request));
    return choices;
  }
  choices.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    Request choice = request;
    choice.id = request.id + "/" + std::to_string(i);
    if (request.sampling.seed) choice.sampling.seed = *request.sampling.seed + i;  // wraps, as uint64
    // The prompt is scored once, by choice 0; the others may then take it from the prefix cache.
    if (i > 0) choice.sampling.prompt_logprobs = -1;
    choices.push_back(std::move(choice));
  }
  return choices;
}

}  // namespace kvserve
