#include "bench/bench_driver.h"

#include <algorithm>
#include <limits>
#include <random>
#include <thread>
#include <utility>

namespace kvserve::bench {

LoadDriver::LoadDriver(const BenchOptions& options, const Workload& workload, CallStarter& calls)
    : options_(options), workload_(workload), calls_(calls) {}

PhaseResults LoadDriver::run_phase(uint64_t first_index, uint64_t request_limit, double duration_s) {
  std::unique_lock lock(mutex_);
  results_ = PhaseResults();
  next_index_ = first_index;
  end_index_ = request_limit > 0 ? first_index + request_limit : std::numeric_limits<uint64_t>::max();
  phase_start_ = Clock::now();
  last_finished_ = phase_start_;
  phase_end_ = duration_s > 0 ? phase_start_ + std::chrono::duration_cast<Clock::duration>(
                                                   std::chrono::duration<double>(duration_s))
                              : Clock::time_point::max();

  if (options_.mode() == LoadMode::kClosedLoop) {
    // Only the first wave starts here; each finishing call starts its successor on its callback thread.
    std::vector<uint64_t> first_wave;
    uint64_t index = 0;
    while (first_wave.size() < options_.concurrency && claim_next_locked(index))
      first_wave.push_back(index);
    lock.unlock();
    for (const uint64_t i : first_wave)
      start_call(i);
    lock.lock();
  } else {
    run_open_loop(lock);
  }
  changed_.wait(lock, [this] { return in_flight_ == 0; });
  results_.elapsed_s = std::chrono::duration<double>(last_finished_ - phase_start_).count();
  return std::move(results_);
}

void LoadDriver::run_open_loop(std::unique_lock<std::mutex>& lock) {
  // The schedule is absolute, so a late wake-up is caught up by sending at once and the mean rate holds.
  std::mt19937_64 rng(options_.seed ^ 0x6f70656e6c6f6f70ULL);
  std::exponential_distribution<double> gap_s(options_.rate);
  Clock::time_point arrival = phase_start_;
  for (;;) {
    arrival += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap_s(rng)));
    if (arrival >= phase_end_ || next_index_ >= end_index_) return;
    lock.unlock();
    std::this_thread::sleep_until(arrival);
    lock.lock();
    if (in_flight_ >= options_.max_inflight) {
      ++results_.delayed_by_cap;
      if (!changed_.wait_until(lock, phase_end_, [this] { return in_flight_ < options_.max_inflight; }))
        return;
    }
    uint64_t index = 0;
    if (!claim_next_locked(index)) return;
    lock.unlock();
    start_call(index);
    lock.lock();
  }
}

bool LoadDriver::claim_next_locked(uint64_t& index) {
  if (next_index_ >= end_index_ || Clock::now() >= phase_end_) return false;
  index = next_index_++;
  ++in_flight_;
  ++results_.sent;
  return true;
}

void LoadDriver::start_call(uint64_t index) {
  PlannedRequest planned = workload_.make(index);
  // Cutting a call at the phase's end keeps a --duration run to its duration; past it, nothing is counted.
  const auto now = Clock::now();
  const auto timeout =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.timeout_s));
  const bool run_end_first = phase_end_ != Clock::time_point::max() && phase_end_ - now < timeout;
  const auto remaining = run_end_first ? phase_end_ - now : timeout;
  const auto deadline = std::chrono::system_clock::now() +
                        std::chrono::duration_cast<std::chrono::system_clock::duration>(remaining);
  calls_.start(index, std::move(planned.request), planned.prompt_tokens, deadline, run_end_first, *this);
}

void LoadDriver::on_call_finished(RequestResult&& result) {
  // A call cut by the run's end has no successor, even when it ended a moment before phase_end_ by
  // this clock (its deadline is a system_clock time, and a read timeout may fire just short of it):
  // a successor would only be cut at once and counted unfinished too.
  const bool run_over = result.unfinished;
  std::unique_lock lock(mutex_);
  record_locked(std::move(result));
  --in_flight_;
  uint64_t index = 0;
  const bool start_successor =
      !run_over && options_.mode() == LoadMode::kClosedLoop && claim_next_locked(index);
  // Notified under the lock: once in_flight_ reaches 0 run_phase may return and the driver go away.
  if (in_flight_ == 0 || options_.mode() == LoadMode::kOpenLoop) changed_.notify_all();
  lock.unlock();
  if (start_successor) start_call(index);
}

void LoadDriver::record_locked(RequestResult&& result) {
  last_finished_ = std::max(last_finished_, result.finished_at);
  if (result.unfinished) {
    ++results_.unfinished;
    return;
  }
  if (result.code != grpc::StatusCode::OK) {
    ++results_.failed;
    const std::string name = status_code_name(result.code);
    ++results_.errors_by_code[name];
    results_.first_error_message_by_code.try_emplace(name, result.error_message);
    return;
  }
  ++results_.completed;
  results_.prompt_tokens += result.prompt_tokens;
  results_.output_tokens += result.output_tokens;
  results_.e2e_ms.push_back(result.e2e_ms);
  if (result.ttft_ms >= 0) results_.ttft_ms.push_back(result.ttft_ms);
  if (result.ttft_ms >= 0 && result.output_tokens > 1) {
    results_.tpot_ms.push_back((result.e2e_ms - result.ttft_ms) / (result.output_tokens - 1));
  }
  results_.itl_ms.insert(results_.itl_ms.end(), result.itl_ms.begin(), result.itl_ms.end());
}

}  // namespace kvserve::bench
