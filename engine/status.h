// A small status type for errors that cross module boundaries (engine -> server). The codes map
// one-to-one onto the gRPC status codes the server returns, so the message written here is the one
// the client reads: it should say what to change.
#pragma once

#include <string>
#include <utility>

namespace kvserve {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the request can never be served as sent
  kNotFound,            // unknown request id
  kResourceExhausted,   // too much load right now; retry later
  kUnavailable,         // the engine is shutting down
  kFailedPrecondition,  // the server is not set up for this kind of request (no chat template, say)
  kInternal,
};

class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) { return {StatusCode::kInvalidArgument, std::move(msg)}; }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status ResourceExhausted(std::string msg) {
    return {StatusCode::kResourceExhausted, std::move(msg)};
  }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Status(StatusCode code, std::string msg) : code_(code), message_(std::move(msg)) {}
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

}  // namespace kvserve
