#!/usr/bin/env bash
# ringside against HAProxy on the same machine, side by side, in one run.
#
#   tests/perf/compare.sh            # the full comparison (about 5 minutes)
#   tests/perf/compare.sh --quick    # a smoke run: both answer 200 and stick
#
# Both proxies sit in front of the same three nginx backends on loopback,
# with cookie persistence (HAProxy: `cookie SERVERID insert indirect nocache`,
# ringside: lb-cookie + ring), two threads each. wrk drives each with 64
# keep-alive connections, once with a fixed sticky cookie taken from a first
# response and once with no cookie (every request creates a session),
# alternating A B A B. It prints requests/s, p50, p99, peak RSS and the
# proxy's CPU time per request (user and system, from /proc) per run, the
# ratio ringside / HAProxy per pair and the median ratio; then the same
# ringside with its dashboard attached (in tmux), against headless; then
# ringside with its session table shared through Redis, against the in-memory
# table (new-session runs, where every request writes to the store).
# Installs nginx, haproxy, wrk, tmux and redis-server with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
PAIRS=${PAIRS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
[ $QUICK = 1 ] && PAIRS=1 && DURATION=2

. tests/perf/common.sh
install_missing nginx haproxy wrk tmux redis-server
cargo build --release --quiet
BIN=$PWD/target/release/ringside

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  tmux kill-session -t ringside-perf 2>/dev/null || true
  redis-cli -p $REDIS shutdown nosave >/dev/null 2>&1 || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

B1=19081 B2=19082 B3=19083 HAP=19080 RS=19180 RSA=19190 RST=19280 RSTA=19290 RSR=19480 RSRA=19490 REDIS=19479

# --- backends: nginx, a fixed small body and /health -----------------------
start_backends

# --- HAProxy 2.6 with cookie persistence, 2 threads ------------------------
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option redispatch
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAP
  default_backend be
backend be
  balance roundrobin
  cookie SERVERID insert indirect nocache httponly
  option httpchk GET /health
  server b1 127.0.0.1:$B1 cookie b1 check inter 5s
  server b2 127.0.0.1:$B2 cookie b2 check inter 5s
  server b3 127.0.0.1:$B3 cookie b3 check inter 5s
EOF
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"
HAPROXY_PID=$(cat "$WORK/haproxy.pid")
PIDS+=("$HAPROXY_PID")

# --- ringside headless, lb-cookie + ring, 2 threads -------------------------
BACKENDS=(--backend b1=127.0.0.1:$B1 --backend b2=127.0.0.1:$B2 --backend b3=127.0.0.1:$B3)
export RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf
"$BIN" --headless --threads 2 --listen 127.0.0.1:$RS --admin 127.0.0.1:$RSA "${BACKENDS[@]}" \
  >"$WORK/ringside.out" 2>"$WORK/ringside.err" &
RINGSIDE_PID=$!
PIDS+=("$RINGSIDE_PID")

wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 never answered" >&2; exit 1; }
wait_port $HAP; wait_port $RS

cookie_of() { curl -s -D - -o /dev/null "http://127.0.0.1:$1/" | awk -F'[ ;]' 'tolower($1)=="set-cookie:"{print $2; exit}'; }
HAP_COOKIE=$(cookie_of $HAP)
RS_COOKIE=$(cookie_of $RS)

# Smoke: both answer 200 and keep a cookie's client on one backend.
for port_cookie in "$HAP $HAP_COOKIE" "$RS $RS_COOKIE"; do
  set -- $port_cookie
  seen=$(for _ in 1 2 3 4 5 6; do curl -s -H "Cookie: $2" "http://127.0.0.1:$1/"; done | sort -u | wc -l)
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/")
  if [ "$code" != 200 ] || [ "$seen" != 1 ]; then echo "FAIL: port $1 answered $code, $seen backends for one cookie" >&2; exit 1; fi
done
echo "smoke: HAProxy and ringside answer 200 and keep a cookie on one backend"
[ $QUICK = 1 ] && { echo "1 passed, 0 failed"; exit 0; }

peak_rss_mb() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }

# CPU time of every thread of process $1 so far, in clock ticks: "user system".
cpu_ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{u += $14; s += $15} END {print u, s}'; }

# One wrk run against port $1 with cookie $2 (may be empty): prints
# "rps p50_ms p99_ms user_us sys_us", the last two being the CPU time the
# process $3 spent per request (or "- -" without $3).
run_wrk() {
  local port=$1 cookie=$2 pid=${3:-} out before="- -" after="- -"
  local header=()
  [ -n "$cookie" ] && header=(-H "Cookie: $cookie")
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${header[@]}" "http://127.0.0.1:$port/")
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  python3 - "$out" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import re, sys
out, before, after, hz = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), int(sys.argv[4])
def ms(v, u):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
n = int(re.search(r"(\d+) requests in", out).group(1))
lat = dict((p, ms(v, u)) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M))
if before[0] == "-":
    cpu = "- -"
