#!/usr/bin/env python3
"""The load tool of tests/perf/limits.sh (issue #17): asyncio, stdlib only.

    limits.py backend --ports P1,P2,P3 --delay-ms 200
        HTTP/1.1 keep-alive backends on loopback: read the whole request body
        (Content-Length or chunked), wait the delay (not on /health), answer
        a short body.
    limits.py run LOAD --proxy NAME --pid PID --target IP:PORT
                  --backend-ports P1,P2,P3 [--admin IP:PORT | --stats-sock PATH]
                  --log FILE --label TEXT --out FILE.jsonl
        Runs one load (fd, slow-readers, idle, slow-bodies) against the proxy
        PID listening on --target, with a stream of legitimate requests
        alongside; watches the proxy's RSS, open fds and upstream connections
        (its sockets connected to a backend port, from /proc) and the
        backends it marks down; prints what it sees and appends one JSON
        line to --out.
    limits.py table FILE.jsonl
        The compact table at the end.

Counts and durations come from the environment (see limits.sh); every loop
is bounded in count and time, and only loopback is used.
"""

import argparse
import asyncio
import collections
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.request


def env_int(name, default):
    return int(os.environ.get(name, default))


def env_float(name, default):
    return float(os.environ.get(name, default))


def env_list(name, default):
    return [float(x) for x in os.environ.get(name, default).split()]


# --------------------------------------------------------------------------
# backends


async def serve_backend(port, delay):
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip().lower()
                if "chunked" in headers.get("transfer-encoding", ""):
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                elif int(headers.get("content-length", "0") or 0) > 0:
                    await reader.readexactly(int(headers["content-length"]))
                if path != "/health" and delay > 0:
                    await asyncio.sleep(delay)
                body = f"backend {port}\n".encode()
                close = headers.get("connection") == "close"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if close else b"", body)
                )
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


async def backends_main(ports, delay):
    await asyncio.gather(*(serve_backend(p, delay) for p in ports))


# --------------------------------------------------------------------------
# watching the proxy

UPSTREAM_STATES = {"01", "02", "08"}  # established, syn-sent, close-wait: the proxy holds them


class Probe:
    """Reads the proxy's memory, descriptors, upstream connections and
    backend states; a thread samples them while a load runs."""

    def __init__(self, args):
        self.pid = args.pid
        self.proxy = args.proxy
        self.admin = args.admin
        self.stats_sock = args.stats_sock
        self.log = args.log
        self.ports = {int(p) for p in args.backend_ports.split(",")}
        self.peak = collections.defaultdict(int)
        self.stop = threading.Event()

    def status(self, key):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def rss(self):
        return self.status("VmRSS")

    def hwm(self):
        return self.status("VmHWM")

    def sockets(self):
        """(open fds, socket inodes) of the proxy."""
        inodes = set()
        try:
            names = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:
            return 0, inodes
        for n in names:
            try:
                link = os.readlink(f"/proc/{self.pid}/fd/{n}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        return len(names), inodes

    def fds_and_upstream(self, busy=None):
        """(open fds, upstream connections); with a list as `busy`, also
        appends how many of them have bytes queued in the kernel (unread
        from the backend or unsent to it): not idle in a pool."""
        fds, inodes = self.sockets()
        up = queued = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        p = line.split()
                        if p[3] in UPSTREAM_STATES and int(p[2].rsplit(":", 1)[1], 16) in self.ports and p[9] in inodes:
                            up += 1
                            queued += p[4] != "00000000:00000000"
            except OSError:
                pass
        if busy is not None:
            busy.append(queued)
        return fds, up

    def limits(self):
        try:
            with open(f"/proc/{self.pid}/limits") as f:
                for line in f:
                    if line.startswith("Max open files"):
                        soft, hard = line.split()[3:5]
                        return f"{soft}:{hard}"
        except OSError:
            pass
        return "?"

    def down(self):
        """'down/total' now, from the proxy's own view, or '?'."""
        try:
            if self.proxy == "ringside":
                with urllib.request.urlopen(f"http://{self.admin}/api/backends", timeout=2) as r:
                    states = [b.get("state") for b in json.load(r)]
                return f"{sum(s != 'up' for s in states)}/{len(states)}"
            rows = self.haproxy("show stat")
            cols = rows[0].lstrip("# ").split(",")
            servers = [dict(zip(cols, r.split(","))) for r in rows[1:] if r]
            servers = [s for s in servers if s["svname"] not in ("FRONTEND", "BACKEND")]
            return f"{sum(not s['status'].startswith('UP') for s in servers)}/{len(servers)}"
        except Exception:  # noqa: BLE001 - a proxy out of descriptors may not answer
            return "?"

    def haproxy(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(self.stats_sock)
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode().splitlines()

    def haproxy_info(self):
        if self.proxy != "haproxy":
            return ""
        try:
            info = dict(line.split(": ", 1) for line in self.haproxy("show info") if ": " in line)
            return f"maxconn {info.get('Maxconn', '?')}, ulimit-n {info.get('Ulimit-n', '?')}"
        except Exception:  # noqa: BLE001
            return ""

    def down_events(self):
        """The proxy's `is down` log lines: (how many, the first one)."""
        try:
            with open(self.log, errors="replace") as f:
                lines = [line for line in f if re.search(r"\bis down\b", line, re.I)]
        except OSError:
            return 0, ""
        first = re.sub(r"\x1b\[[0-9;]*m", "", lines[0]).strip() if lines else ""
        return len(lines), first[-160:]

    def sample(self, interval):
        while not self.stop.is_set():
            fds, up = self.fds_and_upstream()
            self.peak["fds"] = max(self.peak["fds"], fds)
            self.peak["upstream"] = max(self.peak["upstream"], up)
            self.peak["rss"] = max(self.peak["rss"], self.rss())
            self.stop.wait(interval)

    def start(self, interval):
        self.thread = threading.Thread(target=self.sample, args=(interval,), daemon=True)
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join()


# --------------------------------------------------------------------------
# clients (raw non-blocking sockets: a slow reader really reads nothing)


def classify(exc):
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno).split(" (")[0].lower().replace(" ", "-")
    return type(exc).__name__


async def connect(target, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(s, target), timeout)
    except BaseException:
        s.close()
        raise
    return s


async def read_head(s, timeout, deadline_total=None):
    """Reads a response head: (status, content-length or None, bytes of body read)."""
    loop = asyncio.get_running_loop()
    data = b""
    end = time.monotonic() + timeout
    while b"\r\n\r\n" not in data:
        left = end - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError
        chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), left)
        if not chunk:
            return ("eof" if not data else "truncated"), None, b""
        data += chunk
        if len(data) > 65536:
            break
    head, _, rest = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    code = status[1].decode() if len(status) > 1 else "garbled"
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return code, (int(m.group(1)) if m else None), rest


