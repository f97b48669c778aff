# shellcheck shell=bash
# Shared by the perf scripts; sourced from the project root.

# install_missing TOOL...: installs with apt-get the tools not on PATH
# (nginx from Debian's nginx-light, ab from apache2-utils, perf from
# linux-perf).
install_missing() {
  local need=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    local packages=("${need[@]/nginx/nginx-light}")
    packages=("${packages[@]/#perf/linux-perf}")
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]/#ab/apache2-utils}" >/dev/null
  fi
}

# start_backends: three nginx backends on loopback ports $B1, $B2 and $B3,
# each answering a fixed small body (also on /health), one worker process, no
# access log; pid and logs under $WORK.
start_backends() {
  cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$B1; location / { return 200 "Backend Server b1\n"; } }
  server { listen 127.0.0.1:$B2; location / { return 200 "Backend Server b2\n"; } }
  server { listen 127.0.0.1:$B3; location / { return 200 "Backend Server b3\n"; } }
}
CONF
  nginx -c "$WORK/nginx.conf"
}

# haproxy_config PORT [check]: HAProxy 2.6 in front of the three backends on
# PORT, as compare.sh measures it: 2 threads, `cookie SERVERID insert
# indirect nocache httponly`, `option forwardfor`, `http-reuse always`,
# round-robin; with `check`, health checks on /health every 5 s.
haproxy_config() {
  local check="" chk=""
  if [ "${2:-}" = check ]; then check="  option httpchk GET /health"; chk=" check inter 5s"; fi
  cat <<EOF
global
  nbthread 2
  maxconn 4000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option redispatch
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:$1
  default_backend be
backend be
  balance roundrobin
  cookie SERVERID insert indirect nocache httponly
$check
  server b1 127.0.0.1:$B1 cookie b1$chk
  server b2 127.0.0.1:$B2 cookie b2$chk
  server b3 127.0.0.1:$B3 cookie b3$chk
EOF
}

# ringside_binaries ARG...: the ringside builds named, or
# target/release/ringside, in BINS; exits if one is not an executable.
ringside_binaries() {
  BINS=("$@")
  [ ${#BINS[@]} -eq 0 ] && BINS=(target/release/ringside)
  local b
  for b in "${BINS[@]}"; do
    [ -x "$b" ] || { echo "not an executable: $b (cargo build --release first)" >&2; exit 2; }
  done
}

# wait_port PORT: waits up to 10 s for an HTTP answer on PORT; exits if none.
wait_port() {
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  echo "port $1 never answered" >&2
  exit 1
}

# cookie_of PORT: the first cookie (name=value) a fresh request to PORT is given.
cookie_of() { curl -s -D - -o /dev/null "http://127.0.0.1:$1/" | awk -F'[ ;]' 'tolower($1)=="set-cookie:"{print $2; exit}'; }

# start_work: a scratch directory in WORK; on exit the processes in PIDS
# and the nginx backends are stopped and WORK is removed.
start_work() {
  WORK=$(mktemp -d)
  PIDS=()
  trap stop_work EXIT
}
stop_work() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
