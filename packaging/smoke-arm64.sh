#!/usr/bin/env bash
# Smoke test of the cross-built arm64 polypush under user-mode emulation (qemu-aarch64-static),
# on the x86_64 build machine: `--version`, `check` on a test-pattern config, and a short
# 320x240 test-pattern push to a private nginx-rtmp whose recording ffprobe and ffmpeg must
# accept. qemu runs without -L: the arm64 loader and libraries are the multiarch ones that
# packaging/cross-arm64.sh --install put under /lib and /usr/lib/aarch64-linux-gnu.
#
#   packaging/smoke-arm64.sh
#
# Environment: POLYPUSH_ARM64_BIN (default ${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-
# gnu/release/polypush), QEMU (default qemu-aarch64-static), DURATION (push seconds, default
# 10), WIDTH/HEIGHT/FPS (default 320x240 at 15: emulated x264 keeps up with that, not with
# 720p), KEEP=1 keeps the work directory (config, logs, recording).
#
# Prints a PASS/FAIL line per step and a summary; exits 1 on a failure. Exits 0 with
# "SKIPPED: <why>" when the arm64 binary, qemu, the arm64 loader or the host tools (nginx with
# the RTMP module, ffmpeg, ffprobe, python3) are absent. See docs/cross-arm64.md.
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=aarch64-unknown-linux-gnu
BIN=${POLYPUSH_ARM64_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET/release/polypush}
QEMU=${QEMU:-qemu-aarch64-static}
DURATION=${DURATION:-10}
RTMP_MODULE=/usr/lib/nginx/modules/ngx_rtmp_module.so
LOADER=/lib/ld-linux-aarch64.so.1
WIDTH=${WIDTH:-320} HEIGHT=${HEIGHT:-240} FPS=${FPS:-15} BITRATE_KBPS=${BITRATE_KBPS:-300}

skip() {
  echo "SKIPPED: $*"
  exit 0
}

# --- what has to be there ------------------------------------------------------------------
[ -f "$BIN" ] || skip "no arm64 binary at $BIN (build it with packaging/cross-arm64.sh)"
command -v "$QEMU" >/dev/null 2>&1 ||
  skip "$QEMU not found (Debian qemu-user-static; packaging/cross-arm64.sh --install)"
[ -e "$LOADER" ] ||
  skip "$LOADER missing (libc6:arm64 via multiarch; packaging/cross-arm64.sh --install)"
if command -v file >/dev/null 2>&1 && ! file -L "$BIN" | grep -q 'ARM aarch64'; then
  skip "$BIN is not an arm64 executable: $(file -b -L "$BIN")"
fi
for tool in nginx ffmpeg ffprobe python3; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool not found (scripts/install-deps.sh)"
done
[ -f "$RTMP_MODULE" ] || skip "$RTMP_MODULE missing (libnginx-mod-rtmp; scripts/install-deps.sh)"

# qemu must find the loader and libraries by itself, as the issue asks: no -L, no prefix.
unset QEMU_LD_PREFIX
arm64() { "$QEMU" "$BIN" "$@"; }

