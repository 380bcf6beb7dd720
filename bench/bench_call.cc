#include "bench/bench_call.h"

#include <utility>

namespace kvserve::bench {
namespace {

double milliseconds(Clock::duration duration) {
  return std::chrono::duration<double, std::milli>(duration).count();
}

}  // namespace

void GenerateCall::start(kvserve::v1::Generation::Stub& stub, kvserve::v1::GenerateRequest request,
                         uint32_t prompt_tokens_sent, std::chrono::system_clock::time_point deadline,
                         bool deadline_is_run_end, CallObserver& observer) {
  auto* call = new GenerateCall(std::move(request), prompt_tokens_sent, deadline_is_run_end, observer);
  call->context_.set_deadline(deadline);
  call->result_.itl_ms.reserve(call->request_.stop().max_tokens());
  stub.async()->Generate(&call->context_, &call->request_, call);
  call->StartRead(&call->response_);
  call->sent_at_ = Clock::now();
  call->StartCall();
}

GenerateCall::GenerateCall(kvserve::v1::GenerateRequest request, uint32_t prompt_tokens_sent,
                           bool deadline_is_run_end, CallObserver& observer)
    : request_(std::move(request)), observer_(observer), deadline_is_run_end_(deadline_is_run_end) {
  result_.prompt_tokens = prompt_tokens_sent;
}

void GenerateCall::OnReadDone(bool ok) {
  if (!ok) return;  // the stream is over; OnDone follows with the status
  const auto now = Clock::now();
  const auto tokens = static_cast<uint32_t>(response_.token_ids_size());
  if (tokens > 0) {
    if (tokens_counted_ == 0) {
      result_.ttft_ms = milliseconds(now - sent_at_);
    } else {
      // A message carrying several tokens (a server that batches its writes) spreads its gap over them,
      // so ITL stays a per-token figure.
      const auto per_token = static_cast<float>(milliseconds(now - last_tokens_at_) / tokens);
      result_.itl_ms.insert(result_.itl_ms.end(), tokens, per_token);
    }
    tokens_counted_ += tokens;
    last_tokens_at_ = now;
  }
  if (response_.has_usage()) {
    has_usage_ = true;
    usage_ = response_.usage();
  }
  StartRead(&response_);
}

void GenerateCall::OnDone(const grpc::Status& status) {
  result_.finished_at = Clock::now();
  result_.e2e_ms = milliseconds(result_.finished_at - sent_at_);
  result_.code = status.error_code();
  if (!status.ok()) result_.error_message = status.error_message();
  result_.unfinished = deadline_is_run_end_ && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
  result_.output_tokens = tokens_counted_;
  if (has_usage_) {
    if (usage_.completion_tokens() > 0) result_.output_tokens = usage_.completion_tokens();
    if (usage_.prompt_tokens() > 0) result_.prompt_tokens = usage_.prompt_tokens();
  }
  observer_.on_call_finished(std::move(result_));
  delete this;
}

const char* status_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNRECOGNIZED";
  }
}

}  // namespace kvserve::bench
