#!/usr/bin/env bash
# ringside's limits under abusive loads, beside HAProxy 2.6, in one run (issue #17).
#
#   tests/perf/limits.sh              # all loads, full size (about 8 minutes)
#   tests/perf/limits.sh --quick      # counts / 10, short durations (under 3 minutes)
#   LOADS="fd slow-bodies" PROXIES=ringside tests/perf/limits.sh
#   RINGSIDE_EXTRA_CONFIG=$'[limits]\nmax_connections = 5000' tests/perf/limits.sh
#
# Each load runs against ringside (headless, --threads 2, --backend flags and
# a --config file) and then against HAProxy 2.6 (a config written here:
# HAProxy's defaults plus `timeout client 30s`, `timeout server 30s`, the
# cookie persistence and health checks of compare.sh — inter 5s, fall 3,
# rise 2, as ringside's defaults — and a stats socket; maxconn left at its
# default), one proxy at a time, each started afresh, in front of the same
# three backends on loopback. The load tool is tests/perf/limits.py (python3
# asyncio, stdlib only). For each load and proxy it prints the proxy's peak
# RSS, its open fds, its upstream connections (its sockets connected to a
# backend port, from /proc), the backends it marks down (ringside:
# GET /api/backends and its `is down` log lines; HAProxy: `show stat` on the
# stats socket and its `is DOWN` log lines), and how a stream of legitimate
# one-request clients sent alongside fared (ok / total, statuses seen):
#
#   fd-soft, fd-hard  descriptor exhaustion: the proxy under
#                     `prlimit --nofile=1024:HARD` (HARD: 65536, or this
#                     shell's hard limit; the proxy may raise its soft limit
#                     itself) and `--nofile=1024:1024` (it cannot);
#                     FD_BURSTS bursts of FD_CLIENTS concurrent one-request
#                     clients; backends answer after FD_DELAY_MS, so they overlap.
#   slow-readers      SLOW_READERS clients start a 200 MB download (nginx, a
#                     sparse file) and read nothing for SLOW_HOLD s; RSS
#                     during; upstream connections still open SLOW_AFTER s
#                     after the readers are killed (closed with unread data).
#   idle              IDLE_CONNS connections that send nothing, held IDLE_HOLD
#                     s: RSS before / during / 2 s after closing, and how many
#                     the proxy kept open; then KA_CONNS keep-alive
#                     connections that made one request each, held KA_HOLD s:
#                     RSS during and KA_AFTER s after they all close.
#   slow-bodies       BODY_CLIENTS clients POST with Content-Length: 1000000
#                     and trickle 1 byte/s; upstream connections at each of
#                     BODY_CHECKS seconds, and what the clients get (408? 504?).
#
# Environment (defaults; --quick divides the counts by 10 — but keeps 600
# clients a descriptor burst — and shortens the durations): LOADS="fd-soft fd-hard slow-readers idle slow-bodies",
# PROXIES="ringside haproxy", FD_BURSTS=5 FD_CLIENTS=600 FD_DELAY_MS=200,
# SLOW_READERS=1000 SLOW_HOLD=20 SLOW_AFTER=5, IDLE_CONNS=10000 IDLE_HOLD=15,
# KA_CONNS=10000 KA_HOLD=10 KA_AFTER=5, BODY_CLIENTS=2000 BODY_CHECKS="5 35",
# LEGIT_RATE=10 (per second) LEGIT_TIMEOUT=5, RINGSIDE_EXTRA_CONFIG (TOML
# appended to ringside's --config file; empty by default, as today's
# ringside refuses unknown keys).
#
# The table at the end has one row per load and proxy: peakMB (peak RSS),
# fds (most open), up (most upstream connections), down ("most marked down /
# backends", then the number of `is down` log lines), legit ok and statuses,
# the load's clients' outcomes, and the load's own figures.
# Raises the descriptor limit to 65536 (or the hard limit, if it cannot) for
# itself, the backends and the proxies; installs nginx and haproxy with apt-get when
# missing. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
q() { # q FULL QUICK: the default for this mode
  if [ $QUICK = 1 ]; then echo "$2"; else echo "$1"; fi
}
# --quick keeps 600 clients a burst (two bursts, not five): fewer could not
# reach 1,024 descriptors, and a burst takes under a second.
export FD_BURSTS=${FD_BURSTS:-$(q 5 2)} FD_CLIENTS=${FD_CLIENTS:-600} FD_DELAY_MS=${FD_DELAY_MS:-200}
export FD_PAUSE=${FD_PAUSE:-$(q 1 0.5)}
export SLOW_READERS=${SLOW_READERS:-$(q 1000 100)} SLOW_HOLD=${SLOW_HOLD:-$(q 20 4)} SLOW_AFTER=${SLOW_AFTER:-$(q 5 3)}
export IDLE_CONNS=${IDLE_CONNS:-$(q 10000 1000)} IDLE_HOLD=${IDLE_HOLD:-$(q 15 3)}
export KA_CONNS=${KA_CONNS:-$(q 10000 1000)} KA_HOLD=${KA_HOLD:-$(q 10 3)} KA_AFTER=${KA_AFTER:-$(q 5 3)}
export BODY_CLIENTS=${BODY_CLIENTS:-$(q 2000 200)} BODY_CHECKS=${BODY_CHECKS:-$(q "5 35" "3 8")}
export LEGIT_RATE=${LEGIT_RATE:-10} LEGIT_TIMEOUT=${LEGIT_TIMEOUT:-5}
LOADS=${LOADS:-fd-soft fd-hard slow-readers idle slow-bodies}
PROXIES=${PROXIES:-ringside haproxy}
RINGSIDE_EXTRA_CONFIG=${RINGSIDE_EXTRA_CONFIG:-}

