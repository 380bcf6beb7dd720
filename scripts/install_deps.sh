#!/usr/bin/env bash
# Installs every system package kvserve needs to build and test, from Debian's archive, if missing
# (and, where npm is present, the npm packages the SDK client tests use).
# Safe to run again: packages already present are skipped, and apt is only touched when something is missing.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git clang-format clang libclang-rt-14-dev libomp-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libssl-dev libpcre2-dev libunistring-dev
  sentencepiece
  libopenblas-dev
  python3-grpcio python3-protobuf python3-jinja2 openssl
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#packages[@]} packages present"
else
  echo "install_deps: installing ${missing[*]}"
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# OpenAI's and Anthropic's TypeScript SDKs, the independent clients of tests/e2e/sdk_clients (the
# versions its package-lock.json pins), from npm's registry where Node.js and npm are present.
# Optional: without them those tests skip, saying why, so a failed download warns rather than
# stops the build.
sdk_dir="$(dirname "$0")/../tests/e2e/sdk_clients"
if ! command -v npm >/dev/null; then
  echo "install_deps: no npm here: the SDK client tests (tests/e2e/sdk_clients) will skip"
elif ! cmp -s "$sdk_dir/package-lock.json" "$sdk_dir/node_modules/.installed-lock.json"; then
  # (The copy of the lock file marks an install that finished, of that lock's versions.)
  echo "install_deps: installing the SDKs for tests/e2e/sdk_clients (npm ci)"
  if npm ci --prefix "$sdk_dir" --no-audit --no-fund --loglevel=error; then
    cp "$sdk_dir/package-lock.json" "$sdk_dir/node_modules/.installed-lock.json"
  else
    echo "install_deps: WARNING: npm ci failed: the SDK client tests will skip" >&2
  fi
fi
