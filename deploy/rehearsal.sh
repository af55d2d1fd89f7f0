#!/usr/bin/env bash
# Fleet rehearsal (not in CI; root not needed): three `polypush run` instances push a small test
# pattern to nginx-rtmp, a real Prometheus server scrapes them with the shipped
# deploy/prometheus/prometheus.yml and rules, and cutting one instance's ingest must fire
# PolypushNotStreamingInWindow for that instance, and for no other. Prints the alerts it saw.
#
#   deploy/rehearsal.sh
#
# - polypush and polyv-sim: `cargo build --release` (CARGO_TARGET_DIR is respected). polyv-sim
#   stands in for Polyv (viewer counts), so nothing leaves this machine.
# - Prometheus: the `prometheus` binary beside the promtool that scripts/promtool.sh provides
#   (Debian's package, extracted with dpkg-deb -x: no system daemon is installed or started).
# - nginx with the RTMP module (Debian nginx + libnginx-mod-rtmp; scripts/install-deps.sh): one
#   for instances 1 and 2, and one of its own for instance 3, the one whose ingest is cut.
# - The rules are the shipped ones with every `for:` shortened to $FOR (default 30s) in a copy,
#   so the whole run takes about three minutes; prometheus.yml, its 15 s scrape interval and
#   its bearer token are used as shipped (the instances get a token on loopback too).
# - At the end, every query of the dashboard (deploy/grafana/polypush-fleet.json) is run
#   against the live Prometheus ($instance = all, $__rate_interval = 1m): each must run; how
#   many return nothing (no drops, no reloads: nothing happened) is printed.
#
# Environment: FOR (shortened for:, default 30s), ALERT_TIMEOUT (seconds to wait for the
# alert after the cut, default 240), KEEP=1 keeps the work directory (logs, TSDB).
# Processes are started and stopped by their PIDs only.
set -euo pipefail

FOR="${FOR:-30s}"
ALERT_TIMEOUT="${ALERT_TIMEOUT:-240}"
KEEP="${KEEP:-0}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deploy="$repo/deploy"
module=/usr/lib/nginx/modules/ngx_rtmp_module.so

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  echo "rehearsal: $*" >&2
  exit 1
}

if ! command -v nginx >/dev/null || [ ! -f "$module" ]; then
  die "nginx with the RTMP module is needed: apt-get install nginx libnginx-mod-rtmp (scripts/install-deps.sh)"
fi
command -v python3 >/dev/null || die "python3 is needed (free ports, the Prometheus API's JSON)"
command -v curl >/dev/null || die "curl is needed"

work="$(mktemp -d /tmp/polypush-rehearsal.XXXXXX)"
pids=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then
    echo "work directory kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() { # PORT WHAT PID
  local _
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || die "$2 exited at start (logs in $work/logs)"
    sleep 0.05
  done
  die "$2 did not listen on port $1"
}

# --- Tools ---------------------------------------------------------------------------------
say "building polypush and polyv-sim (cargo build --release)"
(cd "$repo" && cargo build --release --quiet --bin polypush --bin polyv-sim) || die "cargo build failed"
bin="${CARGO_TARGET_DIR:-$repo/target}/release"
[ -x "$bin/polypush" ] || die "no $bin/polypush after the build"
promtool="$("$repo/scripts/promtool.sh")" || die "scripts/promtool.sh could not provide promtool"
prometheus="$(dirname "$promtool")/prometheus"
[ -x "$prometheus" ] || die "no prometheus server next to $promtool"
say "prometheus: $prometheus ($("$prometheus" --version 2>&1 | head -1))"
mkdir -p "$work/logs"

# --- Polyv simulator (viewer counts) -------------------------------------------------------
"$bin/polyv-sim" --listen 127.0.0.1:0 --channel 100001:rehearsal1 --channel 100002:rehearsal2 \
  --channel 100003:rehearsal3 >"$work/sim.out" 2>"$work/logs/sim.log" &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
sim="$(awk '{print $NF; exit}' "$work/sim.out")"
[ -n "$sim" ] || die "polyv-sim did not start: $(cat "$work/logs/sim.log")"

# --- Ingests -------------------------------------------------------------------------------
start_nginx() { # NAME -> sets NGINX_PORT, NGINX_PID
  local dir="$work/nginx-$1"
  mkdir -p "$dir/logs"
  NGINX_PORT="$(free_port)"
  cat >"$dir/nginx.conf" <<CONF
load_module $module;
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log info;
events { worker_connections 64; }
rtmp {
    server {
        listen 127.0.0.1:$NGINX_PORT;
        chunk_size 4096;
        application live { live on; }
    }
}
CONF
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
  NGINX_PID=$!
  pids+=("$NGINX_PID")
  wait_port "$NGINX_PORT" "nginx $1" "$NGINX_PID"
}
start_nginx shared
shared_port=$NGINX_PORT
start_nginx cut
cut_port=$NGINX_PORT
cut_pid=$NGINX_PID
say "ingests: nginx-rtmp on 127.0.0.1:$shared_port (instances 1, 2) and 127.0.0.1:$cut_port (instance 3, to be cut)"