# shellcheck source=tests/perf/common.sh
. tests/perf/common.sh
install_missing nginx haproxy
cargo build --release --quiet --bin ringside
BIN=$PWD/target/release/ringside
TOOL=$PWD/tests/perf/limits.py

# Descriptors for 10,000 connections in each process (load tool, proxy,
# backends): up to 65,536 where allowed (root with CAP_SYS_RESOURCE), else the
# hard limit as it is.
ulimit -Hn 65536 2>/dev/null || true
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=65536
[ "$NOFILE" -gt 65536 ] && NOFILE=65536
ulimit -Sn "$NOFILE"
[ "$NOFILE" -ge 12000 ] || echo "warning: only $NOFILE descriptors per process; the idle load needs about 10,100" >&2

N1=19681 N2=19682 N3=19683 # nginx: small answers, /health, /big (200 MB)
P1=19691 P2=19692 P3=19693 # limits.py backend: reads the whole body, answers after FD_DELAY_MS
RS=19670 RSA=19671 HAP=19660

WORK=$(mktemp -d)
PIDS=()
PROXY_PID=""
cleanup() {
  for p in "$PROXY_PID" "${PIDS[@]}"; do [ -n "$p" ] && { kill "$p" 2>/dev/null || true; }; done
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- backends ----------------------------------------------------------------
truncate -s 200M "$WORK/big.bin" # sparse: no disk used
chmod 755 "$WORK" && chmod 644 "$WORK/big.bin" # nginx's workers read it as another user
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 30000; }
http {
  access_log off;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$N1 backlog=4096; location = /big { alias $WORK/big.bin; } location / { return 200 "n1\n"; } }
  server { listen 127.0.0.1:$N2 backlog=4096; location = /big { alias $WORK/big.bin; } location / { return 200 "n2\n"; } }
  server { listen 127.0.0.1:$N3 backlog=4096; location = /big { alias $WORK/big.bin; } location / { return 200 "n3\n"; } }
}
CONF
nginx -c "$WORK/nginx.conf"
python3 "$TOOL" backend --ports "$P1,$P2,$P3" --delay-ms "$FD_DELAY_MS" 2>"$WORK/backend.err" &
PIDS+=("$!")

wait_http() { # wait_http URL: until it answers (10 s at most)
  for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done
  echo "$1 never answered" >&2
  return 1
}
for port in $N1 $P1 $P2 $P3; do wait_http "http://127.0.0.1:$port/health"; done
big=$(curl -s -o /dev/null -r 0-0 -w '%{http_code}' "http://127.0.0.1:$N1/big")
[ "$big" = 206 ] || { echo "nginx answers $big for /big, not 206" >&2; exit 1; }

