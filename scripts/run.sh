#!/usr/bin/env bash
# run.sh [ARGS...]: installs what is missing, builds, and runs the main job with ARGS.
# Until the gRPC server lands, the main job is offline generation on the built-in model
# (kvserve-offline --help lists the options).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install_deps.sh >&2
preset=$(scripts/build.sh)
exec "build/$preset/server/kvserve-offline" "$@"
