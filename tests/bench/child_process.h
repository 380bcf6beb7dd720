// Runs the bench binaries from tests: a long-lived server whose first line is read, or a command run to
// completion with its output captured. Both are bounded in time so a hang fails the test instead.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace kvserve::bench::testing {

struct CommandResult {
  int exit_status = -1;  // -1 when it was killed for running too long
  std::string output;    // stdout and stderr together
};

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::seconds limit);

// A child that keeps running until the object goes away (SIGTERM, then reaped).
class BackgroundProcess {
 public:
  explicit BackgroundProcess(const std::vector<std::string>& argv);
  ~BackgroundProcess();
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;

  // The next line of its stdout, or nothing if none came within `limit`.
  std::optional<std::string> read_line(std::chrono::seconds limit);

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string pending_;
};

// A loopback port nothing listens on right now (bound to port 0, then released).
int unused_loopback_port();

}  // namespace kvserve::bench::testing