# --- proxies -------------------------------------------------------------------
# start_proxy NAME LABEL NOFILE_LIMITS PORT1 PORT2 PORT3: starts NAME (under
# prlimit when NOFILE_LIMITS is not empty) in front of the three ports; sets
# PROXY_PID, TARGET, PROBE (limits.py's arguments) and LOG.
start_proxy() {
  local name=$1 label=$2 limits=$3 b1=$4 b2=$5 b3=$6 pre=()
  [ -n "$limits" ] && pre=(prlimit "--nofile=$limits" --)
  LOG=$WORK/$name-$label.log
  if [ "$name" = ringside ]; then
    { echo "# written by tests/perf/limits.sh"; printf '%s\n' "$RINGSIDE_EXTRA_CONFIG"; } >"$WORK/ringside.toml"
    RINGSIDE_COOKIE_SECRET=limits-limits-limits-limits-limits-limits \
      "${pre[@]}" "$BIN" --headless --threads 2 --config "$WORK/ringside.toml" \
      --listen "127.0.0.1:$RS" --admin "127.0.0.1:$RSA" \
      --backend "b1=127.0.0.1:$b1" --backend "b2=127.0.0.1:$b2" --backend "b3=127.0.0.1:$b3" \
      >"$LOG" 2>&1 &
    PROXY_PID=$!
    TARGET=127.0.0.1:$RS
    PROBE=(--admin "127.0.0.1:$RSA")
  else
    cat >"$WORK/haproxy.cfg" <<EOF
global
  stats socket $WORK/haproxy.sock mode 600 level admin
defaults
  mode http
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$HAP
  default_backend be
backend be
  balance roundrobin
  cookie SERVERID insert indirect nocache httponly
  option httpchk GET /health
  server b1 127.0.0.1:$b1 cookie b1 check inter 5s fall 3 rise 2
  server b2 127.0.0.1:$b2 cookie b2 check inter 5s fall 3 rise 2
  server b3 127.0.0.1:$b3 cookie b3 check inter 5s fall 3 rise 2
EOF
    "${pre[@]}" haproxy -db -f "$WORK/haproxy.cfg" >"$LOG" 2>&1 &
    PROXY_PID=$!
    TARGET=127.0.0.1:$HAP
    PROBE=(--stats-sock "$WORK/haproxy.sock")
  fi
  if ! wait_http "http://$TARGET/"; then
    echo "$name did not start; its log ($LOG):" >&2
    tail -5 "$LOG" >&2
    exit 1
  fi
}

stop_proxy() {
  kill "$PROXY_PID" 2>/dev/null || true
  wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
  sleep 1 # let the backends see the connections go
}

# run LABEL LOAD NOFILE_LIMITS PORT1 PORT2 PORT3: the load against each proxy in turn.
run() {
  local label=$1 load=$2 limits=$3 proxy
  echo
  echo "== $label"
  for proxy in $PROXIES; do
    start_proxy "$proxy" "$label" "$limits" "$4" "$5" "$6"
    python3 "$TOOL" run "$load" --proxy "$proxy" --pid "$PROXY_PID" --target "$TARGET" \
      --backend-ports "$4,$5,$6" "${PROBE[@]}" --log "$LOG" --label "$label" --out "$WORK/results.jsonl"
    stop_proxy
  done
}

echo "machine: $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC');" \
  "$(haproxy -v | head -1 | cut -d' ' -f1-3); mode: $([ $QUICK = 1 ] && echo quick || echo full)"
[ -n "$RINGSIDE_EXTRA_CONFIG" ] && echo "ringside extra config: $RINGSIDE_EXTRA_CONFIG"
for load in $LOADS; do
  case $load in
    fd-soft) run fd-soft fd "1024:$NOFILE" $P1 $P2 $P3 ;;
    fd-hard) run fd-hard fd 1024:1024 $P1 $P2 $P3 ;;
    slow-readers) run slow-readers slow-readers "" $N1 $N2 $N3 ;;
    idle) run idle idle "" $N1 $N2 $N3 ;;
    slow-bodies) run slow-bodies slow-bodies "" $P1 $P2 $P3 ;;
    *) echo "unknown load $load" >&2; exit 2 ;;
  esac
done

echo
echo "== summary (down: most marked down / backends, then 'is down' log lines)"
python3 "$TOOL" table "$WORK/results.jsonl"
