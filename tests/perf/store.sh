#!/usr/bin/env bash
# The shared session store's cost and footprint, for each ringside binary
# given (default: this tree's release build), so that a before/after is
#
#   tests/perf/store.sh /tmp/ringside-before target/release/ringside
#
# 1. Latency: redis-server, three demo backends, balancers A and B in
#    app-cookie mode and C in lb-cookie mode, all sharing the store;
#    store_latency.py drives ROUNDS rounds from one keep-alive client (a
#    login through A, the next request through B, a sticky one through B, a
#    cookieless and a cookie request through C) and prints p50/p90/p99 in µs.
# 2. Footprint: ab sends REQUESTS cookieless requests to C (a new balancer
#    session each, 32 connections, keep-alive, at most 300 s); then Redis's
#    key count and used_memory, and C's store figures.
#
#   ROUNDS=500 REQUESTS=100000 tests/perf/store.sh     # a quick look
#   REQUESTS=0 tests/perf/store.sh A B A B A B         # latency only, alternating
#
# Installs redis-server and apache2-utils (ab) with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-2000}
REQUESTS=${REQUESTS:-1000000}
. tests/perf/common.sh
install_missing redis-server
command -v ab >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null; }
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin ringside
  set -- "$PWD/target/release/ringside"
fi

REDIS=19460 B1=19461 B2=19462 B3=19463 A=19470 B=19471 C=19472
WORK=$(mktemp -d)
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  redis-cli -p $REDIS shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
for _ in $(seq 100); do redis-cli -p $REDIS ping >/dev/null 2>&1 && break; sleep 0.1; done
stat() { curl -s "http://127.0.0.1:$1/api/stats" | python3 -c "import json,sys; s=json.load(sys.stdin)['store']; print(' '.join(f'{k}={s[k]}' for k in sys.argv[1:] if k in s))" "${@:2}"; }

export RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(redis-server --version | cut -d' ' -f1-3); $(date -u +%F)"
for BIN in "$@"; do
  echo "== $BIN"
  redis-cli -p $REDIS flushall >/dev/null
  PIDS=()
  for i in 1 2 3; do
    port=$((B1 + i - 1))
    "$BIN" demo-backend --name "api-$i" --listen "127.0.0.1:$port" >"$WORK/b$i.log" 2>&1 &
    PIDS+=($!)
  done
  BACKENDS=(--backend "api-1=127.0.0.1:$B1" --backend "api-2=127.0.0.1:$B2" --backend "api-3=127.0.0.1:$B3")
  STORE=(--session-store "redis://127.0.0.1:$REDIS")
  for lb in "A app-cookie 1" "B app-cookie 1" "C lb-cookie 2"; do
    read -r name mode threads <<<"$lb"
    port=${!name}
    "$BIN" --headless --threads "$threads" --affinity "$mode" "${STORE[@]}" "${BACKENDS[@]}" \
      --listen "127.0.0.1:$port" --admin "127.0.0.1:$((port + 10))" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    PIDS+=($!)
  done
  wait_port $A; wait_port $B; wait_port $C
  sleep 0.5
  echo "latency (µs): $(python3 tests/perf/store_latency.py 127.0.0.1:$A 127.0.0.1:$B 127.0.0.1:$C "$ROUNDS")"
  if [ "$REQUESTS" -eq 0 ]; then stop_all; continue; fi
  redis-cli -p $REDIS flushall >/dev/null
  before=$(redis-cli -p $REDIS info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
  timeout 300 ab -q -n "$REQUESTS" -c 32 -k "http://127.0.0.1:$C/" >"$WORK/ab.out" 2>&1 || true
  sleep 1
  done=$(awk '/^Complete requests:/{print $3}' "$WORK/ab.out")
  failed=$(awk '/^Failed requests:/{print $3}' "$WORK/ab.out")
  rate=$(awk '/^Requests per second:/{print $4}' "$WORK/ab.out")
  keys=$(redis-cli -p $REDIS dbsize | tr -d '\r')
  used=$(redis-cli -p $REDIS info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
  echo "flood: $done cookieless requests ($failed failed, $rate req/s) → Redis holds $keys keys, used_memory $((used / 1024)) KiB ($(((used - before) / 1024)) KiB more than empty)"
  echo "store of C: $(stat $((C + 10)) writes keys keys_max unshared waits pending dropped_writes)"
  stop_all
done
