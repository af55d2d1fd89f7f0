# Shared by the bench scripts: a private nginx-rtmp whose on_publish hook goes to a tiny HTTP
# logger, so every (re)publish is timestamped to the millisecond. Source it; it defines
# ingest_start, ingest_stop, ingest_restart and publishes_since. Processes are tracked by PID.

INGEST_DIR=""
INGEST_PORT=""
INGEST_PID=""
HOOK_PID=""

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ingest_start() {
  INGEST_DIR="${INGEST_DIR:-$(mktemp -d /tmp/polypush-ingest.XXXXXX)}"
  mkdir -p "$INGEST_DIR/rec" "$INGEST_DIR/logs"
  INGEST_PORT="${INGEST_PORT:-$(free_port)}"
  local hook_port
  hook_port=$(free_port)
  # The hook logger: prints "<epoch seconds with ms> <path>" per request, answers 200.
  python3 - "$hook_port" "$INGEST_DIR/publishes.log" <<'PY' &
import http.server, sys, time
port, log = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); body = self.rfile.read(n).decode()
        with open(log, "a") as f: f.write(f"{time.time():.3f} {self.path} {body}\n")
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
PY
  HOOK_PID=$!
  cat >"$INGEST_DIR/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
pid $INGEST_DIR/nginx.pid;
error_log $INGEST_DIR/logs/error.log info;
events { worker_connections 64; }
rtmp {
    server {
        listen 127.0.0.1:$INGEST_PORT;
        chunk_size 4096;
        application live {
            live on;
            record all;
            record_path $INGEST_DIR/rec;
            record_unique on;
            on_publish http://127.0.0.1:$hook_port/publish;
        }
    }
}
CONF
  _ingest_spawn
}

_ingest_spawn() {
  nginx -p "$INGEST_DIR" -c "$INGEST_DIR/nginx.conf" -e "$INGEST_DIR/logs/error.log" &
  INGEST_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$INGEST_PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nginx did not start on port $INGEST_PORT" >&2
  return 1
}

ingest_stop() {
  [ -n "$INGEST_PID" ] || return 0
  kill "$INGEST_PID" 2>/dev/null || true
  wait "$INGEST_PID" 2>/dev/null || true
  INGEST_PID=""
}

# Starts the ingest again; sets INGEST_BACK to the epoch time (ms precision) just before nginx
# starts, so a publisher that reconnects the instant the port opens is still counted (the
# recovery time then includes nginx's own start-up, a few ms). Not for $(...): the new PID
# must stay in this shell.
ingest_restart() {
  INGEST_BACK=$(date +%s.%3N)
  _ingest_spawn >/dev/null
}

ingest_cleanup() {
  ingest_stop
  [ -n "$HOOK_PID" ] && kill "$HOOK_PID" 2>/dev/null || true
  wait 2>/dev/null || true
}

# First publish time (epoch s) logged after $1 (epoch s), or empty.
publish_after() {
  awk -v t="$1" '$1 >= t { print $1; exit }' "$INGEST_DIR/publishes.log" 2>/dev/null
}

publish_count() { wc -l <"$INGEST_DIR/publishes.log" 2>/dev/null || echo 0; }
