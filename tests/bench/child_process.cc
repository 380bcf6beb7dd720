#include "child_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

extern char** environ;

namespace kvserve::bench::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Starts argv with its stdout (and stderr too when asked) going to a pipe; returns the read end.
pid_t spawn_with_pipe(const std::vector<std::string>& argv, bool include_stderr, int& read_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  if (include_stderr) posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (error != 0) {
    close(fds[0]);
    throw std::runtime_error("cannot start " + argv[0]);
  }
  read_fd = fds[0];
  return pid;
}

// Reads what is there within the time left; false at end of file or when time ran out.
bool read_some(int fd, std::string& into, Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return false;
  pollfd ready{fd, POLLIN, 0};
  if (poll(&ready, 1, static_cast<int>(left)) <= 0) return false;
  char buffer[4096];
  const ssize_t got = read(fd, buffer, sizeof(buffer));
  if (got <= 0) return false;
  into.append(buffer, static_cast<size_t>(got));
  return true;
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::seconds limit) {
  int fd = -1;
  const pid_t pid = spawn_with_pipe(argv, true, fd);
  CommandResult result;
  const auto deadline = Clock::now() + limit;
  while (read_some(fd, result.output, deadline)) {
  }
  close(fd);
  const bool in_time = Clock::now() < deadline;
  if (!in_time) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (in_time && WIFEXITED(status)) result.exit_status = WEXITSTATUS(status);
  return result;
}

BackgroundProcess::BackgroundProcess(const std::vector<std::string>& argv) {
  pid_ = spawn_with_pipe(argv, false, stdout_fd_);
}

BackgroundProcess::~BackgroundProcess() {
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  close(stdout_fd_);
}

std::optional<std::string> BackgroundProcess::read_line(std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    const auto newline = pending_.find('\n');
    if (newline != std::string::npos) {
      std::string line = pending_.substr(0, newline);
      pending_.erase(0, newline + 1);
      return line;
    }
    if (!read_some(stdout_fd_, pending_, deadline)) return std::nullopt;
  }
}

int unused_loopback_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  close(fd);
  return ntohs(address.sin_port);
}

}  // namespace kvserve::bench::testing