WORK=$(mktemp -d /tmp/polypush-smoke-arm64.XXXXXX)
NGINX_PID=""
cleanup() {
  if [ -n "$NGINX_PID" ]; then
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

SUMMARY=()
FAILED=0
pass() { SUMMARY+=("PASS  $(printf '%-9s' "$1") $2"); echo "PASS  $1: $2"; }
fail() {
  SUMMARY+=("FAIL  $(printf '%-9s' "$1") $2")
  echo "FAIL  $1: $2"
  FAILED=$((FAILED + 1))
}
now() { date +%s.%N; }
secs() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$2"; }

qemu_version=$("$QEMU" --version | head -n 1)
echo "== arm64 smoke test: $BIN"
echo "   $(file -b -L "$BIN" 2>/dev/null | cut -d, -f1-2 || true)"
echo "   $qemu_version, no -L (loader $LOADER -> $(readlink -f "$LOADER"))"
echo "   host: $(uname -m), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- 1. --version ----------------------------------------------------------------------------
t0=$(now)
if out=$(arm64 --version 2>&1) && [[ "$out" == polypush\ * ]]; then
  pass "--version" "$out ($(secs "$t0" "$(now)") s)"
else
  fail "--version" "exit/output unexpected: $out"
fi

# --- 2. check --------------------------------------------------------------------------------
CFG=$WORK/polypush.toml
cat >"$CFG" <<EOF
# polypush arm64 smoke test: built-in test pattern, low resolution for emulation.
[polyv]
channel_id = "153884"
password = "461666"

[video]
source = "test"
width = $WIDTH
height = $HEIGHT
fps = $FPS
bitrate_kbps = $BITRATE_KBPS
preset = "ultrafast"

[audio]
source = "test"

[status]
enabled = false
EOF
t0=$(now)
if arm64 --config "$CFG" check >"$WORK/check.out" 2>&1 && grep -q ': OK' "$WORK/check.out"; then
  pass "check" "$(head -n 1 "$WORK/check.out" | sed "s|$WORK/||") ($(secs "$t0" "$(now)") s)"
else
  fail "check" "$(tr '\n' ' ' <"$WORK/check.out" | cut -c1-300)"
fi

# --- 3. a short push to a private nginx-rtmp -------------------------------------------------
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/rec"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/nginx/nginx.conf" <<EOF
load_module $RTMP_MODULE;
daemon off;
master_process off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log info;
events { worker_connections 64; }
rtmp {
    server {
        listen 127.0.0.1:$PORT;
        chunk_size 4096;
        application live {
            live on;
            record all;
            record_path $WORK/nginx/rec;
        }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" &
NGINX_PID=$!
up=0
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then up=1; break; fi
  kill -0 "$NGINX_PID" 2>/dev/null || break
  sleep 0.05
done
REC=$WORK/nginx/rec/arm64.flv
if [ "$up" != 1 ]; then
  fail "push" "nginx-rtmp did not start on 127.0.0.1:$PORT: $(tail -n 3 "$WORK/nginx/logs/error.log" 2>/dev/null | tr '\n' ' ')"
else
  URL=rtmp://127.0.0.1:$PORT/live/arm64
  echo "   nginx-rtmp on 127.0.0.1:$PORT (pid $NGINX_PID); pushing ${DURATION} s of ${WIDTH}x${HEIGHT}@${FPS} to $URL"
  rc=0 wall=0 cpu_user=0 cpu_sys=0
  # bash's `time`: wall clock and the CPU seconds (user, system) of qemu + polypush.
  TIMEFORMAT='%R %U %S'
  { time timeout --kill-after=10 $((DURATION * 5 + 60)) \
    "$QEMU" "$BIN" --config "$CFG" --json run --url "$URL" --duration "$DURATION" \
    >"$WORK/run.json" 2>"$WORK/run.err"; } 2>"$WORK/run.time" || rc=$?
  read -r wall cpu_user cpu_sys <"$WORK/run.time" || true
  # The recording is complete once nginx has let go of the publisher; stop nginx to be sure.
  kill "$NGINX_PID" 2>/dev/null || true
  wait "$NGINX_PID" 2>/dev/null || true
  NGINX_PID=""
  if [ "$rc" != 0 ]; then
    fail "push" "polypush run exited $rc after $wall s: $(grep -v '^\s*$' "$WORK/run.err" | tail -n 3 | tr '\n' ' ' | cut -c1-400)"
  elif ! line=$(python3 - "$WORK/run.json" "$FPS" "$DURATION" "$wall" "$cpu_user" "$cpu_sys" <<'PY'
import json, sys
path, fps, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
wall, cpu = float(sys.argv[4]), float(sys.argv[5]) + float(sys.argv[6])
s = json.load(open(path))
el, v, a = s["elapsed_s"], s["video_frames_encoded"], s["audio_frames_encoded"]
rt = v / (fps * el) if el > 0 else 0.0
print(f"elapsed {el:.1f} s, {v} video frames ({v / el:.1f} fps, realtime factor {rt:.2f}), "
      f"{a} audio frames, {s['bytes_sent']} bytes sent, {s['dropped_packets']} packets dropped, "
      f"{s['reconnects']} reconnects; wall {wall:.1f} s, CPU {cpu:.1f} s "
      f"({cpu / wall:.2f} cores)")
ok = el >= duration * 0.9 and v > 0 and a > 0 and s["bytes_sent"] > 0 and s["reconnects"] == 0
sys.exit(0 if ok else 1)
PY
  ); then
    fail "push" "${line:-no run summary on stdout: $(tr '\n' ' ' <"$WORK/run.json" | cut -c1-300)}"
  else
    pass "push" "$line"
  fi
fi

# --- 4. the recording ------------------------------------------------------------------------
if [ ! -s "$REC" ]; then
  fail "record" "no recording at $REC"
else
  if line=$(python3 - "$REC" "$DURATION" <<'PY'
import json, subprocess, sys
rec, duration = sys.argv[1], float(sys.argv[2])
probe = json.loads(subprocess.run(
    ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
     "stream=codec_type,codec_name,width,height,nb_read_packets:format=duration,size",
     "-of", "json", rec], check=True, capture_output=True, text=True).stdout)
streams = {s["codec_type"]: s for s in probe.get("streams", [])}
v, a = streams.get("video", {}), streams.get("audio", {})
dur = float(probe.get("format", {}).get("duration", 0))
print(f"{v.get('codec_name', 'no video')} {v.get('width', '?')}x{v.get('height', '?')} "
      f"({v.get('nb_read_packets', 0)} frames) + {a.get('codec_name', 'no audio')} "
      f"({a.get('nb_read_packets', 0)} packets), duration {dur:.2f} s, "
      f"{probe.get('format', {}).get('size', '?')} bytes")
ok = v.get("codec_name") == "h264" and a.get("codec_name") == "aac" and dur > min(5.0, duration / 2)
sys.exit(0 if ok else 1)
PY
  ); then
    pass "record" "$line"
  else
    fail "record" "${line:-ffprobe failed on $REC}"
  fi
  decode_rc=0
  ffmpeg -nostdin -v error -i "$REC" -f null - >"$WORK/decode.out" 2>&1 || decode_rc=$?
  if [ "$decode_rc" = 0 ] && [ ! -s "$WORK/decode.out" ]; then
    pass "decode" "ffmpeg -v error -i arm64.flv -f null -: exit 0, no output"
  else
    fail "decode" "ffmpeg exit $decode_rc: $(head -n 5 "$WORK/decode.out" | tr '\n' ' ' | cut -c1-400)"
  fi
fi

# --- summary ---------------------------------------------------------------------------------
echo
echo "== arm64 smoke summary ($qemu_version)"
printf '%s\n' "${SUMMARY[@]}"
if [ "$FAILED" -gt 0 ]; then
  echo "polypush stderr (last lines):"
  tail -n 15 "$WORK/run.err" 2>/dev/null | sed 's/^/  /' || true
  echo "RESULT: FAIL ($FAILED of ${#SUMMARY[@]} steps failed)"
  exit 1
fi
echo "RESULT: PASS (${#SUMMARY[@]} steps)"
