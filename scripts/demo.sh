#!/usr/bin/env bash
# The main job on built-in defaults, offline: starts the Polyv simulator on loopback, logs in
# to it with polypush like a classroom box would, and prints the push address.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bins
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d)
sim_pid=""
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The simulator prints "polyv-sim listening on http://127.0.0.1:PORT" first.
"$bin"/polyv-sim --listen 127.0.0.1:0 >"$work/sim.out" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 100); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
base=$(awk '{print $NF; exit}' "$work/sim.out")
[ -n "$base" ] || { echo "polyv-sim did not start:" >&2; cat "$work/sim.log" >&2; exit 1; }

cat >"$work/polypush.toml" <<TOML
[polyv]
channel_id = "153884"
password = "461666"
app_id = "simappid01"
app_secret = "simsecret0123456789abcdefghijklm"
[polyv.endpoints]
login = "$base"
channel = "$base"
chat = "$base"
api = "$base"
TOML

echo "== polyv-sim at $base; config $work/polypush.toml"
set -x
"$bin"/polypush --config "$work/polypush.toml" check
"$bin"/polypush --config "$work/polypush.toml" login
"$bin"/polypush --config "$work/polypush.toml" channel status
