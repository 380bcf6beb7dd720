// Drives the load: keeps N requests in flight (closed loop) or sends them on a Poisson schedule (open
// loop), and gathers each call's result.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench/bench_call.h"
#include "bench/bench_options.h"
#include "bench/bench_workload.h"

namespace kvserve::bench {

// Everything one phase measured; latencies of successful requests only.
struct PhaseResults {
  uint64_t sent = 0;
  uint64_t completed = 0;       // status OK
  uint64_t failed = 0;          // any other status, except...
  uint64_t unfinished = 0;      // ...requests cut by the end of a --duration run
  uint64_t delayed_by_cap = 0;  // open loop: sent late because --max-inflight were in flight
  std::map<std::string, uint64_t> errors_by_code;
  std::map<std::string, std::string> first_error_message_by_code;
  uint64_t prompt_tokens = 0;
  uint64_t output_tokens = 0;
  std::vector<double> ttft_ms;
  std::vector<double> tpot_ms;
  std::vector<double> e2e_ms;
  std::vector<float> itl_ms;
  double elapsed_s = 0;  // first send to last result
};

class LoadDriver final : private CallObserver {
 public:
  // `calls` must outlive the driver.
  LoadDriver(const BenchOptions& options, const Workload& workload, CallStarter& calls);

  // Sends requests first_index, first_index + 1, ... until `request_limit` were sent (0 = no limit) or
  // `duration_s` passed (0 = no limit), whichever comes first, and returns once every call is done.
  PhaseResults run_phase(uint64_t first_index, uint64_t request_limit, double duration_s);

 private:
  void on_call_finished(RequestResult&& result) override;
  // Under the lock: whether another request may start now, and if so claims its index.
  bool claim_next_locked(uint64_t& index);
  void start_call(uint64_t index);
  void record_locked(RequestResult&& result);
  void run_open_loop(std::unique_lock<std::mutex>& lock);

  const BenchOptions options_;
  const Workload& workload_;
  CallStarter& calls_;

  // Shared with the gRPC callback threads.
  std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t next_index_ = 0;
  uint64_t end_index_ = 0;  // exclusive; UINT64_MAX when only time limits the phase
  Clock::time_point phase_start_;
  Clock::time_point phase_end_;  // Clock::time_point::max() when only the count limits it
  Clock::time_point last_finished_;
  uint64_t in_flight_ = 0;
  PhaseResults results_;
};

}  // namespace kvserve::bench
