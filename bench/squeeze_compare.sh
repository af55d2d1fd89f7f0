#!/usr/bin/env bash
# The ffmpeg CLI and polypush through the same weak-uplink squeeze, one after the other.
#
# A network namespace of the script's own holds a private nginx-rtmp (recording every stream);
# a veth pair joins it to this namespace and the host end's egress (the upload direction) is
# shaped with `tc tbf`: 100 mbit, squeezed to 1000 kbit at SQUEEZE_AT, lifted at LIFT_AT, the
# same scenario as tests/adaptation.rs. Each tool pushes a 1280x720@25 test pattern and a tone,
# libx264 veryfast zerolatency at 2500 kbit/s + AAC 128 kbit/s, for DURATION seconds. While it
# runs, the size of its recording is logged every 0.2 s; afterwards ffprobe maps those sizes to
# media timestamps, which gives how far the media at the ingest was behind real time at any
# moment. Prints a Markdown table of both side by side and writes it to
# bench/out/squeeze-<date>-<time>.md.
#
#   sudo bench/squeeze_compare.sh                     # 95 s each (about 4 min plus the build)
#   DURATION=40 SQUEEZE_AT=10 LIFT_AT=25 sudo -E bench/squeeze_compare.sh   # quicker
#   BENCH_DIR=/tmp/sq sudo -E bench/squeeze_compare.sh # keep logs, stats and recordings there
#
# Needs root (ip netns, tc); skips with a message (exit 0) without it. Exit status: 0 when both
# tools ran and their recordings could be measured, 1 otherwise.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and awk with a '.' decimal point
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION="${DURATION:-95}"
SQUEEZE_AT="${SQUEEZE_AT:-15}"
LIFT_AT="${LIFT_AT:-45}"
OPEN_RATE="${OPEN_RATE:-100mbit}"
SQUEEZE_RATE="${SQUEEZE_RATE:-1000kbit}"
OVERRUN="${OVERRUN:-120}" # how long a tool may run past DURATION before it is killed
FPS=25
VIDEO_KBPS=2500
for v in DURATION SQUEEZE_AT LIFT_AT OVERRUN; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "$v must be a whole number of seconds, got '${!v}'" >&2; exit 2; }
done
if [ "$SQUEEZE_AT" -ge "$LIFT_AT" ] || [ "$LIFT_AT" -gt "$DURATION" ]; then
    echo "need SQUEEZE_AT < LIFT_AT <= DURATION (got $SQUEEZE_AT, $LIFT_AT, $DURATION)" >&2; exit 2
fi

if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED bench/squeeze_compare.sh: needs root for ip netns and tc (try: sudo -E $0)" >&2
    exit 0
fi
# shellcheck source=bench/common.sh
. bench/common.sh
bench_prepare squeeze nginx ffmpeg ffprobe cargo ip tc python3
mkdir -p "$work/nginx/rec" "$work/nginx/logs"

# Names and a link-local /30 from the PID, as tests/common/netns.rs picks them (offset by 8 so
# the script does not take the /30 of a test running under the same PID number; a /30 already
# routed here is skipped).
ns="ppsq-$$"
host_if="ppsq$$h"
ns_if="ppsq$$n"
subnet="" host_ip="" ns_ip=""
for try in $(seq 0 63); do
    index=$((64 + ($$ * 16 + 8 + try) % 16256))
    base=$((index * 4))
    a=$((base / 256)) b=$((base % 256))
    if [ -z "$(ip -4 route show "169.254.$a.$b/30" 2>/dev/null)" ]; then
        subnet="169.254.$a.$b/30" host_ip="169.254.$a.$((b + 1))" ns_ip="169.254.$a.$((b + 2))"
        break
    fi
done
[ -n "$subnet" ] || { echo "no free link-local /30 found" >&2; exit 1; }
port=1935 # the namespace is ours: nothing else listens there

