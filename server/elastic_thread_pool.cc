#include "server/elastic_thread_pool.h"

#include <system_error>
#include <utility>

#include <spdlog/spdlog.h>

namespace kvserve {

ElasticThreadPool::ElasticThreadPool(size_t max_threads, std::chrono::milliseconds idle_exit)
    : max_threads_(max_threads > 0 ? max_threads : 1), idle_exit_(idle_exit) {}

ElasticThreadPool::~ElasticThreadPool() {
  shutdown();
}

void ElasticThreadPool::enqueue(std::function<void()> job) {
  std::vector<std::thread> exited;
  {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
    // Idle threads take queued jobs first; a thread is started only for a job none of them will.
    // Started under mu_ (a clone and a stack's mmap: microseconds), so that the count and the
    // map always agree with the threads there are.
    if (jobs_.size() > idle_ && running_ < max_threads_ && !shutdown_) {
      try {
        std::thread thread([this] { work(); });
        ++running_;
        // work() needs mu_ before it can end, so the thread is in the map before it could leave it.
        threads_.emplace(thread.get_id(), std::move(thread));
      } catch (const std::system_error& e) {
        // Out of threads (a container's pids limit, say): the job waits for a running thread, and
        // the next job tries again. Thrown on, it would end httplib's accept loop.
        spdlog::warn(
            "OpenAI API: cannot start a worker thread ({}); the request waits for one of the {} running",
            e.what(), running_);
      }
    }
    exited = take_exited();
  }
  job_ready_.notify_one();
  for (std::thread& thread : exited)
    thread.join();  // already out of work(): returns at once
}

void ElasticThreadPool::shutdown() {
  std::map<std::thread::id, std::thread> threads;
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    threads.swap(threads_);
    exited_.clear();
  }
  job_ready_.notify_all();
  for (auto& [id, thread] : threads)
    thread.join();
}

void ElasticThreadPool::on_idle() {
  std::vector<std::thread> exited;
  {
    std::lock_guard lock(mu_);
    exited = take_exited();
  }
  for (std::thread& thread : exited)
    thread.join();
}

size_t ElasticThreadPool::num_threads() const {
  std::lock_guard lock(mu_);
  return running_;
}

size_t ElasticThreadPool::num_idle_threads() const {
  std::lock_guard lock(mu_);
  return idle_;
}

void ElasticThreadPool::work() {
  std::unique_lock lock(mu_);
  while (true) {
    ++idle_;
    const bool woken = job_ready_.wait_for(lock, idle_exit_, [&] { return !jobs_.empty() || shutdown_; });
    --idle_;
    if (!jobs_.empty()) {
      std::function<void()> job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      job = nullptr;  // whatever it holds (a connection) goes before the thread waits again
      lock.lock();
      continue;
    }
    if (shutdown_ || !woken) break;  // nothing left to do, or idle for idle_exit_
  }
  --running_;
  if (!shutdown_) exited_.push_back(std::this_thread::get_id());
}

std::vector<std::thread> ElasticThreadPool::take_exited() {
  std::vector<std::thread> exited;
  for (const std::thread::id& id : exited_) {
    auto it = threads_.find(id);
    exited.push_back(std::move(it->second));
    threads_.erase(it);
  }
  exited_.clear();
  return exited;
}

}  // namespace kvserve
