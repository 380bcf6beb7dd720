// The OpenAI-compatible API's worker threads: cpp-httplib serves each connection on one thread for
// as long as its request lasts (a stream holds it for minutes), so the server can hold only as many
// requests at once as it has threads. httplib's own pool starts all of them up front; this one
// starts a thread when a connection finds none idle, up to a bound, and ends threads idle for a
// while, so the bound can be what the engine can hold (running and queued) at little cost.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace kvserve {

class ElasticThreadPool : public httplib::TaskQueue {
 public:
  explicit ElasticThreadPool(size_t max_threads,
                             std::chrono::milliseconds idle_exit = std::chrono::seconds(60));
  ~ElasticThreadPool() override;  // shutdown(), if not done yet
  ElasticThreadPool(const ElasticThreadPool&) = delete;
  ElasticThreadPool& operator=(const ElasticThreadPool&) = delete;

  // Runs `job` on an idle thread, or a new one while fewer than max_threads run; otherwise it waits
  // for a thread to finish its job. Not after shutdown() (httplib stops accepting first).
  void enqueue(std::function<void()> job) override;
  // Runs the jobs still queued, then ends and joins every thread.
  void shutdown() override;
  // Joins the threads that ended idle (httplib calls it while no connection arrives, given an idle
  // interval), so that their stacks go back after a burst, not only at the next connection.
  void on_idle() override;

  size_t num_threads() const;       // running now, busy or idle
  size_t num_idle_threads() const;  // of them, waiting for a job

 private:
  void work();
  std::vector<std::thread> take_exited();  // under mu_: the threads that have ended, to join

  const size_t max_threads_;
  const std::chrono::milliseconds idle_exit_;
  mutable std::mutex mu_;
  std::condition_variable job_ready_;
  std::deque<std::function<void()>> jobs_;
  size_t running_ = 0;  // threads in work()
  size_t idle_ = 0;     // of them, waiting for a job
  bool shutdown_ = false;
  std::map<std::thread::id, std::thread> threads_;  // every thread not yet joined
  std::vector<std::thread::id> exited_;             // of them, those out of work()
};

}  // namespace kvserve
