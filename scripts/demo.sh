#!/usr/bin/env bash
# The main job on built-in defaults, offline: a test pattern through the whole polypush
# pipeline (capture -> H.264/AAC -> our FLV -> ring -> our RTMP) to a local nginx-rtmp, with
# the Polyv simulator standing in for Polyv (teacher_login gives the push address).
#
#   scripts/demo.sh              # 20 s
#   DURATION=0 scripts/demo.sh   # until Ctrl-C
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bins
bin="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
DURATION="${DURATION:-20}"

work="${DEMO_DIR:-$(mktemp -d /tmp/polypush-demo.XXXXXX)}"
mkdir -p "$work/rec" "$work/logs"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rtmp_port=$(free_port)

# nginx-rtmp in the foreground, with its own config and PID, recording everything.
cat >"$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/logs/error.log info;
events { worker_connections 64; }
rtmp {
    server {
        listen 127.0.0.1:$rtmp_port;
        chunk_size 4096;
        application live { live on; record all; record_path $work/rec; record_unique off; }
    }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -e "$work/logs/error.log" &
pids+=($!)

# The Polyv simulator; its teacher_login hands out rtmp://127.0.0.1:PORT/live/<stream key>.
"$bin/polyv-sim" --listen 127.0.0.1:0 --rtmp-base "rtmp://127.0.0.1:$rtmp_port/live/" >"$work/sim.out" 2>"$work/logs/sim.log" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
base=$(awk '{print $NF; exit}' "$work/sim.out")
[ -n "$base" ] || { echo "polyv-sim did not start:" >&2; cat "$work/logs/sim.log" >&2; exit 1; }

cat >"$work/polypush.toml" <<TOML
[polyv]
channel_id = "153884"
password = "461666"
[polyv.endpoints]
login = "$base"
channel = "$base"
chat = "$base"
api = "$base"
[video]
source = "test"
width = 1280
height = 720
fps = 25
[audio]
source = "test"
TOML

push=$("$bin/polypush" --config "$work/polypush.toml" --json login --reveal | python3 -c 'import json,sys; print(json.load(sys.stdin)["push_url"].rsplit("/",1)[1])')
# The key may carry a query (auth_key=…); nginx-rtmp names the recording after the bare key.
stream=${push%%\?*}
echo
echo "polypush demo: test pattern -> rtmp://127.0.0.1:$rtmp_port/live/${stream:0:4}*** (address from polyv-sim at $base)"
echo "  watch it:   ffplay 'rtmp://127.0.0.1:$rtmp_port/live/$push'"
echo "  recording:  $work/rec/$stream.flv (written by nginx-rtmp)"
echo "  config:     $work/polypush.toml"
echo "  status:     http://127.0.0.1:9464/ (the page: picture, audio meter, alarms), /metrics"
echo
args=(--config "$work/polypush.toml" --log-level info run)
[ "$DURATION" != 0 ] && args+=(--duration "$DURATION")
"$bin/polypush" "${args[@]}"
sleep 0.5
echo
echo "recording: $work/rec/$stream.flv"
ffprobe -v error -show_entries stream=codec_name,width,height,r_frame_rate,sample_rate:format=duration -of compact "$work/rec/$stream.flv" || true
