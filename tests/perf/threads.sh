#!/usr/bin/env bash
# ringside builds against thin-proxy with the same number of proxy threads,
# interleaved, with what nginx spends per request beside the proxy and how
# often the proxy's threads sleep and wake (issue #19: with one thread each
# ringside kept up with thin-proxy in one run and with two it did not; its
# connections turned out to gather on one thread).
#
#   tests/perf/threads.sh                                # target/release/ringside, 2 threads
#   THREADS=1 ROUNDS=3 tests/perf/threads.sh /tmp/ringside-a target/release/ringside
#
# Each round runs thin-proxy, then each binary (headless, lb-cookie + ring),
# in front of the same three nginx backends; wrk -t2 -c64 for DURATION s
# with a sticky cookie. Per run: req/s and its ratio to the round's
# thin-proxy run, the proxy's user and system µs per request (all its
# threads, from /proc), nginx's µs per request, and the proxy's voluntary
# and involuntary context switches per request (a thread with too little to
# do sleeps and wakes: voluntary). Installs nginx and wrk when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}

# shellcheck source=tests/perf/common.sh
. tests/perf/common.sh
ringside_binaries "$@"
install_missing nginx wrk
cargo build --release --quiet --example thin-proxy

B1=19781 B2=19782 B3=19783 PORT=19790
WORK=$(mktemp -d)
PROXY=
cleanup() {
  if [ -n "$PROXY" ]; then kill "$PROXY" 2>/dev/null || true; fi
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
start_backends

# cpu PID: user and system ticks of a process (all its threads).
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
# switches PID: voluntary and involuntary context switches of all its threads.
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary/{v+=$2} /^nonvoluntary/{n+=$2} END {print v, n}'; }
nginx_ticks() { for p in $(pgrep -f "nginx.*$WORK" || true) $(pgrep -P "$(cat "$WORK/nginx.pid")" || true); do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }

# run NAME: one run against the proxy listening on $PORT with pid $PROXY.
run() {
  local name=$1 cookie before after n
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
  cookie=$(curl -s -D - -o /dev/null "http://127.0.0.1:$PORT/" | awk -F'[ ;]' 'tolower($1)=="set-cookie:"{print $2; exit}')
  before="$(cpu "$PROXY") $(switches "$PROXY") $(nginx_ticks)"
  n=$(wrk -t2 -c64 -d"${DURATION}s" -H "Cookie: $cookie" "http://127.0.0.1:$PORT/" | awk '/requests in/{print $1}')
  after="$(cpu "$PROXY") $(switches "$PROXY") $(nginx_ticks)"
  kill "$PROXY"
  wait "$PROXY" 2>/dev/null || true
  PROXY=
  # shellcheck disable=SC2086 # each figure its own argument
  python3 - "$name" "$n" "$DURATION" "${THIN_RPS:-0}" $before $after <<'PY'
import sys
name, n, secs, thin = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
u0, s0, v0, i0, g0, u1, s1, v1, i1, g1 = map(int, sys.argv[5:])
us = lambda ticks: ticks * 1e4 / n  # 100 ticks a second
rps = n / secs
ratio = f"{rps / thin:5.2f}" if thin else "    1"
print(f"{name[-28:]:28} {rps:8.0f} {ratio} {us(u1 - u0):7.2f} {us(s1 - s0):7.2f} {us(g1 - g0):7.2f} {(v1 - v0) / n:6.3f} {(i1 - i0) / n:6.3f}")
PY
}

echo "wrk -t2 -c64 -d${DURATION}s, sticky, $THREADS proxy threads, $ROUNDS rounds"
echo "run                             req/s  ÷thin user_us  sys_us nginx_us   vcsw  ivcsw"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  target/release/examples/thin-proxy --listen 127.0.0.1:$PORT --threads "$THREADS" \
    --backend 127.0.0.1:$B1 --backend 127.0.0.1:$B2 --backend 127.0.0.1:$B3 >/dev/null 2>&1 &
  PROXY=$!
  line=$(THIN_RPS=0 run thin-proxy)
  echo "$line"
  THIN_RPS=$(awk '{print $2}' <<<"$line")
  for b in "${BINS[@]}"; do
    RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf "$b" --headless --threads "$THREADS" \
      --listen 127.0.0.1:$PORT --admin 127.0.0.1:$((PORT + 1)) \
      --backend b1=127.0.0.1:$B1 --backend b2=127.0.0.1:$B2 --backend b3=127.0.0.1:$B3 >/dev/null 2>&1 &
    PROXY=$!
    THIN_RPS=$THIN_RPS run "$b"
  done
done
