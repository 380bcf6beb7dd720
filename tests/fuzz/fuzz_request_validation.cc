// A Generate request off the wire: translation (GenerationService::to_engine_request) and the
// engine's admission checks (Engine::validate), exactly the path a client's bytes take before
// anything is queued. A Status error is the expected outcome for bad requests; crashes and
// sanitizer reports are bugs, and a request both accept must really be admissible.
//
// The fixture and the admitted-request checks are request_fixture.h's, shared with
// fuzz_openai_request (the same path, reached through the OpenAI-compatible API's JSON).
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/request_fixture.h"

const char* const kvserve::fuzz::kTargetName = "fuzz_request_validation";

namespace {

// Deliberately leaked: the runner's thread must not be joined during static destruction, and
// LeakSanitizer does not report memory still reachable from a global.
const kvserve::fuzz::RequestFixture* const fixture = new kvserve::fuzz::RequestFixture;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvserve::v1::GenerateRequest wire;
  if (!wire.ParseFromArray(data, static_cast<int>(size))) return -1;
  (void)kvserve::fuzz::admit_and_check(*fixture, wire);
  return 0;
}
