#!/usr/bin/env bash
# polypush vs the ffmpeg CLI, same job, same machine, same ingest: a 720p30 test pattern
# (testsrc2) and a 440 Hz stereo tone (sine), libx264 veryfast/zerolatency at 2500 kbit/s with a
# 1 s VBV, a keyframe every 2 s, no B-frames, AAC 128 kbit/s, paced in real time and published
# to one private nginx-rtmp that records every stream. Prints CPU seconds (user+sys) and peak
# RSS of each, the ratios, and two sanity checks on the recordings.
#
#   bench/compare.sh                       # one 60 s run of each
#   DURATION=60 RUNS=3 bench/compare.sh    # medians over 3 runs of each, alternating
#   BENCH_DIR=/tmp/b bench/compare.sh      # keep the work directory (configs, logs, recordings)
#
# Goals (from the issue): polypush CPU <= the ffmpeg CLI's, polypush RSS <= 0.8x its.
# The table also goes to bench/out/compare-<date>.md. Exit status: 0 when every run of both
# succeeded (whether or not the goals are met), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION="${DURATION:-60}"
RUNS="${RUNS:-1}"
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || { echo "DURATION must be a positive integer (seconds), got '$DURATION'" >&2; exit 2; }
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -gt 0 ]] || { echo "RUNS must be a positive integer, got '$RUNS'" >&2; exit 2; }

# GNU time (not the shell keyword) for peak RSS.
TIME=/usr/bin/time
if ! command -v "$TIME" >/dev/null; then
    echo "installing GNU time (package 'time')" >&2
    if [ "$(id -u)" = 0 ]; then apt-get install -y time >&2; else sudo apt-get install -y time >&2; fi