async def request(target, path, timeout, keep=False):
    """One GET; the status (or what went wrong) and, with keep, the open socket."""
    loop = asyncio.get_running_loop()
    s = None
    try:
        s = await connect(target, timeout)
        conn = b"" if keep else b"Connection: close\r\n"
        await loop.sock_sendall(s, b"GET %s HTTP/1.1\r\nHost: limits\r\n%s\r\n" % (path.encode(), conn))
        code, length, rest = await read_head(s, timeout)
        if keep and length is not None:
            while len(rest) < length:
                chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), timeout)
                if not chunk:
                    break
                rest += chunk
            return code, s
        s.close()
        return code, None
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        if s is not None:
            s.close()
        return classify(e), None


async def legit_stream(target, rate, timeout, stop, tally):
    """Legitimate one-request clients at `rate` per second until `stop`."""
    tasks = set()

    async def one():
        code, _ = await request(target, "/", timeout)
        tally[code] += 1

    while not stop.is_set():
        t = asyncio.create_task(one())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        try:
            await asyncio.wait_for(stop.wait(), 1 / rate)
        except asyncio.TimeoutError:
            pass
    if tasks:
        await asyncio.wait(tasks, timeout=timeout + 1)


def fmt_counts(c):
    return " ".join(f"{k}:{v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])) or "-"


# --------------------------------------------------------------------------
# the loads; each returns (clients tally, extra measurements, notes)


async def load_fd(target, probe, say):
    bursts, n = env_int("FD_BURSTS", 5), env_int("FD_CLIENTS", 600)
    timeout = env_float("FD_TIMEOUT", 10)
    tally = collections.Counter()
    extra = {}
    for b in range(bursts):
        t0 = time.monotonic()
        codes = await asyncio.gather(*(request(target, "/", timeout) for _ in range(n)))
        burst = collections.Counter(c for c, _ in codes)
        tally.update(burst)
        say(f"burst {b + 1}/{bursts}: {n} clients in {time.monotonic() - t0:.1f}s: {fmt_counts(burst)}")
        await asyncio.sleep(env_float("FD_PAUSE", 1))
    return tally, extra, ""


async def load_slow_readers(target, probe, say):
    loop = asyncio.get_running_loop()
    n, hold, after = env_int("SLOW_READERS", 1000), env_float("SLOW_HOLD", 20), env_float("SLOW_AFTER", 5)
    tally = collections.Counter()
    socks = []
    sem = asyncio.Semaphore(256)

    async def start():
        async with sem:
            try:
                s = await connect(target, 10)
                await loop.sock_sendall(s, b"GET /big HTTP/1.1\r\nHost: limits\r\n\r\n")
                socks.append(s)
            except Exception as e:  # noqa: BLE001
                tally[classify(e)] += 1

    up_before = probe.fds_and_upstream()[1]
    await asyncio.gather(*(start() for _ in range(n)))
    say(f"{len(socks)} slow readers started a 200 MB download each; holding {hold:.0f}s")
    rss_during = 0.0
    t_end = time.monotonic() + hold
    while time.monotonic() < t_end:
        await asyncio.sleep(min(1, max(0, t_end - time.monotonic())))
        rss_during = max(rss_during, probe.rss())
    fds, up = probe.fds_and_upstream()
    for s in socks:  # the status line, peeked: the kernel keeps the data unread
        try:
            tally[s.recv(12, socket.MSG_PEEK | socket.MSG_DONTWAIT)[9:12].decode() or "eof"] += 1
        except BlockingIOError:
            tally["nothing-yet"] += 1
        except OSError as e:
            tally[classify(e)] += 1
    say(f"during: RSS {rss_during:.1f} MB, {fds} fds, {up} upstream connections ({up_before} before the load)")
    for s in socks:  # as a killed process: unread data, so the kernel resets
        s.close()
    await asyncio.sleep(after)
    busy = []
    fds_after, up_after = probe.fds_and_upstream(busy)
    say(
        f"{after:.0f}s after the readers were killed: {up_after} upstream connections still open "
        f"({busy[0]} with bytes queued, i.e. not idle in a pool), {fds_after} fds"
    )
    extra = {"rss_during": rss_during, "upstream_before": up_before, "upstream_after_kill": up_after}
    notes = (
        f"RSS {rss_during:.0f} MB during; upstream {up_before} before, {up} during, "
        f"{up_after} ({busy[0]} busy) {after:.0f}s after the kill"
    )
    return tally, extra, notes


async def hold(probe, seconds):
    """Waits `seconds`, sampling the proxy every second: (max RSS, max fds)."""
    rss = fds = 0
    end = time.monotonic() + seconds
    while True:
        rss, fds = max(rss, probe.rss()), max(fds, probe.sockets()[0])
        left = end - time.monotonic()
        if left <= 0:
            return rss, fds
        await asyncio.sleep(min(1, left))


def still_open(socks):
    """How many of `socks` the proxy has not closed: still ESTABLISHED in the
    kernel (a FIN from the proxy makes them CLOSE_WAIT, a reset CLOSE)."""
    n = 0
    for s in socks:
        try:
            n += s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1
        except OSError:
            pass
    return n


async def load_idle(target, probe, say):
    n_idle, idle_hold = env_int("IDLE_CONNS", 10000), env_float("IDLE_HOLD", 15)
    n_ka, ka_hold, ka_after = env_int("KA_CONNS", 10000), env_float("KA_HOLD", 10), env_float("KA_AFTER", 5)
    tally = collections.Counter()
    sem = asyncio.Semaphore(256)
    extra = {}

    # idle: connect, send nothing
    rss_before = probe.rss()
    socks = []

    async def open_idle():
        async with sem:
            try:
                socks.append(await connect(target, 10))
                tally["idle-open"] += 1
            except Exception as e:  # noqa: BLE001
                tally["idle-" + classify(e)] += 1

    await asyncio.gather(*(open_idle() for _ in range(n_idle)))
    rss_during, fds = await hold(probe, idle_hold)
    left = still_open(socks)
    say(
        f"idle: {len(socks)}/{n_idle} connected; after {idle_hold:.0f}s {left} still open; "
        f"RSS {rss_before:.1f} -> {rss_during:.1f} MB (max during), max {fds} fds"
    )
    for s in socks:
        s.close()
    await asyncio.sleep(2)
    rss_after = probe.rss()
    say(f"idle: 2s after closing them: RSS {rss_after:.1f} MB")
    extra.update(idle_rss=[rss_before, rss_during, rss_after], idle_open_after_hold=left)

    # keep-alive: one request each, then idle
    socks = []

    async def open_ka():
        async with sem:
            code, s = await request(target, "/", 10, keep=True)
            tally["ka-" + code] += 1
            if s is not None:
                socks.append(s)

    t0 = time.monotonic()
    await asyncio.gather(*(open_ka() for _ in range(n_ka)))
    say(f"keep-alive: {len(socks)}/{n_ka} made one request in {time.monotonic() - t0:.1f}s; holding {ka_hold:.0f}s")
    ka_during, fds = await hold(probe, ka_hold)
    _, up = probe.fds_and_upstream()
    left = still_open(socks)
    say(f"keep-alive: after {ka_hold:.0f}s {left} still open; max RSS {ka_during:.1f} MB, max {fds} fds; {up} upstream")
    for s in socks:
        s.close()
    await asyncio.sleep(ka_after)
    ka_after_rss = probe.rss()
    _, up_after = probe.fds_and_upstream()
    say(f"keep-alive: {ka_after:.0f}s after closing them: RSS {ka_after_rss:.1f} MB, {up_after} upstream")
    extra.update(ka_rss=[ka_during, ka_after_rss], ka_open_after_hold=left, upstream_after=up_after)
    notes = (
        f"idle RSS {rss_before:.0f}/{rss_during:.0f}/{rss_after:.0f} MB, {extra['idle_open_after_hold']} open "
        f"after {idle_hold:.0f}s; keep-alive RSS {ka_during:.0f} -> {ka_after_rss:.0f} MB, {left} open"
    )
    return tally, extra, notes


async def load_slow_bodies(target, probe, say):
    loop = asyncio.get_running_loop()
    n = env_int("BODY_CLIENTS", 2000)
    checks = env_list("BODY_CHECKS", "5 35")
    length = env_int("BODY_LENGTH", 1000000)
    total = checks[-1] + env_float("BODY_TAIL", 3)
    outcome = {}  # client -> (status, seconds)
    started = time.monotonic()
    sem = asyncio.Semaphore(256)
    stop = asyncio.Event()

    async def client(i):
        s = None
        try:
            async with sem:
                s = await connect(target, 10)
                await loop.sock_sendall(
                    s, b"POST /upload HTTP/1.1\r\nHost: limits\r\nContent-Length: %d\r\n\r\n" % length
                )
            answer = asyncio.create_task(read_head(s, total + 5))
            sent = 0
            while not answer.done() and not stop.is_set() and sent < length:
                try:
                    await asyncio.wait_for(asyncio.shield(answer), 1)
                except asyncio.TimeoutError:
                    pass
                if answer.done() or stop.is_set():
                    break
                try:
                    await loop.sock_sendall(s, b"x")  # one byte a second
                    sent += 1
                except OSError:
                    break
            if not answer.done():
                try:
                    await asyncio.wait_for(asyncio.shield(answer), 0.5 if stop.is_set() else 5)
                except asyncio.TimeoutError:
                    pass
            if answer.done():
                exc = answer.exception()
                outcome[i] = (classify(exc) if exc else answer.result()[0], time.monotonic() - started)
            else:
                answer.cancel()
                outcome[i] = ("none", None)
        except Exception as e:  # noqa: BLE001
            outcome[i] = (classify(e), time.monotonic() - started)
        finally:
            if s is not None:
                s.close()

    tasks = [asyncio.create_task(client(i)) for i in range(n)]
    extra = {}
    for c in checks:
        await asyncio.sleep(max(0, started + c - time.monotonic()))
        fds, up = probe.fds_and_upstream()
        got = collections.Counter(st for st, t in outcome.values() if t is not None and t <= c + 0.5)
        say(f"at {c:.0f}s: {up} upstream connections, {fds} fds, RSS {probe.rss():.1f} MB; answers so far: {fmt_counts(got)}")
        extra[f"upstream_at_{c:.0f}s"] = up
    stop.set()
    await asyncio.wait(tasks, timeout=15)
    tally = collections.Counter(st for st, _ in outcome.values())
    times = sorted(t for st, t in outcome.values() if t is not None and st != "none")
    when = f", first at {times[0]:.1f}s, median {times[len(times) // 2]:.1f}s" if times else ""
    say(f"clients got: {fmt_counts(tally)}{when}")
    notes = "upstream " + ", ".join(f"{extra[f'upstream_at_{c:.0f}s']} at {c:.0f}s" for c in checks) + when
    return tally, extra, notes


LOADS = {"fd": load_fd, "slow-readers": load_slow_readers, "idle": load_idle, "slow-bodies": load_slow_bodies}


async def run_main(args):
    host, port = args.target.rsplit(":", 1)
    target = (host, int(port))
    probe = Probe(args)
    name = f"{args.label} / {args.proxy}"

    def say(text):
        print(f"  [{name}] {text}", flush=True)

    say(f"pid {args.pid}, nofile {probe.limits()}{(', ' + probe.haproxy_info()) if args.proxy == 'haproxy' else ''}")
    # Descriptor bursts last a fraction of a second: sample them more often.
    probe.start(env_float("SAMPLE_INTERVAL", 0.1 if args.load == "fd" else 0.5))
    legit = collections.Counter()
    stop = asyncio.Event()
    legit_task = asyncio.create_task(
        legit_stream(target, env_float("LEGIT_RATE", 10), env_float("LEGIT_TIMEOUT", 5), stop, legit)
    )
    down_during = collections.Counter()

    async def watch_down():
        while not stop.is_set():
            down_during[await asyncio.to_thread(probe.down)] += 1
            try:
                await asyncio.wait_for(stop.wait(), 1)
            except asyncio.TimeoutError:
                pass

    watch = asyncio.create_task(watch_down())
    tally, extra, notes = await LOADS[args.load](target, probe, say)
    stop.set()
    await legit_task
    await watch
    probe.finish()
    worst = max((d for d in down_during if d != "?"), default="?", key=lambda d: int(d.split("/")[0]))
    result = {
        "load": args.label,
        "proxy": args.proxy,
        "nofile": probe.limits(),
        "peak_rss_mb": round(max(probe.hwm(), probe.peak["rss"]), 1),
        "fds_max": probe.peak["fds"],
        "upstream_max": probe.peak["upstream"],
        "down_max": worst,
        "down_unknown": down_during.get("?", 0),
        "down_now": probe.down(),
        "down_events": probe.down_events()[0],
        "down_first": probe.down_events()[1],
        "legit_ok": legit.get("200", 0),
        "legit_total": sum(legit.values()),
        "legit": dict(legit),
        "clients": dict(tally),
        "notes": notes,
        **extra,
    }
    say(
        f"peak RSS {result['peak_rss_mb']} MB, max {result['fds_max']} fds, max {result['upstream_max']} upstream; "
        f"down max {worst} (now {result['down_now']}, {result['down_events']} 'is down' log lines"
        f"{', ' + str(result['down_unknown']) + ' probes unanswered' if result['down_unknown'] else ''}); "
        f"legit {result['legit_ok']}/{result['legit_total']} ok ({fmt_counts(legit)}); clients: {fmt_counts(tally)}"
    )
    if result["down_first"]:
        say(f"first 'is down' line: {result['down_first']}")
    with open(args.out, "a") as f:
        f.write(json.dumps(result) + "\n")


def table_main(path):
    rows = [json.loads(line) for line in open(path)]
    cols = ["load", "proxy", "peakMB", "fds", "up", "down", "legit ok", "legit statuses", "clients", "notes"]
    out = []
    for r in rows:
        out.append(
            [
                r["load"],
                r["proxy"],
                f"{r['peak_rss_mb']:.0f}",
                str(r["fds_max"]),
                str(r["upstream_max"]),
                f"{r['down_max']} ({r['down_events']})",
                f"{r['legit_ok']}/{r['legit_total']}",
                fmt_counts(collections.Counter(r["legit"])),
                fmt_counts(collections.Counter(r["clients"])),
                r["notes"],
            ]
        )
    widths = [max(len(c), *(len(row[i]) for row in out)) if out else len(c) for i, c in enumerate(cols)]
    widths[-1] = len(cols[-1])  # the last column is not padded
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    print(line(cols))
    for row in out:
        print(line(row))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backend")
    b.add_argument("--ports", required=True)
    b.add_argument("--delay-ms", type=float, default=200)
    r = sub.add_parser("run")
    r.add_argument("load", choices=sorted(LOADS))
    r.add_argument("--proxy", choices=["ringside", "haproxy"], required=True)
    r.add_argument("--pid", type=int, required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--backend-ports", required=True)
    r.add_argument("--admin")
    r.add_argument("--stats-sock")
    r.add_argument("--log", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("file")
    args = p.parse_args()
    if args.cmd == "backend":
        asyncio.run(backends_main([int(x) for x in args.ports.split(",")], args.delay_ms / 1000))
    elif args.cmd == "run":
        asyncio.run(run_main(args))
    else:
        table_main(args.file)


if __name__ == "__main__":
    sys.exit(main())
