#include "server/hangup_watcher.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <system_error>
#include <utility>
#include <vector>

namespace kvserve {

HangupWatcher::HangupWatcher() {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "HangupWatcher: eventfd");
  thread_ = std::thread([this] { run(); });
}

HangupWatcher::~HangupWatcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake();
  thread_.join();
  close(wake_fd_);
}

HangupWatcher::Watch::~Watch() {
  if (watcher_) watcher_->unwatch(id_);
}

HangupWatcher::Watch HangupWatcher::watch(int fd, std::function<void()> on_hangup) {
  uint64_t id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    entries_.emplace(id, Entry{fd, std::move(on_hangup)});
    ++changes_;
  }
  wake();
  return Watch(this, id);
}

void HangupWatcher::unwatch(uint64_t id) {
  std::unique_lock lock(mu_);
  entries_.erase(id);  // absent when its hang-up was reported
  const uint64_t change = ++changes_;
  wake();
  // Once the thread has rebuilt its poll set past this change, it polls the socket no more, and a
  // hang-up callback it was running has returned (callbacks run before the set is rebuilt).
  polling_.wait(lock, [&] { return polled_ >= change || stopping_; });
}

void HangupWatcher::wake() {
  const uint64_t one = 1;
  // Fails only when the counter is saturated, and then the thread is woken anyway.
  [[maybe_unused]] const ssize_t written = write(wake_fd_, &one, sizeof(one));
}

void HangupWatcher::run() {
  std::vector<pollfd> fds;
  std::vector<uint64_t> ids;  // ids[i] watches fds[i]; fds[0] is the wake-up eventfd
  std::unique_lock lock(mu_);
  while (!stopping_) {
    fds.assign(1, pollfd{wake_fd_, POLLIN, 0});
    ids.assign(1, 0);
    for (const auto& [id, entry] : entries_) {
      // Only the close is asked for: POLLIN would report every byte a keep-alive client sends
      // early, and the thread would spin on it. POLLHUP and POLLERR come whatever is asked.
      fds.push_back(pollfd{entry.fd, POLLRDHUP, 0});
      ids.push_back(id);
    }
    polled_ = changes_;
    polling_.notify_all();
    lock.unlock();
    const int ready = poll(fds.data(), fds.size(), -1);
    const int poll_error = ready < 0 ? errno : 0;
    if (poll_error != 0 && poll_error != EINTR) {
      // ENOMEM for the poll set: try again, not at once.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    lock.lock();
    if (ready < 0) continue;
    if (fds[0].revents & POLLIN) {
      uint64_t count;
      [[maybe_unused]] const ssize_t read_bytes = read(wake_fd_, &count, sizeof(count));
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))) continue;
      const auto it = entries_.find(ids[i]);
      if (it == entries_.end()) continue;  // unwatched while this poll ran
      std::function<void()> on_hangup = std::move(it->second.on_hangup);
      entries_.erase(it);
      ++changes_;
      lock.unlock();
      on_hangup();
      lock.lock();
    }
  }
  polling_.notify_all();
}

namespace {

// The port of an IP socket address; -1 for another family.
int port_of(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  if (address.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  return -1;
}

// Whether a socket address is `host`, spelled as httplib spells one.
bool has_host(const sockaddr_storage& address, socklen_t length, const std::string& host) {
  char spelled[NI_MAXHOST];
  return getnameinfo(reinterpret_cast<const sockaddr*>(&address), length, spelled, sizeof(spelled), nullptr,
                     0, NI_NUMERICHOST) == 0 &&
         host == spelled;
}

// Whether `fd` is the socket connected from local_address:local_port to peer_address:peer_port.
// Every server-side connection shares the listener's local port, so the peer's port is what
// rules nearly all of them out; the hosts, slower to spell, are compared last.
bool is_connection_socket(int fd, const std::string& local_address, int local_port,
                          const std::string& peer_address, int peer_port) {
  sockaddr_storage local{}, peer{};
  socklen_t local_length = sizeof(local), peer_length = sizeof(peer);
  // Not a socket (ENOTSOCK), not an IP one, or not connected: not it.
  return getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) == 0 &&
         port_of(local) == local_port &&
         getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) == 0 &&
         port_of(peer) == peer_port && has_host(peer, peer_length, peer_address) &&
         has_host(local, local_length, local_address);
}

}  // namespace

int find_connection_socket(const std::string& local_address, int local_port, const std::string& peer_address,
                           int peer_port) {
  // An HTTP worker thread serves one connection at a time, request after request: the socket it
  // found last is checked first, so that a kept-alive connection's later requests skip the scan
  // (a syscall or two for each of the process's descriptors: a millisecond at 3000 of them).
  thread_local int last_found = -1;
  if (last_found >= 0 && is_connection_socket(last_found, local_address, local_port, peer_address, peer_port))
    return last_found;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  const int own = dirfd(dir);
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const int fd = static_cast<int>(std::strtol(entry->d_name, &end, 10));
    if (end == entry->d_name || *end != '\0' || fd == own) continue;
    if (is_connection_socket(fd, local_address, local_port, peer_address, peer_port)) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  if (found >= 0) last_found = found;
  return found;
}

}  // namespace kvserve
