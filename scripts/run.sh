#!/usr/bin/env bash
# run.sh [KVSERVE FLAGS...]: installs what is missing, builds, and runs the server (by default on
# the tiny model compiled into it), then sends one demo request with kvserve-client so you can see
# text stream back. The server keeps serving until Ctrl-C (SIGINT), which drains it gracefully.
# KVSERVE_PORT picks the gRPC port (default 50051); `scripts/run.sh --help` lists the server flags.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh >&2
preset=$(scripts/build.sh)
bin="build/$preset/server"
port=${KVSERVE_PORT:-50051}

if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then exec "$bin/kvserve" --help; fi

"$bin/kvserve" --port "$port" "$@" &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server' INT TERM

echo "--- demo request: kvserve-client --target 127.0.0.1:$port 'Once upon a time' ---" >&2
"$bin/kvserve-client" --target "127.0.0.1:$port" --wait-ready 60 --max-tokens 32 "Once upon a time" ||
  echo "(the demo request failed; the server log above says why)" >&2
echo "--- kvserve is serving on port $port; press Ctrl-C to stop ---" >&2
wait $server