# --- polypush instances --------------------------------------------------------------------
token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
(umask 077 && echo "$token" >"$work/status-token")
# A daily window from an hour ago to three hours from now (UTC), so the instances are inside
# a window and the schedule's next-start series exists.
win_start="$(date -u -d '-1 hour' +%H:%M)"
win_end="$(date -u -d '+3 hours' +%H:%M)"
declare -a status_ports=() instances=()
for n in 1 2 3; do
  port="$(free_port)"
  status_ports+=("$port")
  instances+=("127.0.0.1:$port")
  ingest_port=$shared_port
  [ "$n" = 3 ] && ingest_port=$cut_port
  cat >"$work/polypush-$n.toml" <<TOML
[polyv]
channel_id = "10000$n"
password = "rehearsal$n"
[polyv.endpoints]
login = "$sim"
channel = "$sim"
chat = "$sim"
api = "$sim"
[target]
url = "rtmp://127.0.0.1:$ingest_port/live/rehearsal-key-$n"
[video]
source = "test"
width = 320
height = 240
fps = 15
bitrate_kbps = 400
preset = "ultrafast"
[audio]
source = "test"
bitrate_kbps = 64
[status]
listen = "127.0.0.1:$port"
token_file = "$work/status-token"
[[schedule]]
days = ["daily"]
start = "$win_start"
end = "$win_end"
timezone = "UTC"
title = "Rehearsal $n"
TOML
  "$bin/polypush" --config "$work/polypush-$n.toml" --log-level info run >"$work/logs/polypush-$n.log" 2>&1 &
  pids+=($!)
  wait_port "$port" "polypush $n" "$!"
done
say "polypush: 3 instances, status on ${instances[*]}, stream keys rehearsal-key-1..3"

# --- Prometheus ----------------------------------------------------------------------------
prom="$work/prometheus"
mkdir -p "$prom/rules" "$prom/targets" "$prom/data"
cp "$deploy/prometheus/prometheus.yml" "$prom/prometheus.yml"
cp "$work/status-token" "$prom/polypush-status-token"
sed -E "s/^([[:space:]]*for:)[[:space:]]*[0-9]+[smh]\$/\1 $FOR/" \
  "$deploy/prometheus/rules/polypush.rules.yml" >"$prom/rules/polypush.rules.yml"
cat >"$prom/targets/rehearsal.yml" <<YAML
- targets: ["${instances[0]}", "${instances[1]}"]
  labels: {classroom: "R1", site: rehearsal}
- targets: ["${instances[2]}"]
  labels: {classroom: "R3", site: rehearsal}
YAML
"$promtool" check config "$prom/prometheus.yml" >"$work/logs/promtool.log" 2>&1 ||
  die "promtool check config failed: $(cat "$work/logs/promtool.log")"
prom_port="$(free_port)"
"$prometheus" --config.file="$prom/prometheus.yml" --storage.tsdb.path="$prom/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/logs/prometheus.log" 2>&1 &
pids+=($!)
wait_port "$prom_port" prometheus "$!"
api="http://127.0.0.1:$prom_port/api/v1"
say "prometheus on 127.0.0.1:$prom_port: shipped prometheus.yml, rules with for: $FOR"

# An instant query: prints "instance value" lines (the value of each series).
query() {
  curl -fsS --get "$api/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    print(r["metric"].get("instance", "-"), r["value"][1])'
}

# --- Wait until every instance is scraped and publishing ------------------------------------
say "waiting for Prometheus to scrape all three instances publishing"
t0=$SECONDS
until [ "$(query 'count(polypush_connected{job="polypush"} == 1)' | awk '{print $2}')" = 3 ]; do
  [ $((SECONDS - t0)) -lt 120 ] || {
    query 'up{job="polypush"}'
    die "not all instances scraped and publishing after 120 s (logs in $work/logs)"
  }
  sleep 3
done
say "all three scraped and publishing after $((SECONDS - t0)) s:"
python3 - "$api" <<'PY'
import json, sys, urllib.parse, urllib.request
api = sys.argv[1]
def q(e):
    u = api + "/query?" + urllib.parse.urlencode({"query": e})
    return {r["metric"]["instance"]: r["value"][1] for r in json.load(urllib.request.urlopen(u))["data"]["result"]}
cols = [
    ("connected", "polypush_connected"),
    ("in window", "polypush_schedule_in_window"),
    ("target kbit/s", "polypush_video_target_bitrate_bytes_per_second * 8 / 1000"),
    ("delivered kbit/s", "polypush_delivered_bitrate_bytes_per_second * 8 / 1000"),
    ("queue delay s", "polypush_queue_delay_seconds"),
    ("viewers", "polypush_viewers"),
]
states = {}
u = api + "/query?" + urllib.parse.urlencode({"query": "polypush_state == 1"})
for r in json.load(urllib.request.urlopen(u))["data"]["result"]:
    states[r["metric"]["instance"]] = r["metric"]["state"]
