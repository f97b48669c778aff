#!/usr/bin/env bash
# User-space instructions per sticky request, counted by callgrind: exact
# where this shared machine's wall-clock figures wander by ±10%, so a change
# to the per-request path can be judged by it when ab.sh cannot tell.
#
#   tests/perf/instructions.sh                          # target/release/ringside
#   tests/perf/instructions.sh /tmp/ringside-a target/release/ringside
#   REFERENCES=1 tests/perf/instructions.sh             # and HAProxy and thin-proxy (both clients)
#   NEW_SESSIONS=1 tests/perf/instructions.sh           # no cookie: a new session each
#
# Each contender runs twice under callgrind in front of the same three nginx
# backends (ringside headless, lb-cookie + ring, 2 threads; thin-proxy and
# HAProxy as in compare.sh), serving `ab -k -c 4` with one sticky cookie
# (with none under NEW_SESSIONS=1): N1 requests in the first run, N2 in the second (default 1,000 and 5,000).
# The difference of the two totals over N2 - N1 cancels start-up and
# shut-down. Repeated runs agree within about 1k instructions. Also
# counted, per request: calls to malloc, realloc and memcpy (glibc's AVX
# variant, this machine's). Installs
# valgrind, ab, nginx and haproxy with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

N1=${N1:-1000}
N2=${N2:-5000}

# shellcheck source=tests/perf/common.sh
. tests/perf/common.sh
ringside_binaries "$@"
install_missing valgrind nginx haproxy ab

B1=19681 B2=19682 B3=19683 PORT=19690
WORK=$(mktemp -d)
cleanup() {
  pkill -TERM -f "callgrind-out-file=$WORK/" 2>/dev/null || true
  if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
start_backends

haproxy_config $PORT > "$WORK/haproxy.cfg"

# total CONTENDER N: callgrind's instruction total for one run of N requests.
total() {
  local who=$1 n=$2 out="$WORK/cg.$RANDOM.out"
  case $who in
    haproxy) exec valgrind --tool=callgrind --callgrind-out-file="$out" haproxy -f "$WORK/haproxy.cfg" -db ;;
    thin | thin-rc) exec valgrind --tool=callgrind --callgrind-out-file="$out" target/release/examples/thin-proxy \
      --listen 127.0.0.1:$PORT --threads 2 --upstream "$([ "$who" = thin ] && echo hyper || echo ringside)" \
      --backend 127.0.0.1:$B1 --backend 127.0.0.1:$B2 --backend 127.0.0.1:$B3 ;;
    *) RINGSIDE_COOKIE_SECRET=perf-perf-perf-perf-perf-perf-perf-perf \
      exec valgrind --tool=callgrind --callgrind-out-file="$out" "$who" --headless --threads 2 \
      --listen 127.0.0.1:$PORT --admin 127.0.0.1:$((PORT + 1)) \
      --backend b1=127.0.0.1:$B1 --backend b2=127.0.0.1:$B2 --backend b3=127.0.0.1:$B3 ;;
  esac >/dev/null 2>"$WORK/valgrind.err" &
  local pid=$!
  for _ in $(seq 150); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.2; done
  local cookie
  cookie=$(curl -s -D - -o /dev/null "http://127.0.0.1:$PORT/" | awk -F'[ ;]' 'tolower($1)=="set-cookie:"{print $2; exit}')
  [ -n "$cookie" ] || { echo "$who: no sticky cookie" >&2; exit 1; }
  local sticky=(-H "Cookie: $cookie")
  [ "${NEW_SESSIONS:-0}" = 1 ] && sticky=()
  local failed
  failed=$(ab -q -k -n "$n" -c 4 "${sticky[@]}" "http://127.0.0.1:$PORT/" | awk '/^Failed requests/{print $3}')
  [ "$failed" = 0 ] || { echo "$who: $failed of $n requests failed" >&2; exit 1; }
  # SIGTERM: a shell without job control starts background commands with
  # SIGINT ignored, so an INT would never end them.
  kill -TERM "$pid"
  wait "$pid" || true
  cat "$out"* > "$WORK/$n.out"
  awk '/^(summary|totals):/{print $2; exit}' "$WORK/$n.out"
}

# calls NAME: how often the runs' code called NAME, per request.
calls() {
  python3 - "$WORK/$N1.out" "$WORK/$N2.out" "$1" $((N2 - N1)) <<'PY'
import re, sys
def count(path, name):
    names, callee, n = {}, None, 0
    for line in open(path, errors="replace"):
        m = re.match(r"^(c?fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            kind, ident, label = m.groups()
            if label:
                names[ident] = label
            if kind == "cfn":
                callee = names.get(ident, ident)
            continue
        m = re.match(r"^calls=(\d+)", line)
        if m and callee is not None and (callee == name or callee.startswith(name + " ")):
            n += int(m.group(1))
    return n
a, b, name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
print(f"{(count(b, name) - count(a, name)) / n:.1f}")
PY
}

per_request() {
  local a b
  a=$(total "$1" "$N1")
  b=$(total "$1" "$N2")
  printf '%-40s %8d instructions per request; malloc %s, realloc %s, memcpy %s calls\n' "$2" \
    $(((b - a) / (N2 - N1))) "$(calls malloc)" "$(calls realloc)" "$(calls __memcpy_avx_unaligned_erms)"
}

mode=sticky
[ "${NEW_SESSIONS:-0}" = 1 ] && mode="new session per request"
echo "callgrind, user space, $mode, ab -k -c 4, ($N2 - $N1 requests)"
if [ "${REFERENCES:-0}" = 1 ]; then
  cargo build --release --quiet --example thin-proxy
  per_request haproxy "HAProxy $(haproxy -v | awk 'NR==1{print $3}')"
  per_request thin thin-proxy
  per_request thin-rc "thin-proxy --upstream ringside"
fi
for b in "${BINS[@]}"; do
  per_request "$(realpath "$b")" "$b"
done
