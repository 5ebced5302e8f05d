#!/usr/bin/env bash
# volley's test command: installs the native stack if missing, then runs every test of
# the workspace (unit, integration and conformance tests).
#   deploy/test.sh [extra cargo test arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deploy/setup.sh
# The process tests start the built binaries.
cargo build --workspace --release --bins
cargo test --workspace --release "$@"
