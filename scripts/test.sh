#!/usr/bin/env bash
# The test command: installs missing system packages, then runs the whole test suite
# (unit tests, and integration tests against the real polyv-sim and nginx-rtmp on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo test --all-targets "$@"
