#!/usr/bin/env bash
# ringside against HAProxy and against a speed-of-light hyper proxy, side by
# side on the same machine, in one run.
#
#   tests/perf/compare.sh                     # the full comparison (about 8 minutes)
#   tests/perf/compare.sh --quick             # every section once, 2 s runs (about 1 minute)
#   PAIRS=5 DURATION=8 CONNS=64 tests/perf/compare.sh
#
# Three contenders sit in front of the same three nginx backends on loopback,
# two threads each, each inserting a sticky cookie, stripping it before the
# backend and adding X-Forwarded-For:
#   haproxy   HAProxy 2.6: `cookie SERVERID insert indirect nocache httponly`,
#             `option forwardfor`, roundrobin, health checks, http-reuse always
#   thin      target/release/examples/thin-proxy (tests/perf/thin_proxy.rs):
#             the thinnest hyper 1.x + tokio proxy of ringside's shape — what
#             hyper and tokio alone cost (issue #19)
#   thin-rc   the same thin-proxy with `--upstream ringside`: ringside's own
#             upstream client instead of hyper's, so that what separates
#             ringside from it is ringside's features alone
#   ringside  headless, lb-cookie (encrypted) + ring
# wrk -t2 -c$CONNS drives each for $DURATION s, in the order haproxy, thin,
# thin-rc, ringside, repeated $PAIRS times ("rounds"), once with a fixed sticky cookie
# taken from a first response (== sticky) and once with no cookie, so that
# every request is a new session (== new-session).
#
# Output, per mode, one row per run:
#   round contender req/s p50_ms p99_ms rss_MB user_us sys_us cpu_us
# rss_MB is the process's peak RSS so far (VmHWM); user_us / sys_us are the
# proxy's own CPU time per request (all its threads, from /proc), cpu_us
# their sum. Then, per pair of contenders, the median over the rounds of the
# per-round ratios of req/s, p99 and cpu_us:
#   median ratios      req/s     p99  cpu/req
#   thin/haproxy        ...
#   thin-rc/haproxy     ...
#   ringside/haproxy    ...
#   ringside/thin       ...       (what ringside costs beyond hyper and tokio)
#   ringside/thin-rc    ...       (what ringside's features cost)
# Then three A/B comparisons of ringside with itself, each "pair run req/s
# p50_ms p99_ms cpu_us" rows (cpu_us: ringside's CPU per request) and the
# median ratio B/A of req/s:
#   - the dashboard attached (in tmux) against headless (sticky);
#   - its session table shared through Redis against in-memory (new-session;
#     new balancer-cookie sessions are not written to the store, so this
#     measures what the store costs a cookieless flood: nothing, ideally);
#   - 64 `/api/events` subscribers (curl -N, output discarded) attached to
#     the headless ringside against none (sticky; target ratio >= 0.95),
#     with the CPU time the curl processes themselves took, as they share
#     the machine's cores with ringside, wrk and nginx.
# The machine is shared by wrk, nginx and the proxy (and on this project's
# machine, by other work): compare ratios, not absolute figures.
# Installs nginx, haproxy, wrk, tmux and redis-server with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
PAIRS=${PAIRS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SUBSCRIBERS=${SUBSCRIBERS:-64}
[ $QUICK = 1 ] && PAIRS=1 && DURATION=2

# shellcheck source=tests/perf/common.sh
. tests/perf/common.sh
install_missing nginx haproxy wrk tmux redis-server
# RINGSIDE_BIN: a ringside build to measure instead of building this tree's.
if [ -n "${RINGSIDE_BIN:-}" ]; then
  BIN=$(realpath "$RINGSIDE_BIN")
  cargo build --release --quiet --example thin-proxy
else
  cargo build --release --quiet --bin ringside --example thin-proxy
  BIN=$PWD/target/release/ringside
fi
THIN_BIN=$PWD/target/release/examples/thin-proxy

B1=19081 B2=19082 B3=19083 HAP=19080 THIN=19070 THINRC=19071 RS=19180 RSA=19190 RST=19280 RSTA=19290 RSR=19480 RSRA=19490 REDIS=19479

WORK=$(mktemp -d)
PIDS=()
SUBS=()
cleanup() {
  for p in "${SUBS[@]}" "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  tmux kill-session -t ringside-perf 2>/dev/null || true
  redis-cli -p $REDIS shutdown nosave >/dev/null 2>&1 || true
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- backends: nginx, a fixed small body and /health -----------------------
start_backends

# --- HAProxy 2.6 with cookie persistence, 2 threads ------------------------
haproxy_config $HAP check > "$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"
HAPROXY_PID=$(cat "$WORK/haproxy.pid")
PIDS+=("$HAPROXY_PID")

# --- the thin proxy, 2 threads ----------------------------------------------
"$THIN_BIN" --listen 127.0.0.1:$THIN --threads 2 \
  --backend 127.0.0.1:$B1 --backend 127.0.0.1:$B2 --backend 127.0.0.1:$B3 \
  >"$WORK/thin.out" 2>"$WORK/thin.err" &
THIN_PID=$!
PIDS+=("$THIN_PID")
"$THIN_BIN" --listen 127.0.0.1:$THINRC --threads 2 --upstream ringside \
  --backend 127.0.0.1:$B1 --backend 127.0.0.1:$B2 --backend 127.0.0.1:$B3 \
  >"$WORK/thin-rc.out" 2>"$WORK/thin-rc.err" &
THINRC_PID=$!
PIDS+=("$THINRC_PID")

# --- ringside headless, lb-cookie + ring, 2 threads -------------------------
BACKENDS=(--backend "b1=127.0.0.1:$B1" --backend "b2=127.0.0.1:$B2" --backend "b3=127.0.0.1:$B3")
export RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf
"$BIN" --headless --threads 2 --listen 127.0.0.1:$RS --admin 127.0.0.1:$RSA "${BACKENDS[@]}" \
  >"$WORK/ringside.out" 2>"$WORK/ringside.err" &
RINGSIDE_PID=$!
PIDS+=("$RINGSIDE_PID")

wait_port $HAP; wait_port $THIN; wait_port $THINRC; wait_port $RS

HAP_COOKIE=$(cookie_of $HAP)
THIN_COOKIE=$(cookie_of $THIN)
THINRC_COOKIE=$(cookie_of $THINRC)
RS_COOKIE=$(cookie_of $RS)

# Smoke: all three answer 200 and keep a cookie's client on one backend.
for port_cookie in "$HAP $HAP_COOKIE" "$THIN $THIN_COOKIE" "$THINRC $THINRC_COOKIE" "$RS $RS_COOKIE"; do
  read -r port cookie <<<"$port_cookie"
  seen=$(for _ in 1 2 3 4 5 6; do curl -s -H "Cookie: $cookie" "http://127.0.0.1:$port/"; done | sort -u | wc -l)
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")
  if [ -z "$cookie" ] || [ "$code" != 200 ] || [ "$seen" != 1 ]; then
    echo "FAIL: port $port answered $code, cookie '$cookie', $seen backends for one cookie" >&2
    exit 1
  fi
done
echo "smoke: HAProxy, both thin-proxies and ringside answer 200 and keep a cookie on one backend"

peak_rss_mb() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }

# CPU time of every thread of process $1 so far, in clock ticks: "user system".
cpu_ticks() { cat /proc/"$1"/task/*/stat 2>/dev/null | awk '{u += $14; s += $15} END {print u, s}'; }

# One wrk run against port $1 with cookie $2 (may be empty): prints
# "rps p50_ms p99_ms user_us sys_us cpu_us", the last three being the CPU
# time the process $3 spent per request (or "- - -" without $3).
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
    cpu = "- - -"
else:
    us = [(int(a) - int(b)) * 1e6 / hz / n for a, b in zip(after, before)]
    cpu = f"{us[0]:.2f} {us[1]:.2f} {sum(us):.2f}"
print(f"{rps:.0f} {lat['50']:.3f} {lat['99']:.3f} {cpu}")
PY
}

median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
# ratios A B: "a1/b1 a2/b2 …" for two space-separated lists.
ratios() { python3 -c "import sys; print(' '.join(str(float(a)/float(b)) for a, b in zip(sys.argv[1].split(), sys.argv[2].split())))" "$1" "$2"; }

ROW='%-6s %-9s %10s %9s %9s %8s %8s %8s %8s\n'
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC')"
echo "wrk -t2 -c$CONNS -d${DURATION}s, $PAIRS rounds per mode, in the order haproxy, thin, thin-rc, ringside"
for mode in sticky new-session; do
  echo
  echo "== $mode"
  # shellcheck disable=SC2059 # the format is ROW
  printf "$ROW" round contender req/s p50_ms p99_ms rss_MB user_us sys_us cpu_us
  declare -A rps=() p99=() cpu=()
  for round in $(seq "$PAIRS"); do
    for c in haproxy thin thin-rc ringside; do
      case $c in
        haproxy) port=$HAP pid=$HAPROXY_PID cookie=$HAP_COOKIE ;;
        thin) port=$THIN pid=$THIN_PID cookie=$THIN_COOKIE ;;
        thin-rc) port=$THINRC pid=$THINRC_PID cookie=$THINRC_COOKIE ;;
        ringside) port=$RS pid=$RINGSIDE_PID cookie=$RS_COOKIE ;;
      esac
      [ $mode = new-session ] && cookie=""
      read -r r_rps r_p50 r_p99 r_user r_sys r_cpu <<<"$(run_wrk "$port" "$cookie" "$pid")"
      # shellcheck disable=SC2059
      printf "$ROW" "$round" "$c" "$r_rps" "$r_p50" "$r_p99" "$(peak_rss_mb "$pid")" "$r_user" "$r_sys" "$r_cpu"
      rps[$c]+="$r_rps " p99[$c]+="$r_p99 " cpu[$c]+="$r_cpu "
    done
  done
  printf '%-20s %8s %8s %8s\n' "median ratios" req/s p99 cpu/req
  for pair in thin/haproxy thin-rc/haproxy ringside/haproxy ringside/thin ringside/thin-rc; do
    a=${pair%/*} b=${pair#*/}
    # shellcheck disable=SC2046 # one argument per ratio
    printf '%-20s %8s %8s %8s\n' "$pair" \
      "$(median $(ratios "${rps[$a]}" "${rps[$b]}"))" \
      "$(median $(ratios "${p99[$a]}" "${p99[$b]}"))" \
      "$(median $(ratios "${cpu[$a]}" "${cpu[$b]}"))"
  done
  unset rps p99 cpu
done

# Pairs of runs, A then B, of ringside with itself:
#   side_by_side TITLE NAME_A PORT_A COOKIE_A PID_A NAME_B PORT_B COOKIE_B PID_B [BEFORE_B AFTER_B]
# prints each run (with the CPU per request of process PID_A / PID_B) and the
# median ratio B / A of requests/s; BEFORE_B and AFTER_B are commands run
# around each B run.
side_by_side() {
  local title=$1 name_a=$2 port_a=$3 cookie_a=$4 pid_a=$5 name_b=$6 port_b=$7 cookie_b=$8 pid_b=$9
  local before_b=${10:-true} after_b=${11:-true}
  local ratio=() a_rps a_p50 a_p99 a_cpu b_rps b_p50 b_p99 b_cpu
  echo
  echo "== $title"
  printf "%-6s %-10s %10s %9s %9s %8s\n" pair run req/s p50_ms p99_ms cpu_us
  for pair in $(seq "$PAIRS"); do
    read -r a_rps a_p50 a_p99 _ _ a_cpu <<<"$(run_wrk "$port_a" "$cookie_a" "$pid_a")"
    printf "%-6s %-10s %10s %9s %9s %8s\n" "$pair" "$name_a" "$a_rps" "$a_p50" "$a_p99" "$a_cpu"
    $before_b
    read -r b_rps b_p50 b_p99 _ _ b_cpu <<<"$(run_wrk "$port_b" "$cookie_b" "$pid_b")"
    $after_b
    printf "%-6s %-10s %10s %9s %9s %8s\n" "$pair" "$name_b" "$b_rps" "$b_p50" "$b_p99" "$b_cpu"
    ratio+=("$(python3 -c "print($b_rps/$a_rps)")")
  done
  SIDE_BY_SIDE_MEDIAN=$(median "${ratio[@]}")
  echo "median ratio $name_b/$name_a: req/s $SIDE_BY_SIDE_MEDIAN"
}

# --- the dashboard attached: ringside in tmux, against headless ------------
tmux new-session -d -s ringside-perf -x 160 -y 48 -e "RINGSIDE_COOKIE_SECRET=$RINGSIDE_COOKIE_SECRET" \
  "exec $BIN --threads 2 --listen 127.0.0.1:$RST --admin 127.0.0.1:$RSTA ${BACKENDS[*]}"
DASHBOARD_PID=$(tmux list-panes -t ringside-perf -F '#{pane_pid}')
wait_port $RST
side_by_side "dashboard attached (sticky): headless ringside, then ringside in tmux" \
  headless $RS "$RS_COOKIE" "$RINGSIDE_PID" dashboard $RST "$(cookie_of $RST)" "$DASHBOARD_PID"
tmux kill-session -t ringside-perf 2>/dev/null || true

# --- the shared session store: ringside with Redis, against in-memory -------
redis-server --port $REDIS --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
"$BIN" --headless --threads 2 --listen 127.0.0.1:$RSR --admin 127.0.0.1:$RSRA "${BACKENDS[@]}" \
  --session-store redis://127.0.0.1:$REDIS >"$WORK/ringside-redis.out" 2>"$WORK/ringside-redis.err" &
REDIS_RINGSIDE_PID=$!
PIDS+=("$REDIS_RINGSIDE_PID")
wait_port $RSR
side_by_side "session store (new-session: every request creates a session): in-memory, then Redis" \
  in-memory $RS "" "$RINGSIDE_PID" redis $RSR "" "$REDIS_RINGSIDE_PID"
echo "store: $(curl -s http://127.0.0.1:$RSRA/api/stats | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]; print(s["state"], s["writes"], "writes,", s["dropped_writes"], "dropped,", s["errors"], "errors")')"
kill "$REDIS_RINGSIDE_PID" 2>/dev/null || true
redis-cli -p $REDIS shutdown nosave >/dev/null 2>&1 || true

# --- event subscribers: 64 `/api/events` streams, against none -------------
# Each B run starts $SUBSCRIBERS curl -N streams to the headless ringside's
# admin port (output discarded), waits until they are all connected, and
# stops them after the run.
subscribe() {
  local n
  for _ in $(seq "$SUBSCRIBERS"); do
    curl -sN "http://127.0.0.1:$RSA/api/events" >/dev/null 2>&1 &
    SUBS+=("$!")
  done
  for _ in $(seq 50); do
    n=$(ss -Htn state established "( sport = :$RSA )" | wc -l)
    [ "$n" -ge "$SUBSCRIBERS" ] && return 0
    sleep 0.1
  done
  echo "only $n of $SUBSCRIBERS subscribers connected" >&2
}
SUBS_TICKS=0
unsubscribe() {
  local t
  # The curls' CPU time (user + system, clock ticks) before they go.
  t=$(for p in "${SUBS[@]}"; do cat "/proc/$p/stat" 2>/dev/null || true; done | awk '{t += $14 + $15} END {print t + 0}')
  SUBS_TICKS=$((SUBS_TICKS + t))
  kill "${SUBS[@]}" 2>/dev/null || true
  wait "${SUBS[@]}" 2>/dev/null || true
  SUBS=()
}
dropped() { curl -s http://127.0.0.1:$RSA/api/stats | python3 -c 'import json,sys; print(json.load(sys.stdin).get("dropped_events", "?"))'; }
dropped_before=$(dropped)
side_by_side "event subscribers (sticky): headless ringside, then the same with $SUBSCRIBERS /api/events streams" \
  none $RS "$RS_COOKIE" "$RINGSIDE_PID" "subs-$SUBSCRIBERS" $RS "$RS_COOKIE" "$RINGSIDE_PID" subscribe unsubscribe
verdict=$(python3 -c "print('meets' if $SIDE_BY_SIDE_MEDIAN >= 0.95 else 'MISSES')")
echo "target >= 0.95: $verdict; events dropped for lagging subscribers: $(($(dropped) - dropped_before));" \
  "the curls' own CPU: $(python3 -c "print(f'{$SUBS_TICKS / $(getconf CLK_TCK) / ($PAIRS * $DURATION):.2f}')") s per second of run"
