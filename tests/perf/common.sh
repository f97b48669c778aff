# shellcheck shell=bash
# Shared by the perf scripts; sourced from the project root.

# install_missing TOOL...: installs with apt-get the tools not on PATH
# (nginx from Debian's nginx-light, ab from apache2-utils).
install_missing() {
  local need=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    local packages=("${need[@]/nginx/nginx-light}")
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
