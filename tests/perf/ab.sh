#!/usr/bin/env bash
# A/B two builds of ringside side by side: both run headless (lb-cookie +
# ring, 2 threads) in front of the same three nginx backends; wrk (2 threads,
# 64 keep-alive connections, a sticky cookie) drives A then B, PAIRS times;
# each run prints req/s, p99 and the proxy's own CPU per request (user and
# system µs, all its threads, from /proc). How the README's "tried and
# measured" figures were taken.
#
#   cp target/release/ringside /tmp/ringside-a   # before the change
#   cargo build --release                        # after it
#   tests/perf/ab.sh /tmp/ringside-a target/release/ringside
#   PAIRS=6 DURATION=10 NEW_SESSIONS=1 tests/perf/ab.sh A B   # no cookie
#   SUBSCRIBERS=64 tests/perf/ab.sh A B   # each with 64 /api/events streams
#
# Installs nginx and wrk with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ $# -ne 2 ] || [ ! -x "$1" ] || [ ! -x "$2" ]; then
  echo "usage: tests/perf/ab.sh BINARY_A BINARY_B" >&2
  exit 2
fi
A=$(realpath "$1") B=$(realpath "$2")
PAIRS=${PAIRS:-4}
DURATION=${DURATION:-5}
. tests/perf/common.sh
install_missing nginx wrk

start_work

B1=19481 B2=19482 B3=19483
start_backends
export RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf
start() { # start BINARY PORT: prints the pid
  "$1" --headless --threads 2 --listen "127.0.0.1:$2" --admin "127.0.0.1:$(($2 + 100))" \
    --backend b1=127.0.0.1:$B1 --backend b2=127.0.0.1:$B2 --backend b3=127.0.0.1:$B3 \
    >"$WORK/$2.out" 2>"$WORK/$2.err" &
  echo $!
}
PA=$(start "$A" 19501); PIDS+=("$PA")
PB=$(start "$B" 19502); PIDS+=("$PB")
wait_port 19501; wait_port 19502
CA=$(cookie_of 19501) CB=$(cookie_of 19502)
for port in 19501 19502; do
  for _ in $(seq "${SUBSCRIBERS:-0}"); do
    curl -s -N "http://127.0.0.1:$((port + 100))/api/events" >/dev/null &
    PIDS+=("$!")
  done
done
cpu_ticks() { cat /proc/"$1"/task/*/stat | awk '{u += $14; s += $15} END {print u, s}'; }
hz=$(getconf CLK_TCK)

echo "A: $A"
echo "B: $B"
echo "wrk -t2 -c64 -d${DURATION}s, $PAIRS pairs, $([ -n "${NEW_SESSIONS:-}" ] && echo "no cookie" || echo "sticky cookie"), ${SUBSCRIBERS:-0} event subscribers each"
printf '%-5s %-4s %9s %8s %8s %8s\n' pair run 'req/s' p99_ms user_us sys_us
for i in $(seq "$PAIRS"); do
  for v in A B; do
    if [ $v = A ]; then port=19501 pid=$PA c=$CA; else port=19502 pid=$PB c=$CB; fi
    header=()
    [ -z "${NEW_SESSIONS:-}" ] && header=(-H "Cookie: $c")
    read -r u1 s1 < <(cpu_ticks "$pid")
    out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "${header[@]}" "http://127.0.0.1:$port/")
    read -r u2 s2 < <(cpu_ticks "$pid")
    echo "$out" | awk -v pair="$i" -v v=$v -v du=$((u2 - u1)) -v ds=$((s2 - s1)) -v hz="$hz" '
      /requests in/ {n = $1}
      /Requests\/sec/ {r = $2}
      $1 == "99%" {p = $2; if (p ~ /us$/) p = p / 1000; else if (p ~ /ms$/) p = p + 0; else p = p * 1000}
      END {printf "%-5s %-4s %9.0f %8.2f %8.2f %8.2f\n", pair, v, r, p, du * 1e6 / hz / n, ds * 1e6 / hz / n}'
  done
done
