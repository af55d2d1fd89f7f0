#!/usr/bin/env bash
# Soak: polypush pushes a test pattern for MINUTES minutes while the ingest is killed and
# restarted RESTARTS times at even intervals. Prints recoveries, reconnect times
# (min/median/max), and polypush's RSS and open file descriptors at start and end.
# Not part of CI.
#
#   MINUTES=30 RESTARTS=20 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES="${MINUTES:-10}"
RESTARTS="${RESTARTS:-10}"
DOWN="${DOWN:-2}"
cargo build --release --bin polypush >&2
bin="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)"
# shellcheck source=bench/ingest.sh
. bench/ingest.sh
work=$(mktemp -d /tmp/polypush-soak.XXXXXX)
trap 'kill "${pid:-}" 2>/dev/null || true; ingest_cleanup' EXIT
ingest_start
cat >"$work/pp.toml" <<TOML
[polyv]
channel_id = "1"
[target]
url = "rtmp://127.0.0.1:$INGEST_PORT/live/soak"
[video]
source = "test"
width = 640
height = 360
fps = 25
bitrate_kbps = 800
preset = "ultrafast"
[audio]
source = "test"
TOML
"$bin/polypush" --config "$work/pp.toml" --log-level info run >"$work/polypush.log" 2>&1 &
pid=$!
sleep 5
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss0=$(rss "$pid"); fd0=$(fds "$pid")
interval=$(( MINUTES * 60 / RESTARTS ))
recoveries=0; times=()
for i in $(seq "$RESTARTS"); do
  sleep $(( interval - DOWN > 1 ? interval - DOWN : 1 ))
  ingest_stop; sleep "$DOWN"; ingest_restart; back=$INGEST_BACK
  for _ in $(seq 300); do
    t=$(publish_after "$back"); [ -n "$t" ] && break; sleep 0.1
  done
  if [ -n "$t" ]; then recoveries=$((recoveries + 1)); times+=("$(python3 -c "print(f'{$t - $back:.3f}')")"); fi
  echo "restart $i: ${times[-1]:-no recovery}" >&2
done
rss1=$(rss "$pid"); fd1=$(fds "$pid")
kill -INT "$pid"; wait "$pid" || true
stats=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {if (NR) printf "%.3f / %.3f / %.3f", a[1], a[int((NR+1)/2)], a[NR]; else print "-"}')
echo
echo "| soak | value |"
echo "|---|---|"
echo "| duration | $MINUTES min, $RESTARTS ingest restarts (down ${DOWN} s each) |"
echo "| recoveries | $recoveries / $RESTARTS |"
echo "| reconnect after restart, s (min / median / max) | $stats |"
echo "| RSS start → end (KiB) | $rss0 → $rss1 |"
echo "| open fds start → end | $fd0 → $fd1 |"
