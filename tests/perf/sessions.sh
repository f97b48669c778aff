#!/usr/bin/env bash
# Peak memory with 1,000,000 live sessions: ringside headless (lb-cookie +
# ring, 2 threads) in front of three nginx backends; wrk with no cookie, so
# every request creates a session, until /api/stats counts a million (at most
# 180 s); then the process's peak RSS (VmHWM) and its RSS now.
#
#   tests/perf/sessions.sh              # a million sessions
#   SESSIONS=200000 tests/perf/sessions.sh
#
# Installs nginx and wrk with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

SESSIONS=${SESSIONS:-1000000}
. tests/perf/common.sh
install_missing nginx wrk
cargo build --release --quiet
BIN=$PWD/target/release/ringside

start_work

B1=19381 B2=19382 B3=19383 RS=19380 RSA=19390
start_backends

export RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf
"$BIN" --headless --threads 2 --listen 127.0.0.1:$RS --admin 127.0.0.1:$RSA \
  --backend b1=127.0.0.1:$B1 --backend b2=127.0.0.1:$B2 --backend b3=127.0.0.1:$B3 \
  >"$WORK/ringside.out" 2>"$WORK/ringside.err" &
RINGSIDE_PID=$!
PIDS+=("$RINGSIDE_PID")
wait_port $RS

rss_mb() { awk -v k="$2:" '$1==k{printf "%.1f", $2/1024}' "/proc/$1/status"; }
sessions() { curl -s "http://127.0.0.1:$RSA/api/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessions"])'; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
echo "before: RSS $(rss_mb $RINGSIDE_PID VmRSS) MB, $(sessions) sessions"
wrk -t2 -c64 -d180s "http://127.0.0.1:$RS/" >"$WORK/wrk.out" 2>&1 &
WRK=$!
started=$SECONDS
while kill -0 $WRK 2>/dev/null; do
  sleep 2
  n=$(sessions)
  if [ "$n" -ge "$SESSIONS" ]; then kill $WRK 2>/dev/null || true; break; fi
done
wait $WRK 2>/dev/null || true
n=$(sessions)
echo "after $((SECONDS - started)) s of wrk with no cookie: $n live sessions"
echo "peak RSS (VmHWM) $(rss_mb $RINGSIDE_PID VmHWM) MB, RSS now $(rss_mb $RINGSIDE_PID VmRSS) MB"
[ "$n" -ge "$SESSIONS" ] || { echo "FAIL: only $n sessions" >&2; exit 1; }
