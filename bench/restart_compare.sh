#!/usr/bin/env bash
# Kill-and-restart comparison: polypush vs the ffmpeg CLI vs ffmpeg's fifo muxer with
# attempt_recovery, each pushing a 640x360 test pattern to a private nginx-rtmp that is killed
# and restarted CYCLES times (down DOWN seconds each). Prints, per contender, how long after
# the ingest came back it published again (from nginx's on_publish hook, ms precision) and
# whether the process survived.
#
#   bench/restart_compare.sh            # CYCLES=3 DOWN=2
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES="${CYCLES:-3}"
DOWN="${DOWN:-2}"
UP="${UP:-8}"
cargo build --release --bin polypush >&2
bin="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
# shellcheck source=bench/ingest.sh
. bench/ingest.sh
work=$(mktemp -d /tmp/polypush-restart.XXXXXX)
trap 'kill "${pid:-}" 2>/dev/null || true; ingest_cleanup' EXIT

now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }

contender_cmd() { # name url
  local x264=(-c:v libx264 -preset veryfast -tune zerolatency -b:v 1000k -maxrate 1000k -bufsize 1000k -g 50 -keyint_min 50 -sc_threshold 0 -bf 0 -pix_fmt yuv420p -c:a aac -b:a 128k -ac 2 -ar 48000)
  local inputs=(-nostdin -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=25 -re -f lavfi -i sine=frequency=440:sample_rate=48000)
  case "$1" in
    polypush)
      cat >"$work/pp.toml" <<TOML
[polyv]
channel_id = "1"
[target]
url = "$2"
[video]
source = "test"
width = 640
height = 360
fps = 25
bitrate_kbps = 1000
[audio]
source = "test"
TOML
      echo "$bin/polypush --config $work/pp.toml run" ;;
    ffmpeg) echo "ffmpeg ${inputs[*]} ${x264[*]} -f flv $2" ;;
    ffmpeg-fifo) echo "ffmpeg ${inputs[*]} ${x264[*]} -map 0:v -map 1:a -f fifo -fifo_format flv -drop_pkts_on_overflow 1 -attempt_recovery 1 -recover_any_error 1 -restart_with_keyframe 1 $2" ;;
  esac
}

results=()
for who in polypush ffmpeg ffmpeg-fifo; do
  INGEST_DIR="" INGEST_PORT=""
  ingest_start
  url="rtmp://127.0.0.1:$INGEST_PORT/live/$who"
  # shellcheck disable=SC2086
  $(contender_cmd "$who" "$url") >"$work/$who.log" 2>&1 &
  pid=$!
  times=()
  for c in $(seq "$CYCLES"); do
    sleep "$UP"
    ingest_stop
    sleep "$DOWN"
    ingest_restart; back=$INGEST_BACK
    t=""
    for _ in $(seq 200); do  # up to 20 s
      t=$(publish_after "$back")
      [ -n "$t" ] && break
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if [ -n "$t" ]; then
      times+=("$(python3 -c "print(f'{$t - $back:.2f}')")")
    elif kill -0 "$pid" 2>/dev/null; then
      times+=(">20")
    else
      times+=("exited")
    fi
    echo "$who cycle $c: ${times[-1]}" >&2
  done
  alive=no; kill -0 "$pid" 2>/dev/null && alive=yes
  kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  ingest_cleanup
  results+=("| $who | ${times[*]} | $alive |")
done

echo
echo "ingest killed and restarted $CYCLES times (down ${DOWN} s, up ${UP} s); seconds from the ingest accepting connections again to the next publish:"
echo
echo "| contender | re-publish after restart (s), per cycle | still running at the end |"
echo "|---|---|---|"
printf '%s\n' "${results[@]}"
