#!/usr/bin/env bash
# What media health costs: polypush on the 720p25 test pattern (testsrc2 + a 440 Hz stereo
# tone, libx264 veryfast 2500 kbit/s) published to a private nginx-rtmp, RUNS times with
# [health] on and RUNS times off, alternating, DURATION s each. For every run it reads
# /proc/<pid> just before stopping polypush: CPU seconds (utime+stime) per wall second of the
# whole process, the same for the polypush-media-health thread alone, and the peak RSS
# (VmHWM). The video tap (one 160x90 area downscale a second) runs on the video encode thread,
# so it is only in the process total; the thread column is the analysis itself.
#
#   bench/health_cost.sh                      # 2 runs of each, 60 s
#   DURATION=30 RUNS=1 bench/health_cost.sh
#
# Goals (issue 13): analysis under 2 % of one core, RSS change under 2 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-60}"
RUNS="${RUNS:-2}"
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 5 ]] || { echo "DURATION must be an integer above 5 (seconds), got '$DURATION'" >&2; exit 2; }
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -gt 0 ]] || { echo "RUNS must be a positive integer, got '$RUNS'" >&2; exit 2; }

# shellcheck source=bench/common.sh
. bench/common.sh
bench_prepare health nginx python3 cargo
mkdir -p "$work/logs"
nginx_pid=""
cleanup() {
    if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
    if [ "$keep" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/logs/nginx-error.log info;
events { worker_connections 64; }
rtmp { server { listen 127.0.0.1:$port; chunk_size 4096; application live { live on; } } }
CONF
nginx -p "$work" -c "$work/nginx.conf" 2>"$work/logs/nginx.stderr" &
nginx_pid=$!
sleep 0.5

tick=$(getconf CLK_TCK)
# utime+stime (ticks) of a /proc stat file; the comm field may hold spaces, so cut after ')'.
ticks() { sed 's/.*) //' "$1" | awk '{print $12 + $13}'; }

run() { # $1 = true|false; prints "cpu_per_s thread_per_s hwm_kib"
    local on="$1" cfg="$work/health-$1.toml" pid t0 t1 c total thread=0 hwm
    cat >"$cfg" <<TOML
[video]
source = "test"
width = 1280
height = 720
fps = 25
bitrate_kbps = 2500
preset = "veryfast"
[audio]
source = "test"
[status]
enabled = false
[health]
enabled = $on
TOML
    "$polypush" --config "$cfg" --log-level warn run --url "rtmp://127.0.0.1:$port/live/h$on" \
        >"$work/logs/run-$on.out" 2>"$work/logs/run-$on.err" &
    pid=$!
    t0=$(date +%s.%N)
    sleep "$DURATION"
    t1=$(date +%s.%N)
    total=$(ticks "/proc/$pid/stat")
    for c in /proc/"$pid"/task/*; do
        if [ "$(cat "$c/comm")" = "polypush-media-" ]; then thread=$(ticks "$c/stat"); fi
    done
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    kill -TERM "$pid"; wait "$pid" || true
    awk -v t="$total" -v th="$thread" -v k="$tick" -v a="$t0" -v b="$t1" -v h="$hwm" \
        'BEGIN { w = b - a; printf "%.4f %.5f %d\n", t / k / w, th / k / w, h }'
}

results=()
for i in $(seq 1 "$RUNS"); do
    for on in true false; do
        echo "run $i, [health] enabled = $on, ${DURATION} s" >&2
        results+=("$on $(run "$on")")
    done
done

printf '\n| [health] | run | process CPU s/s | media-health thread CPU s/s | VmHWM MiB |\n|---|---|---|---|---|\n'
n_on=0; n_off=0
for r in "${results[@]}"; do
    read -r on cpu th hwm <<<"$r"
    if [ "$on" = true ]; then n_on=$((n_on + 1)); n=$n_on; else n_off=$((n_off + 1)); n=$n_off; fi
    printf '| %s | %d | %.4f | %.5f | %.1f |\n' "$([ "$on" = true ] && echo on || echo off)" "$n" "$cpu" "$th" "$(awk -v h="$hwm" 'BEGIN{print h/1024}')"
done
printf '%s\n' "${results[@]}" | awk '
    $1 == "true"  { con += $2; th += $3; hon += $4; n1++ }
    $1 == "false" { coff += $2; hoff += $4; n0++ }
    END {
        printf "\nmean process CPU: on %.4f, off %.4f s/s (difference %+.2f %% of one core)\n", con/n1, coff/n0, 100*(con/n1 - coff/n0)
        printf "media-health thread: %.3f %% of one core\n", 100*th/n1
        printf "mean VmHWM: on %.1f MiB, off %.1f MiB (difference %+.2f MiB)\n", hon/n1/1024, hoff/n0/1024, (hon/n1 - hoff/n0)/1024
    }'
