# shellcheck shell=bash
# Shared by the perf scripts; sourced from the project root.

# install_missing TOOL...: installs with apt-get the tools not on PATH
# (nginx from Debian's nginx-light).
install_missing() {
  local need=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]/nginx/nginx-light}" >/dev/null
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