fi
# shellcheck source=bench/common.sh
. bench/common.sh
bench_prepare bench nginx ffmpeg ffprobe cargo
mkdir -p "$work/rec" "$work/logs" "$work/tmp"
nginx_pid=""
cleanup() {
    if [ -n "$nginx_pid" ]; then kill "$nginx_pid" 2>/dev/null || true; wait "$nginx_pid" 2>/dev/null || true; fi
    if [ "$keep" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)

# One nginx-rtmp in the foreground, its own prefix and PID, recording every stream.
cat >"$work/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid $work/nginx.pid;
error_log $work/logs/nginx-error.log info;
events { worker_connections 64; }
rtmp {
    server {
        listen 127.0.0.1:$port;
        chunk_size 4096;
        application live { live on; record all; record_path $work/rec; record_unique off; }
    }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" -e "$work/logs/nginx-error.log" &
nginx_pid=$!
up=0
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
done
[ "$up" = 1 ] || { echo "nginx-rtmp did not start:" >&2; cat "$work/logs/nginx-error.log" >&2; exit 1; }

# polypush's configuration; its test sources are lavfi testsrc2 and sine (stereo), paced in real
# time, like the ffmpeg command below.
write_config() { # $1 file, $2 stream name
    cat >"$1" <<TOML
[polyv]
channel_id = "1"   # unused: [target] url is set

[target]
url = "rtmp://127.0.0.1:$port/live/$2"

[video]
source = "test"
width = 1280
height = 720
fps = 30
encoder = "libx264"
bitrate_kbps = 2500
preset = "veryfast"
profile = "high"
keyframe_interval_s = 2.0
vbv_seconds = 1.0
threads = 0

[audio]
source = "test"
sample_rate = 48000
channels = 2
bitrate_kbps = 128
TOML
}

# The same job for the ffmpeg CLI: -g/-keyint_min 60 = 2 s at 30 fps, -bufsize = 1 s of
# -maxrate, -bf 0 and -sc_threshold 0 as polypush sets them, the High profile is libx264's
# default for yuv420p.
ffmpeg_cmd() { # $1 stream name
    printf '%s\n' ffmpeg -nostdin -hide_banner -loglevel error \
        -re -f lavfi -i "testsrc2=size=1280x720:rate=30" \
        -re -f lavfi -i "sine=frequency=440:sample_rate=48000" \
        -t "$DURATION" \
        -c:v libx264 -preset veryfast -tune zerolatency -b:v 2500k -maxrate 2500k -bufsize 2500k \
        -g 60 -keyint_min 60 -sc_threshold 0 -bf 0 -pix_fmt yuv420p \
        -c:a aac -b:a 128k -ac 2 -ar 48000 \
        -f flv "rtmp://127.0.0.1:$port/live/$1"
}

results="$work/results.tsv" # tool run status cpu_s rss_kib wall_s rec_s frames video_kbps
: >"$results"

# Runs one measured command; $1 tool, $2 run, $3 stream name, rest: the command.
measure() {
    local tool=$1 run=$2 stream=$3; shift 3
    local tfile="$work/logs/$stream.time" log="$work/logs/$stream.log" status=0
    echo "run $run/$RUNS: $tool -> live/$stream (${DURATION} s)" >&2
    "$TIME" -o "$tfile" -f '%U %S %M %e' "$@" >"$log" 2>&1 </dev/null || status=$?
    if [ "$status" != 0 ]; then
        echo "  $tool exited with status $status; last lines of $log:" >&2
        tail -n 20 "$log" | sed 's/^/    /' >&2
    fi
    # The last line of the time file is ours (GNU time may put "Command exited ..." above it).
    local u=0 s=0 m=0 e=0
    if [ -s "$tfile" ]; then read -r u s m e < <(tail -n 1 "$tfile") || true; fi
    sleep 1 # let nginx close the recording
    local rec="$work/rec/$stream.flv" dur=nan frames=nan kbps=nan
    if [ -s "$rec" ]; then
        dur=$(ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$rec" 2>/dev/null || echo nan)
        frames=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets \
            -of default=nw=1:nk=1 "$rec" 2>/dev/null || echo nan)
        kbps=$(ffprobe -v error -select_streams v:0 -show_entries packet=size -of csv=p=0 "$rec" 2>/dev/null |
            awk -v d="$dur" '{b += $1} END { if (d + 0 > 0) printf "%.0f", b * 8 / d / 1000; else print "nan" }' || echo nan)
    else
        echo "  no recording at $rec" >&2
    fi
    [ -n "$dur" ] || dur=nan
    [ -n "$frames" ] || frames=nan
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$run" "$status" \
        "$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')" "$m" "$e" "$dur" "$frames" "$kbps" >>"$results"
    awk -F'\t' 'END { printf "  cpu %s s, peak RSS %.1f MiB, wall %s s, recording %s s, %s video frames, %s kbit/s\n", $4, $5 / 1024, $6, $7, $8, $9 }' "$results" >&2
    sleep 2 # let the machine settle before the next one
}

run_polypush() { # $1 run
    local stream="polypush-$1"
    write_config "$work/$stream.toml" "$stream"
    measure polypush "$1" "$stream" "$polypush" --config "$work/$stream.toml" run --duration "$DURATION"
}
run_ffmpeg() { # $1 run
    local stream="ffmpeg-$1" cmd
    mapfile -t cmd < <(ffmpeg_cmd "$stream")
    measure ffmpeg "$1" "$stream" "${cmd[@]}"
}

# One after the other (never both at once), alternating which goes first.
for run in $(seq "$RUNS"); do
    if [ $((run % 2)) = 1 ]; then run_polypush "$run"; run_ffmpeg "$run"
    else run_ffmpeg "$run"; run_polypush "$run"; fi
done

# Median of column $2 over the successful runs of tool $1 ("n/a" when there are none).
median() {
    awk -F'\t' -v t="$1" -v c="$2" '$1 == t && $3 == 0 && $c != "nan" { print $c }' "$results" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ok_runs() { awk -F'\t' -v t="$1" '$1 == t && $3 == 0' "$results" | wc -l | tr -d ' '; }
fmt() { # $1 value, $2 printf format, $3 divisor
    if [ "$1" = n/a ]; then echo n/a; else awk -v v="$1" -v f="$2" -v d="${3:-1}" 'BEGIN { printf f, v / d }'; fi
}
ratio() { # $1 / $2
    if [ "$1" = n/a ] || [ "$2" = n/a ]; then echo n/a; else awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; fi
}
goal() { # $1 ratio, $2 limit
    if [ "$1" = n/a ]; then echo "not evaluated"; elif awk -v r="$1" -v l="$2" 'BEGIN { exit !(r <= l) }'; then echo "met"; else echo "NOT met"; fi
}

p_cpu=$(median polypush 4); f_cpu=$(median ffmpeg 4)
p_rss=$(median polypush 5); f_rss=$(median ffmpeg 5)
p_wall=$(median polypush 6); f_wall=$(median ffmpeg 6)
p_rec=$(median polypush 7); f_rec=$(median ffmpeg 7)
p_fr=$(median polypush 8); f_fr=$(median ffmpeg 8)
p_kb=$(median polypush 9); f_kb=$(median ffmpeg 9)
cpu_ratio=$(ratio "$p_cpu" "$f_cpu")
rss_ratio=$(ratio "$p_rss" "$f_rss")
p_ok=$(ok_runs polypush); f_ok=$(ok_runs ffmpeg)

cpu_model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu_model" ] || cpu_model=$(LC_ALL=C lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }')
ffmpeg_version=$(ffmpeg -version | awk 'NR == 1')
polypush_version=$("$polypush" --version)
libavcodec=$(ldd "$polypush" 2>/dev/null | awk '/libavcodec/ { print $1; exit }')

mkdir -p "$root/bench/out"
stamp=$(date +%Y-%m-%d-%H%M%S)
out="$root/bench/out/compare-$stamp.md"
{
    echo "# polypush vs ffmpeg CLI ($stamp)"
    echo
    echo "720p30 testsrc2 + 440 Hz stereo sine, libx264 veryfast zerolatency 2500 kbit/s (VBV 1 s),"
    echo "keyframe 2 s, AAC 128 kbit/s, ${DURATION} s, one nginx-rtmp on 127.0.0.1; median of ${RUNS} run(s) each."
    echo
    echo "| metric                | polypush | ffmpeg CLI | ratio |"
    echo "|-----------------------|----------|------------|-------|"
    printf '| %-21s | %8s | %10s | %5s |\n' "CPU seconds (u+s)" "$(fmt "$p_cpu" %.2f)" "$(fmt "$f_cpu" %.2f)" "$cpu_ratio"
    printf '| %-21s | %8s | %10s | %5s |\n' "peak RSS (MiB)" "$(fmt "$p_rss" %.1f 1024)" "$(fmt "$f_rss" %.1f 1024)" "$rss_ratio"
    printf '| %-21s | %8s | %10s | %5s |\n' "wall seconds" "$(fmt "$p_wall" %.2f)" "$(fmt "$f_wall" %.2f)" ""
    printf '| %-21s | %8s | %10s | %5s |\n' "recording (s)" "$(fmt "$p_rec" %.2f)" "$(fmt "$f_rec" %.2f)" ""
    printf '| %-21s | %8s | %10s | %5s |\n' "video frames" "$(fmt "$p_fr" %.0f)" "$(fmt "$f_fr" %.0f)" ""
    printf '| %-21s | %8s | %10s | %5s |\n' "video kbit/s (rec.)" "$(fmt "$p_kb" %.0f)" "$(fmt "$f_kb" %.0f)" ""
    echo
    echo "- successful runs: polypush $p_ok/$RUNS, ffmpeg CLI $f_ok/$RUNS"
    echo "- goal CPU ratio <= 1.0: $(goal "$cpu_ratio" 1.0) ($cpu_ratio)"
    echo "- goal RSS ratio <= 0.8: $(goal "$rss_ratio" 0.8) ($rss_ratio)"
    echo
    echo "machine: nproc $(nproc), CPU ${cpu_model:-unknown}"
    echo "ffmpeg: $ffmpeg_version"
    echo "polypush: $polypush_version (links ${libavcodec:-libavcodec ?})"
    echo
    echo "per run (tool, run, exit status, cpu s, peak RSS KiB, wall s, recording s, video frames, video kbit/s):"
    echo
    echo '```'
    cat "$results"
    echo '```'
} | tee "$out"
echo >&2
echo "written: ${out#"$root"/}" >&2
[ "$keep" = 1 ] && echo "work directory (configs, logs, recordings): $work" >&2

[ "$p_ok" = "$RUNS" ] && [ "$f_ok" = "$RUNS" ]