data = {name: q(e) for name, e in cols}
print("  %-16s %-6s %-9s %-9s %-13s %-16s %-13s %s" % ("instance", "state", "connected", "in window", "target kbit/s", "delivered kbit/s", "queue delay s", "viewers"))
for inst in sorted(states):
    vals = [data[n].get(inst, "-") for n, _ in cols]
    vals = [("%.0f" % float(v)) if i in (2, 3) and v != "-" else v for i, v in enumerate(vals)]
    print("  %-16s %-6s %-9s %-9s %-13s %-16s %-13s %s" % (inst, states[inst], *vals))
PY

# --- Cut instance 3's ingest -----------------------------------------------------------------
victim="${instances[2]}"
say "cutting the ingest of instance 3 ($victim): kill nginx PID $cut_pid"
kill "$cut_pid"
wait "$cut_pid" 2>/dev/null || true
cut_at=$SECONDS

# Polls /api/v1/alerts; prints every (alert, instance, state) the first time it shows up.
alerts_now() {
  curl -fsS "$api/alerts" | python3 -c '
import json, sys
for a in json.load(sys.stdin)["data"]["alerts"]:
    l = a["labels"]
    print("%s %s %s %s" % (l["alertname"], l.get("instance", "-"), a["state"], l.get("reason", "")))'
}
seen="$work/alerts-seen"
: >"$seen"
fired=0
while [ $((SECONDS - cut_at)) -lt "$ALERT_TIMEOUT" ]; do
  while read -r name inst state reason; do
    key="$name $inst $state $reason"
    if ! grep -qxF "$key" "$seen"; then
      echo "$key" >>"$seen"
      printf '[%s] +%3ds  %-30s %-16s %-8s %s\n' "$(date +%H:%M:%S)" $((SECONDS - cut_at)) "$name" "$inst" "$state" "$reason"
    fi
  done < <(alerts_now)
  if grep -qxF "PolypushNotStreamingInWindow $victim firing " "$seen"; then
    fired=$((SECONDS - cut_at))
    break
  fi
  sleep 5
done

echo
echo "alerts at the end (name, instance, state, severity, summary):"
curl -fsS "$api/alerts" | python3 -c '
import json, sys
alerts = json.load(sys.stdin)["data"]["alerts"]
for a in sorted(alerts, key=lambda a: (a["labels"]["alertname"], a["labels"].get("instance", ""))):
    l = a["labels"]
    print("  %-30s %-16s %-8s %-9s %s" % (l["alertname"], l.get("instance", "-"), a["state"], l.get("severity", "-"), a["annotations"].get("summary", "")))
if not alerts:
    print("  (none)")'
echo

# --- The dashboard's queries against the live Prometheus ------------------------------------
dashboard_ok=1
(python3 - "$api" "$deploy/grafana/polypush-fleet.json" <<'PY'
import json, sys, urllib.error, urllib.parse, urllib.request
api, path = sys.argv[1], sys.argv[2]
exprs = []
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "expr" and isinstance(x, str):
                exprs.append(x)
            else:
                walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(json.load(open(path)))
bad, empty = [], []
for e in exprs:
    q = e.replace("$__rate_interval", "1m").replace("$instance", ".+")
    try:
        res = json.load(urllib.request.urlopen(api + "/query?" + urllib.parse.urlencode({"query": q})))
        if not res["data"]["result"]:
            empty.append(e.splitlines()[0])
    except urllib.error.HTTPError as err:
        bad.append("%s: %s" % (e, err.read().decode()))
print("dashboard queries against this Prometheus: %d run, %d fail, %d return no series (nothing of that kind happened)" % (
    len(exprs), len(bad), len(empty)))
for e in empty:
    print("  no series: " + e)
for b in bad:
    print("  FAILED: " + b)
sys.exit(1 if bad else 0)
PY
) || dashboard_ok=0

others="$(grep -E '^PolypushNotStreamingInWindow ' "$seen" | grep -vF " $victim " || true)"
if [ "$fired" -gt 0 ] && [ -z "$others" ] && [ "$dashboard_ok" = 1 ]; then
  say "PASS: PolypushNotStreamingInWindow fired for $victim ${fired} s after its ingest was cut (for: $FOR, scrape and evaluation every 15 s); no other instance alerted"
  exit 0
fi
[ "$fired" -gt 0 ] || say "FAIL: PolypushNotStreamingInWindow did not fire for $victim within $ALERT_TIMEOUT s"
[ -z "$others" ] || say "FAIL: PolypushNotStreamingInWindow also for instances still publishing: $others"
[ "$dashboard_ok" = 1 ] || say "FAIL: a dashboard query does not run"
KEEP=1
exit 1