tool_pid="" nginx_pid="" ns_made=0 route_made=0 veth_made=0
stop_pid() { # $1 PID of a child of ours: SIGTERM, SIGKILL after 5 s, reaped
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    set +e
    [ -n "$tool_pid" ] && stop_pid "$tool_pid"
    [ -n "$nginx_pid" ] && stop_pid "$nginx_pid"
    [ "$veth_made" = 1 ] && ip link del "$host_if" 2>/dev/null # deletes the pair and its qdisc
    [ "$ns_made" = 1 ] && ip netns del "$ns" 2>/dev/null
    [ "$route_made" = 1 ] && ip route del unreachable "$subnet" metric 4000 2>/dev/null
    [ "$keep" = 0 ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! err=$(ip netns add "$ns" 2>&1); then
    echo "SKIPPED bench/squeeze_compare.sh: cannot create a network namespace ($err)" >&2
    exit 0
fi
ns_made=1
# Traffic for the /30 never falls back to the default route (see tests/common/netns.rs).
ip route add unreachable "$subnet" metric 4000 && route_made=1
ip link add "$host_if" type veth peer name "$ns_if" && veth_made=1
ip link set "$ns_if" netns "$ns"
ip addr add "$host_ip/30" dev "$host_if"
ip link set "$host_if" up
ip netns exec "$ns" ip addr add "$ns_ip/30" dev "$ns_if"
ip netns exec "$ns" ip link set "$ns_if" up
ip netns exec "$ns" ip link set lo up

shape() { # $1 rate: the host end's egress, i.e. what the tools upload
    tc qdisc replace dev "$host_if" root tbf rate "$1" burst 32kb latency 200ms ||
        { echo "tc qdisc replace dev $host_if root tbf rate $1 failed" >&2; exit 1; }
}
shape "$OPEN_RATE"

# nginx-rtmp in the foreground inside the namespace (`ip netns exec` execs it, so $! is
# nginx's PID), its own prefix, recording every stream.
cat >"$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log info;
events { worker_connections 64; }
rtmp {
    server {
        listen $ns_ip:$port;
        chunk_size 4096;
        application live { live on; record all; record_path $work/nginx/rec; record_unique off; }
    }
}
CONF
ip netns exec "$ns" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/logs/error.log" \
    </dev/null >/dev/null 2>"$work/nginx/logs/stderr.log" &
nginx_pid=$!
up=0
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$ns_ip/$port") 2>/dev/null; then up=1; break; fi
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.1
done
[ "$up" = 1 ] || { echo "nginx-rtmp did not start:" >&2; cat "$work/nginx/logs/stderr.log" "$work/nginx/logs/error.log" >&2; exit 1; }
url_base="rtmp://$ns_ip:$port/live"
echo "namespace $ns, ingest $url_base, shaping $host_if" >&2

# polypush: tests/common/mod.rs write_run_config at 1280x720, 2500 kbit/s, veryfast; [adapt]
# stays at its defaults (enabled). No Polyv login: the URL is given on the command line.
cat >"$work/polypush.toml" <<TOML
[polyv]
channel_id = "1"   # unused: run --url is given

[video]
source = "test"
width = 1280
height = 720
fps = $FPS
encoder = "libx264"
bitrate_kbps = $VIDEO_KBPS
preset = "veryfast"
keyframe_interval_s = 2.0
vbv_seconds = 1.0

[audio]
source = "test"
sample_rate = 48000
channels = 2
bitrate_kbps = 128
TOML

# The same job for the ffmpeg CLI; -g/-keyint_min 50 = polypush's 2 s keyframe interval at
# 25 fps, -sc_threshold 0 and -bf 0 as polypush sets them. -t goes before the output (ffmpeg
# ignores options after the last output).
ffmpeg_cmd=(ffmpeg -nostdin -hide_banner -loglevel warning
    -re -f lavfi -i "testsrc2=size=1280x720:rate=$FPS"
    -re -f lavfi -i "sine=frequency=440:sample_rate=48000"
    -c:v libx264 -preset veryfast -tune zerolatency -b:v "${VIDEO_KBPS}k" -maxrate "${VIDEO_KBPS}k" -bufsize "${VIDEO_KBPS}k"
    -g 50 -keyint_min 50 -sc_threshold 0 -bf 0 -pix_fmt yuv420p
    -c:a aac -b:a 128k -ac 2 -ar 48000
    -t "$DURATION" -f flv "$url_base/ffmpeg")
polypush_cmd=("$polypush" --config "$work/polypush.toml" --log-level info
    run --url "$url_base/polypush" --duration "$DURATION" --stats-file "$work/polypush.stats.jsonl")

now_us() { local t=$EPOCHREALTIME; echo $((10#${t%.*} * 1000000 + 10#${t#*.})); }

# Runs one tool through the squeeze. Writes $work/NAME.sizes ("µs-since-start bytes" lines),
# $work/NAME.log and $work/NAME.run (exit status, wall runtime in s, squeeze and lift times).
run_tool() { # $1 name (= stream name), rest: the command
    local name=$1; shift
    local rec="$work/nginx/rec/$name.flv" sizes="$work/$name.sizes" status=0 killed=no
    local t0 el size sq_t=nan lift_t=nan end_us
    shape "$OPEN_RATE"
    : >"$sizes"
    echo "$name: ${DURATION} s, squeeze to $SQUEEZE_RATE at ${SQUEEZE_AT} s, lifted at ${LIFT_AT} s" >&2
    t0=$(now_us)
    "$@" </dev/null >"$work/$name.log" 2>&1 &
    tool_pid=$!
    while :; do
        el=$(($(now_us) - t0))
        if [ "$sq_t" = nan ] && [ "$el" -ge $((SQUEEZE_AT * 1000000)) ]; then
            shape "$SQUEEZE_RATE"; sq_t=$el
            echo "  $(awk -v e="$el" 'BEGIN { printf "%.1f", e / 1e6 }') s: squeezed" >&2
        fi
        if [ "$lift_t" = nan ] && [ "$el" -ge $((LIFT_AT * 1000000)) ]; then
            shape "$OPEN_RATE"; lift_t=$el
            echo "  $(awk -v e="$el" 'BEGIN { printf "%.1f", e / 1e6 }') s: lifted" >&2
        fi
        size=$(stat -c %s "$rec" 2>/dev/null || echo 0)
        echo "$el $size" >>"$sizes"
        kill -0 "$tool_pid" 2>/dev/null || break
        if [ "$el" -ge $(((DURATION + OVERRUN) * 1000000)) ]; then
            echo "  still running ${OVERRUN} s past the end: stopping it" >&2
            killed=yes; stop_pid "$tool_pid"; break
        fi
        sleep 0.2
    done
    end_us=$(($(now_us) - t0))
    wait "$tool_pid" 2>/dev/null || status=$?
    tool_pid=""
    [ "$sq_t" != nan ] || shape "$OPEN_RATE" # it ended before the squeeze; nothing to undo
    [ "$lift_t" != nan ] || shape "$OPEN_RATE"
    # What the kernel still had in flight reaches nginx after the exit; keep logging a little.
    for _ in $(seq 10); do
        sleep 0.2
        echo "$(($(now_us) - t0)) $(stat -c %s "$rec" 2>/dev/null || echo 0)" >>"$sizes"
    done
    echo "$status $(awk -v e="$end_us" 'BEGIN { printf "%.1f", e / 1e6 }') $killed $sq_t $lift_t" >"$work/$name.run"
    if [ "$status" != 0 ]; then
        echo "  $name exited with status $status; last lines of its log:" >&2
        tail -n 15 "$work/$name.log" | sed 's/^/    /' >&2
    fi
    sleep 2 # let the machine settle before the next one
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Never both at once.
run_tool ffmpeg "${ffmpeg_cmd[@]}"
run_tool polypush "${polypush_cmd[@]}"

# Measures one tool's recording; prints "key value" lines.
measure() { # $1 name
    local name=$1 rec="$work/nginx/rec/$1.flv" status wall killed
    read -r status wall killed _ _ <"$work/$name.run"
    echo "status $status"
    echo "wall $wall"
    echo "killed $killed"
    if [ ! -s "$rec" ]; then
        echo "  no recording at $rec" >&2
        return
    fi
    ffprobe -v error -show_entries packet=codec_type,pts_time,duration_time,size,pos -of csv=p=0 "$rec" \
        >"$work/$name.packets.csv"
    echo "decode_errors $(ffmpeg -nostdin -v error -i "$rec" -f null - 2>&1 | wc -l | tr -d ' ')"
    # Packets in file order: codec_type,pts_time,duration_time,size,pos. The size log maps to
    # media time through the packets that had fully arrived (pos + size <= file size).
    awk -F'[ ,]' -v D="$DURATION" -v S="$SQUEEZE_AT" -v L="$LIFT_AT" -v fps="$FPS" -v W="$wall" '
        BEGIN { last5 = -1 }
        FNR == NR {
            n++; end_pos[n] = $5 + $4
            e = $2 + ($3 ~ /^[0-9.]+$/ ? $3 : 0); pts_end[n] = e
            if (e > span) span = e
            if ($1 == "video") {
                vf++; vb += $4
                if ($2 >= S && $2 < L) vsq += $4
            }
            next
        }
        { # size log: microseconds since start, bytes
            t = $1 / 1e6
            while (i < n && end_pos[i + 1] <= $2) { i++; if (pts_end[i] > media) media = pts_end[i] }
            d = t - media
            if (t <= W && d > dmax) { dmax = d; dmax_t = t }
            if (t <= S) { d_sq = d; b_sq = $2 }
            if (t <= L) { d_lift = d; b_lift = $2 }
            if (t <= D) d_end = d
            if (int(t) % 5 == 0 && int(t) != last5 && t <= D + 0.3) { last5 = int(t); printf "at %d %.1f\n", int(t), d }
        }
        END {
            printf "rec_s %.1f\nvframes %d\nlost %d\n", span, vf, D * fps - vf
            printf "vkbps_all %.0f\n", (span > 0 ? vb * 8 / span / 1000 : 0)
            printf "vkbps_sq %.0f\n", vsq * 8 / (L - S) / 1000
            printf "thru_sq %.0f\n", (b_lift - b_sq) * 8 / (L - S) / 1000
            printf "d_sq %.1f\nd_lift %.1f\nd_end %.1f\nd_max %.1f\nd_max_t %.0f\n", d_sq, d_lift, d_end, dmax, dmax_t
        }' "$work/$name.packets.csv" "$work/$name.sizes"
}

echo "measuring the recordings" >&2
measure ffmpeg >"$work/ffmpeg.m"
measure polypush >"$work/polypush.m"

# polypush's own numbers from its stats file.
python3 - "$work/polypush.stats.jsonl" "$SQUEEZE_AT" "$LIFT_AT" "$VIDEO_KBPS" >>"$work/polypush.m" <<'PY' || true
import json, sys
path, sq, lift, kbps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
lines = []
try:
    with open(path) as f:
        lines = [json.loads(l) for l in f if l.strip()]
except OSError:
    pass
g = lambda l, k: float(l.get(k) or 0)
# p95 as tests/adaptation.rs takes it. 600000 ms is the controller's cap, reported while bytes
# wait and nothing has been acknowledged for `stall_ms`: counted, and a p95 without them.
p95 = lambda v: v[min(len(v) * 95 // 100, len(v) - 1)]
delays = sorted(g(l, "queue_delay_ms") for l in lines if sq <= g(l, "t") < lift)
if delays:
    capped = [d for d in delays if d >= 600000]
    rest = [d for d in delays if d < 600000]
    print("qd_p95 %.0f" % p95(delays))
    print("qd_capped %d/%d" % (len(capped), len(delays)))
    print("qd_p95_uncapped %s" % ("%.0f" % p95(rest) if rest else "n/a"))
back = next((g(l, "t") - lift for l in lines if g(l, "t") >= lift and g(l, "target_kbps") >= 0.9 * kbps), None)
print("back %s" % ("never" if back is None else "%.1f" % back))
tgt = [g(l, "target_kbps") for l in lines if sq + 10 <= g(l, "t") < lift]
if tgt:
    print("tgt_sq_max %.0f" % max(tgt))
dl = [g(l, "delivered_kbps") for l in lines if sq <= g(l, "t") < lift]
if dl:
    print("deliv_sq %.0f" % (sum(dl) / len(dl)))
if lines:
    d = lines[-1].get("dropped") or {}
    print("dropped %s" % (",".join("%s=%s" % kv for kv in sorted(d.items())) or "none"))
    print("reconnects %s" % lines[-1].get("reconnects", 0))
for l in lines: # every 5 s, for the timeline
    t = g(l, "t")
    if abs(t - round(t / 5) * 5) < 0.5:
        print("tl %d %.0f %.0f %.0f" % (round(t / 5) * 5, g(l, "target_kbps"), g(l, "delivered_kbps"), g(l, "queue_delay_ms")))
PY

get() { # $1 tool, $2 key: the value, or n/a
    local v
    v=$(awk -v k="$2" '$1 == k { print $2; exit }' "$work/$1.m")
    echo "${v:-n/a}"
}
ran_past() { # $1 tool
    local w k
    w=$(get "$1" wall); k=$(get "$1" killed)
    if [ "$k" = yes ]; then echo "killed at +${OVERRUN} s"
    else awk -v w="$w" -v d="$DURATION" 'BEGIN { x = w - d; if (x > 1) printf "yes, +%.1f s", x; else print "no" }'; fi
}

mkdir -p "$root/bench/out"
stamp=$(date +%Y-%m-%d-%H%M%S)
out="$root/bench/out/squeeze-$stamp.md"
row() { printf '| %-56s | %16s | %16s |\n' "$1" "$2" "$3"; }
{
    echo "# ffmpeg CLI vs polypush under a squeezed uplink ($stamp)"
    echo
    echo "1280x720@$FPS testsrc2 + 440 Hz sine, libx264 veryfast zerolatency ${VIDEO_KBPS} kbit/s + AAC 128 kbit/s,"
    echo "${DURATION} s each, one after the other; uplink (tc tbf, burst 32kb, latency 200ms) $OPEN_RATE,"
    echo "$SQUEEZE_RATE from ${SQUEEZE_AT} s to ${LIFT_AT} s, then $OPEN_RATE again. Delays: wall time since the"
    echo "tool started minus the media time the ingest had received."
    echo
    row "metric" "ffmpeg CLI" "polypush"
    row "---" "---:" "---:"
    row "exit status" "$(get ffmpeg status)" "$(get polypush status)"
    row "wall runtime (s)" "$(get ffmpeg wall)" "$(get polypush wall)"
    row "still sending past ${DURATION} s" "$(ran_past ffmpeg)" "$(ran_past polypush)"
    row "delay behind real time at ${SQUEEZE_AT} s, before the squeeze (s)" "$(get ffmpeg d_sq)" "$(get polypush d_sq)"
    row "delay at ${LIFT_AT} s, end of the squeeze (s)" "$(get ffmpeg d_lift)" "$(get polypush d_lift)"
    row "max delay (s) [at s]" "$(get ffmpeg d_max) [$(get ffmpeg d_max_t)]" "$(get polypush d_max) [$(get polypush d_max_t)]"
    row "delay at ${DURATION} s, end of the run (s)" "$(get ffmpeg d_end)" "$(get polypush d_end)"
    row "recording duration (s)" "$(get ffmpeg rec_s)" "$(get polypush rec_s)"
    row "video frames in the recording (expected $((DURATION * FPS)))" "$(get ffmpeg vframes)" "$(get polypush vframes)"
    row "frames lost" "$(get ffmpeg lost)" "$(get polypush lost)"
    row "video kbit/s, media of ${SQUEEZE_AT}-${LIFT_AT} s (by pts)" "$(get ffmpeg vkbps_sq)" "$(get polypush vkbps_sq)"
    row "video kbit/s, whole recording" "$(get ffmpeg vkbps_all)" "$(get polypush vkbps_all)"
    row "ingest received kbit/s, wall ${SQUEEZE_AT}-${LIFT_AT} s" "$(get ffmpeg thru_sq)" "$(get polypush thru_sq)"
    row "decode errors (lines)" "$(get ffmpeg decode_errors)" "$(get polypush decode_errors)"
    row "queue delay p95 in the squeeze (ms, own stats)" "n/a" "$(get polypush qd_p95)"
    row "queue delay samples at the 600000 ms stall cap" "n/a" "$(get polypush qd_capped)"
    row "queue delay p95 without those (ms)" "n/a" "$(get polypush qd_p95_uncapped)"
    row "max target ${SQUEEZE_AT}+10-${LIFT_AT} s (kbit/s, own stats)" "n/a" "$(get polypush tgt_sq_max)"
    row "back to $((VIDEO_KBPS * 9 / 10)) kbit/s after the lift (s, own stats)" "n/a" "$(get polypush back)"
    row "dropped by the ring (packets, own stats)" "n/a" "$(get polypush dropped)"
    echo
    echo "Every 5 s: delay behind real time (s) of each, and polypush's target / delivered kbit/s and"
    echo "queue delay (ms) from its stats file."
    echo
    echo "| t (s) | ffmpeg delay | polypush delay | polypush target | delivered | queue ms |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for t in $(seq 0 5 "$DURATION"); do
        fd=$(awk -v t="$t" '$1 == "at" && $2 == t { print $3; exit }' "$work/ffmpeg.m")
        pd=$(awk -v t="$t" '$1 == "at" && $2 == t { print $3; exit }' "$work/polypush.m")
        tl=$(awk -v t="$t" '$1 == "tl" && $2 == t { print $3 " | " $4 " | " $5; exit }' "$work/polypush.m")
        echo "| $t | ${fd:--} | ${pd:--} | ${tl:-- | - | -} |"
    done
    echo
    echo "machine: nproc $(nproc), $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo); load average"
    echo "before the runs $load_before, after them $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "ffmpeg: $(ffmpeg -version | awk 'NR == 1')"
    echo "polypush: $("$polypush" --version)"
} | tee "$out"
echo >&2
echo "written: ${out#"$root"/}" >&2
[ "$keep" = 1 ] && echo "work directory (logs, stats, recordings, size logs): $work" >&2

ok=1
for t in ffmpeg polypush; do
    if [ "$(get "$t" status)" != 0 ] || [ "$(get "$t" vframes)" = n/a ]; then ok=0; fi
done
[ "$ok" = 1 ]
