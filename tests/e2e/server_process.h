// Starts the real kvserve binary on a loopback port for end-to-end tests, reads the ports it
// chose from its output, and stops it with a signal.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace kvserve::testing {

class ServerProcess {
 public:
  // `env`: variables set for the server alone (HF_ENDPOINT, HF_HOME, ...).
  explicit ServerProcess(std::vector<std::string> extra_args,
                         const std::vector<std::pair<std::string, std::string>>& env = {}) {
    std::vector<std::string> args = {KVSERVE_BINARY, "--host",         "127.0.0.1", "--metrics-host",
                                     "127.0.0.1",    "--metrics-port", "0"};
    // Any free port, unless the test names one.
    if (std::find(extra_args.begin(), extra_args.end(), "--port") == extra_args.end())
      args.insert(args.end(), {"--port", "0"});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    // The server may close a connection while the test still writes to it (a refusal before the
    // body is read, a failed TLS handshake): that must fail the write, not kill the test.
    ::signal(SIGPIPE, SIG_IGN);
    // The child's arguments and environment are built here, before fork(): between fork and exec
    // only async-signal-safe calls are allowed. Another thread of this process (a fake Hub's
    // server, gRPC's) may hold the allocator's lock at the fork, and a child that allocated (as
    // setenv does) would wait for it forever, never starting the server.
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_entries;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string_view entry(*e);
      const std::string_view name = entry.substr(0, entry.find('='));
      if (std::none_of(env.begin(), env.end(), [&](const auto& kv) { return kv.first == name; }))
        env_entries.emplace_back(entry);
    }
    for (const auto& [name, value] : env)
      env_entries.push_back(name + "=" + value);
    std::vector<char*> envp;
    for (std::string& entry : env_entries)
      envp.push_back(entry.data());
    envp.push_back(nullptr);
    int out[2];
    if (pipe(out) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      ::signal(SIGPIPE, SIG_DFL);  // the server starts as it would anywhere else
      dup2(out[1], STDOUT_FILENO);
      dup2(out[1], STDERR_FILENO);
      close(out[0]);
      close(out[1]);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    close(out[1]);
    reader_ = std::thread([this, fd = out[0]] { read_output(fd); });
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] { return port_ != 0 || exited_; }) || port_ == 0) {
      const std::string output = output_;
      lock.unlock();
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      reader_.join();
      throw std::runtime_error("kvserve did not start; output:\n" + output);
    }
  }

  ~ServerProcess() {
    if (!waited_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (reader_.joinable()) reader_.join();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return pid_; }
  int metrics_port() const { return metrics_port_; }
  // The OpenAI-compatible API's port (0 unless started with --openai-port).
  int openai_port() const { return openai_port_; }

  void signal(int sig) { kill(pid_, sig); }
  // Exit status, or -1 if it has not exited within `timeout` (then it is killed).
  int wait_exit(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        waited_ = true;
        // Its last lines may still be in the pipe: output() has them once the reader saw its end.
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, std::chrono::seconds(5), [&] { return exited_; });
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  std::string output() {
    std::lock_guard lock(mu_);
    return output_;
  }

 private:
  void read_output(int fd) {
    char buf[4096];
    ssize_t n;
    static const std::regex serving(R"(serving kvserve\.v1\.Generation on 127\.0\.0\.1:(\d+))");
    static const std::regex metrics(R"(metrics on http://127\.0\.0\.1:(\d+)/metrics)");
    static const std::regex openai(R"(OpenAI-compatible API on https?://127\.0\.0\.1:(\d+)/v1)");
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
      std::lock_guard lock(mu_);
      output_.append(buf, static_cast<size_t>(n));
      std::smatch m;
      if (metrics_port_ == 0 && std::regex_search(output_, m, metrics)) metrics_port_ = std::stoi(m[1]);
      if (openai_port_ == 0 && std::regex_search(output_, m, openai)) openai_port_ = std::stoi(m[1]);
      if (port_ == 0 && std::regex_search(output_, m, serving)) port_ = std::stoi(m[1]);
      cv_.notify_all();
    }
    close(fd);
    std::lock_guard lock(mu_);
    exited_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  bool waited_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string output_;
  int port_ = 0;
  int metrics_port_ = 0;
  int openai_port_ = 0;
  bool exited_ = false;
};

// Runs a shell command to its end: its exit status (-1 if it did not exit) and its standard output.
inline std::pair<int, std::string> run_command(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) throw std::runtime_error("popen failed: " + command);
  std::string output;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;)
    output.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

}  // namespace kvserve::testing
