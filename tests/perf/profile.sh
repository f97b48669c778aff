#!/usr/bin/env bash
# Where each proxy's CPU goes per request, kernel and user space, sampled
# side by side: HAProxy 2.6, thin-rc (thin-proxy on ringside's upstream
# client: ringside's shape without its features) and ringside, behind the
# same three nginx backends, each driven by wrk -t2 -c64 in turn, ROUNDS
# times. During each run `perf record -e cpu-clock` samples the proxy's
# threads (a software clock: this works on machines without hardware
# counters); each sample is 1/FREQ s of CPU, divided by the requests served
# while sampling (wrk's req/s times the sampled seconds).
#
#   tests/perf/profile.sh                      # sticky cookie, 2 rounds
#   NEW_SESSIONS=1 ROUNDS=3 tests/perf/profile.sh target/release/ringside
#
# Prints, per contender, kernel and user µs per request (median over the
# rounds), then the symbols whose µs per request differ most between
# ringside and thin-rc (the mean over the rounds), kernel ([k]) and user
# ([.]) alike. Installs nginx, haproxy, wrk and perf when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
FREQ=${FREQ:-2999}
TOP=${TOP:-20}

# shellcheck source=tests/perf/common.sh
. tests/perf/common.sh
install_missing nginx haproxy wrk perf
ringside_binaries "$@"
BIN=$(realpath "${BINS[0]}")
cargo build --release --quiet --example thin-proxy
THIN_BIN=$PWD/target/release/examples/thin-proxy

B1=19581 B2=19582 B3=19583 HAP=19580 THINRC=19571 RS=19590 RSA=19591
start_work

start_backends
haproxy_config $HAP check > "$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"
HAPROXY_PID=$(cat "$WORK/haproxy.pid")
PIDS+=("$HAPROXY_PID")
"$THIN_BIN" --listen 127.0.0.1:$THINRC --threads 2 --upstream ringside \
  --backend 127.0.0.1:$B1 --backend 127.0.0.1:$B2 --backend 127.0.0.1:$B3 >/dev/null 2>&1 &
THINRC_PID=$!
PIDS+=("$THINRC_PID")
RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf "$BIN" --headless --threads 2 \
  --listen 127.0.0.1:$RS --admin 127.0.0.1:$RSA \
  --backend b1=127.0.0.1:$B1 --backend b2=127.0.0.1:$B2 --backend b3=127.0.0.1:$B3 >/dev/null 2>&1 &
RINGSIDE_PID=$!
PIDS+=("$RINGSIDE_PID")

wait_port $HAP; wait_port $THINRC; wait_port $RS

SAMPLED=$((DURATION - 3))
MODE=sticky
[ "${NEW_SESSIONS:-0}" = 1 ] && MODE="new session per request"
echo "machine: $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u '+%F %H:%M UTC')"
echo "$MODE; wrk -t2 -c64 -d${DURATION}s, perf cpu-clock at $FREQ Hz for ${SAMPLED} s of each run, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  for c in haproxy thin-rc ringside; do
    case $c in
      haproxy) port=$HAP pid=$HAPROXY_PID ;;
      thin-rc) port=$THINRC pid=$THINRC_PID ;;
      ringside) port=$RS pid=$RINGSIDE_PID ;;
    esac
    header=(-H "Cookie: $(cookie_of "$port")")
    [ "${NEW_SESSIONS:-0}" = 1 ] && header=()
    wrk -t2 -c64 -d"${DURATION}s" "${header[@]}" "http://127.0.0.1:$port/" > "$WORK/$c.$round.wrk" &
    wrk_pid=$!
    sleep 1.5
    perf record -q -e cpu-clock -F "$FREQ" -p "$pid" -o "$WORK/$c.$round.data" -- sleep "$SAMPLED" 2>/dev/null
    wait $wrk_pid
    perf report -i "$WORK/$c.$round.data" --stdio --no-children --sort dso,sym --show-nr-samples \
      2>/dev/null > "$WORK/$c.$round.report"
  done
done

python3 - "$WORK" "$ROUNDS" "$FREQ" "$SAMPLED" "$TOP" <<'PY'
import collections, re, statistics, sys
work, rounds, freq, sampled, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
def profile(c, r):
    """µs per request by (space, symbol) for one run."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", open(f"{work}/{c}.{r}.wrk").read()).group(1))
    per_sample = 1e6 / freq / (rps * sampled)
    cost = collections.Counter()
    for line in open(f"{work}/{c}.{r}.report"):
        m = re.match(r"\s+[\d.]+%\s+(\d+)\s+\S+\s+\[(.)\]\s+(.*)", line)
        if m:
            cost[(m.group(2), m.group(3).strip()[:72])] += int(m.group(1)) * per_sample
    return cost
runs = {c: [profile(c, r) for r in range(1, rounds + 1)] for c in ("haproxy", "thin-rc", "ringside")}
print("\nCPU µs per request (median over the rounds)  kernel    user   total")
for c, ps in runs.items():
    k = statistics.median(sum(v for (s, _), v in p.items() if s == "k") for p in ps)
    u = statistics.median(sum(v for (s, _), v in p.items() if s != "k") for p in ps)
    print(f"  {c:<42} {k:7.2f} {u:7.2f} {k + u:7.2f}")
mean = {c: collections.Counter() for c in runs}
for c, ps in runs.items():
    for p in ps:
        for key, v in p.items():
            mean[c][key] += v / rounds
a, b = mean["thin-rc"], mean["ringside"]
diff = sorted(set(a) | set(b), key=lambda k: b[k] - a[k])
print(f"\nringside − thin-rc, µs per request (thin-rc, ringside, difference): the {top} largest each way")
for key in diff[::-1][:top] + diff[:top][::-1]:
    print(f"  {a[key]:7.3f} {b[key]:7.3f} {b[key] - a[key]:+7.3f}  [{key[0]}] {key[1]}")
PY
