// What the HTTP APIs' request readers share (server/openai_request.cc, openai_responses.cc,
// anthropic_messages.cc): refusals that name the request's field, and fields read with null as
// absent, as these APIs' clients send null for "not set".
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "engine/status.h"

namespace kvserve::request_fields {

// INVALID_ARGUMENT: "<field>: <what>", the field named as the client spelled it.
inline Status invalid(const std::string& field, const std::string& what) {
  return Status::InvalidArgument(field + ": " + what);
}

// A member of `object` that is present and not null; null otherwise.
inline const nlohmann::ordered_json* find(const nlohmann::ordered_json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace kvserve::request_fields
