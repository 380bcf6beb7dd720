#include "server/elastic_thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace kvserve {
namespace {

using namespace std::chrono_literals;

// Jobs that hold their thread until released, as a streaming request holds its worker.
class Gate {
 public:
  void pass() {
    std::unique_lock lock(mu_);
    ++entered_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return open_; });
    ++left_;
    changed_.notify_all();
  }
  void open() {
    std::lock_guard lock(mu_);
    open_ = true;
    changed_.notify_all();
  }
  // Waits (10 s at most: a sanitizer build schedules slowly) until `n` jobs have entered / left.
  bool wait_entered(int n) {
    return wait([&] { return entered_ >= n; });
  }
  bool wait_left(int n) {
    return wait([&] { return left_ >= n; });
  }
  int entered() {
    std::lock_guard lock(mu_);
    return entered_;
  }

 private:
  template <typename Predicate>
  bool wait(Predicate done) {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, 10s, done);
  }
  std::mutex mu_;
  std::condition_variable changed_;
  int entered_ = 0, left_ = 0;
  bool open_ = false;
};

TEST(ElasticThreadPool, StartsThreadsAsJobsNeedThemUpToItsBound) {
  Gate gate;  // before the pool: it outlives the jobs that wait on it
  ElasticThreadPool pool(4);
  EXPECT_EQ(pool.num_threads(), 0u);
  for (int i = 0; i < 6; ++i)
    pool.enqueue([&] { gate.pass(); });
  ASSERT_TRUE(gate.wait_entered(4));
  EXPECT_EQ(pool.num_threads(), 4u);
  // The two beyond the bound wait for a thread.
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(gate.entered(), 4);
  gate.open();
  EXPECT_TRUE(gate.wait_left(6));
  EXPECT_EQ(pool.num_threads(), 4u);
  pool.shutdown();
  EXPECT_EQ(pool.num_threads(), 0u);
}

TEST(ElasticThreadPool, AnIdleThreadTakesTheNextJobInsteadOfANewOne) {
  ElasticThreadPool pool(8);
  for (int i = 0; i < 20; ++i) {
    Gate gate;
    gate.open();
    pool.enqueue([&] { gate.pass(); });
    ASSERT_TRUE(gate.wait_left(1));
    // The job has run; its thread waits for the next one before that arrives.
    for (int spin = 0; spin < 10000 && pool.num_idle_threads() != 1; ++spin)
      std::this_thread::sleep_for(1ms);
    ASSERT_EQ(pool.num_idle_threads(), 1u);
  }
  EXPECT_EQ(pool.num_threads(), 1u);
}

TEST(ElasticThreadPool, ThreadsIdleForTheirTimeEndAndNewJobsStillRun) {
  Gate gate;
  ElasticThreadPool pool(4, 20ms);
  for (int i = 0; i < 4; ++i)
    pool.enqueue([&] { gate.pass(); });
  ASSERT_TRUE(gate.wait_entered(4));
  gate.open();
  ASSERT_TRUE(gate.wait_left(4));
  for (int i = 0; i < 1000 && pool.num_threads() > 0; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(pool.num_threads(), 0u);
  pool.on_idle();  // joins them
  // A job after they ended gets a thread.
  std::atomic<bool> ran{false};
  Gate after;
  after.open();
  pool.enqueue([&] {
    ran = true;
    after.pass();
  });
  EXPECT_TRUE(after.wait_left(1));
  EXPECT_TRUE(ran.load());
}

TEST(ElasticThreadPool, ShutdownRunsTheQueuedJobsThenJoins) {
  std::atomic<int> ran{0};
  {
    Gate gate;
    ElasticThreadPool pool(1);
    pool.enqueue([&] { gate.pass(); });
    ASSERT_TRUE(gate.wait_entered(1));
    for (int i = 0; i < 5; ++i)
      pool.enqueue([&] { ++ran; });
    std::thread opener([&] {
      std::this_thread::sleep_for(20ms);
      gate.open();
    });
    pool.shutdown();  // waits for the gated job, then runs the five queued behind it
    opener.join();
    EXPECT_EQ(ran.load(), 5);
  }  // the destructor's second shutdown() is a no-op
  EXPECT_EQ(ran.load(), 5);
}

// Many connections at once from many threads, as httplib's accept loop and a burst of clients.
TEST(ElasticThreadPool, EveryJobOfABurstRunsExactlyOnce) {
  constexpr int kJobs = 2000;
  std::atomic<int> ran{0};
  {
    ElasticThreadPool pool(16, 5ms);
    std::vector<std::thread> producers;
    for (int p = 0; p < 4; ++p)
      producers.emplace_back([&] {
        for (int i = 0; i < kJobs / 4; ++i)
          pool.enqueue([&] { ++ran; });
      });
    for (auto& t : producers)
      t.join();
    pool.shutdown();
    EXPECT_EQ(pool.num_threads(), 0u);
  }
  EXPECT_EQ(ran.load(), kJobs);
}

}  // namespace
}  // namespace kvserve
