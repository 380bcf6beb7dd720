// Notices HTTP clients that hang up while they wait for a reply to begin, so that their requests
// are cancelled instead of running (or waiting in the queue) for nobody. Once a reply streams, a
// gone client is noticed at the next write; before that nothing is written, and httplib (0.11)
// gives a handler no view of its connection. One thread polls every watched connection socket for
// the peer's close (POLLRDHUP), as uvicorn's disconnect does for vLLM.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace kvserve {

class HangupWatcher {
 public:
  HangupWatcher();   // starts the polling thread
  ~HangupWatcher();  // stops it; every Watch must be gone by then
  HangupWatcher(const HangupWatcher&) = delete;
  HangupWatcher& operator=(const HangupWatcher&) = delete;

  // Watches one connection socket while it lives. Its destructor returns once the thread polls
  // the socket no more and its on_hangup is not running: the caller may close the socket then.
  class Watch {
   public:
    Watch(Watch&& other) noexcept : watcher_(other.watcher_), id_(other.id_) { other.watcher_ = nullptr; }
    Watch& operator=(Watch&&) = delete;
    Watch(const Watch&) = delete;
    ~Watch();

   private:
    friend class HangupWatcher;
    Watch(HangupWatcher* watcher, uint64_t id) : watcher_(watcher), id_(id) {}
    HangupWatcher* watcher_;
    uint64_t id_;
  };

  // Runs `on_hangup` once, on the watcher's thread, when the peer of socket `fd` closes its side
  // (or the connection fails) before the returned Watch is destroyed. A peer that has already
  // closed is noticed at once. on_hangup must not block: it delays every other connection's.
  [[nodiscard]] Watch watch(int fd, std::function<void()> on_hangup);

 private:
  struct Entry {
    int fd;
    std::function<void()> on_hangup;
  };
  void run();
  void unwatch(uint64_t id);
  void wake();

  std::mutex mu_;
  std::condition_variable polling_;  // the thread took a new set of sockets into its poll
  std::map<uint64_t, Entry> entries_;
  uint64_t next_id_ = 1;
  uint64_t changes_ = 0;  // counts changes to entries_ ...
  uint64_t polled_ = 0;   // ... and how many of them the thread's poll set reflects
  bool stopping_ = false;
  int wake_fd_ = -1;  // an eventfd: a change interrupts the thread's poll
  std::thread thread_;
};

// The socket of this process connected from local_address:local_port to peer_address:peer_port
// (numeric hosts, as httplib's Request::local_addr and remote_addr spell them); -1 if none, or if
// the process's descriptors cannot be listed. It scans them (a syscall or two each), unless the
// socket is the one this thread found last, which is checked first.
int find_connection_socket(const std::string& local_address, int local_port, const std::string& peer_address,
                           int peer_port);

}  // namespace kvserve