else:
    cpu = " ".join(f"{(int(a) - int(b)) * 1e6 / hz / n:.2f}" for a, b in zip(after, before))
print(f"{rps:.0f} {lat['50']:.3f} {lat['99']:.3f} {cpu}")
PY
}

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%F)"
echo "wrk -t2 -c$CONNS -d${DURATION}s, $PAIRS pairs per mode, alternating HAProxy / ringside"
for mode in sticky new-session; do
  echo
  echo "== $mode"
  printf "%-6s %-9s %10s %9s %9s %9s %9s %9s\n" pair contender req/s p50_ms p99_ms rss_MB user_us sys_us
  rps_ratios=() p99_ratios=()
  for pair in $(seq "$PAIRS"); do
    hc=""; rc=""
    [ $mode = sticky ] && hc=$HAP_COOKIE && rc=$RS_COOKIE
    read -r h_rps h_p50 h_p99 h_user h_sys <<<"$(run_wrk $HAP "$hc" "$HAPROXY_PID")"
    printf "%-6s %-9s %10s %9s %9s %9s %9s %9s\n" "$pair" haproxy "$h_rps" "$h_p50" "$h_p99" "$(peak_rss_mb "$HAPROXY_PID")" "$h_user" "$h_sys"
    read -r r_rps r_p50 r_p99 r_user r_sys <<<"$(run_wrk $RS "$rc" "$RINGSIDE_PID")"
    printf "%-6s %-9s %10s %9s %9s %9s %9s %9s\n" "$pair" ringside "$r_rps" "$r_p50" "$r_p99" "$(peak_rss_mb "$RINGSIDE_PID")" "$r_user" "$r_sys"
    rps_ratios+=("$(python3 -c "print($r_rps/$h_rps)")")
    p99_ratios+=("$(python3 -c "print($r_p99/$h_p99)")")
  done
  echo "median ratio ringside/HAProxy: req/s $(median "${rps_ratios[@]}")  p99 $(median "${p99_ratios[@]}")"
  [ $mode = sticky ] && HEADLESS_STICKY=("${rps_ratios[@]}")
done

# Pairs of runs, A then B: side_by_side TITLE NAME_A PORT_A COOKIE_A NAME_B PORT_B COOKIE_B
# prints each run and the median ratio B / A of requests/s.
side_by_side() {
  local title=$1 name_a=$2 port_a=$3 cookie_a=$4 name_b=$5 port_b=$6 cookie_b=$7 ratios=()
  echo
  echo "== $title"
  printf "%-6s %-10s %10s %9s %9s\n" pair run req/s p50_ms p99_ms
  for pair in $(seq "$PAIRS"); do
    read -r a_rps a_p50 a_p99 _ <<<"$(run_wrk "$port_a" "$cookie_a")"
    printf "%-6s %-10s %10s %9s %9s\n" "$pair" "$name_a" "$a_rps" "$a_p50" "$a_p99"
    read -r b_rps b_p50 b_p99 _ <<<"$(run_wrk "$port_b" "$cookie_b")"
    printf "%-6s %-10s %10s %9s %9s\n" "$pair" "$name_b" "$b_rps" "$b_p50" "$b_p99"
    ratios+=("$(python3 -c "print($b_rps/$a_rps)")")
  done
  echo "median ratio $name_b/$name_a: req/s $(median "${ratios[@]}")"
}

# --- the dashboard attached: ringside in tmux, against headless ------------
tmux new-session -d -s ringside-perf -x 160 -y 48 \
  "RINGSIDE_COOKIE_SECRET=$RINGSIDE_COOKIE_SECRET $BIN --threads 2 --listen 127.0.0.1:$RST --admin 127.0.0.1:$RSTA ${BACKENDS[*]}"
wait_port $RST
side_by_side "dashboard attached (sticky): headless ringside, then ringside in tmux" \
  headless $RS "$RS_COOKIE" dashboard $RST "$(cookie_of $RST)"

# --- the shared session store: ringside with Redis, against in-memory -------
tmux kill-session -t ringside-perf 2>/dev/null || true
redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
"$BIN" --headless --threads 2 --listen 127.0.0.1:$RSR --admin 127.0.0.1:$RSRA "${BACKENDS[@]}" \
  --session-store redis://127.0.0.1:$REDIS >"$WORK/ringside-redis.out" 2>"$WORK/ringside-redis.err" &
PIDS+=("$!")
wait_port $RSR
side_by_side "session store (new-session: every request creates a session): in-memory, then Redis" \
  in-memory $RS "" redis $RSR ""
echo "store: $(curl -s http://127.0.0.1:$RSRA/api/stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]; print(s["state"], s["writes"], "writes,", s["dropped_writes"], "dropped,", s["errors"], "errors")')"
