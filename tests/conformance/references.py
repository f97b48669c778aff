#!/usr/bin/env python3
"""Measures HAProxy 2.6 and nginx 1.22 on the cases of the conformance suite.

Each case writes exact bytes from a raw socket to each reference proxy; a raw
recording backend behind them records what it received and answers with
scripted bytes. The script prints, per case and proxy, what the client got
(status lines, key headers, body) and what the backend received (request
lines, key headers, body framing). Loopback only; every wait is bounded (the
whole run takes about 20 s).

    python3 tests/conformance/references.py            # every case
    python3 tests/conformance/references.py 4 9        # cases whose id starts so

Needs haproxy and nginx on PATH (Debian: apt-get install haproxy nginx), and
ab for cases 6c and 6d. Run as any user: both run from a temp dir, in the foreground.
"""

import gzip
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
KEY_HEADERS = (
    "host", "content-length", "transfer-encoding", "connection", "cookie", "set-cookie",
    "cache-control", "x-forwarded-for", "te", "trailer", "x-checksum", "link",
    "content-encoding", "keep-alive", "upgrade", "x-smuggled", "proxy-connection", "x-private",
    "x-resp", "x-kept",
)

# --------------------------------------------------------------------------
# A raw recording backend.


class Backend:
    """Records every byte per connection; answers each complete request with
    `self.answer(head_bytes)`: bytes, or a list of (delay_s, bytes) pieces
    where bytes None closes the connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []  # [bytearray] of the current case
        self.generation = 0  # bumped per case: a reused connection starts a new record
        self.answer = lambda head: ok("ok")
        threading.Thread(target=self.accept, daemon=True).start()

    def reset(self, answer):
        with self.lock:
            self.conns = []
            self.generation += 1
            self.answer = answer

    def received(self):
        with self.lock:
            return [bytes(c) for c in self.conns if c]

    def accept(self):
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(10)
        rec, generation = None, None
        buf = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                with self.lock:
                    if generation != self.generation:
                        rec, generation = bytearray(), self.generation
                        self.conns.append(rec)
                    rec += data
                buf += data
                while True:
                    end = request_end(buf)
                    if end is None:
                        break
                    head, buf = buf[:end], buf[end:]
                    answer = self.answer(head)
                    if isinstance(answer, bytes):
                        answer = [(0, answer)]
                    for delay, piece in answer:
                        time.sleep(delay)
                        if piece is None:  # close after answering
                            return
                        c.sendall(piece)
        except OSError:
            return
        finally:
            c.close()


def find_head_end(buf):
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = buf.find(sep)
        if i >= 0:
            return i + len(sep)
    return None


def request_end(buf):
    """Where the first complete request in `buf` ends, or None."""
    h = find_head_end(buf)
    if h is None:
        return None
    head = parse_head(buf[:h])
    if head["te"] and "chunked" in head["te"].lower():
        end = chunked_end(buf, h)
        return end
    return h + head["cl"] if len(buf) >= h + head["cl"] else None


def chunked_end(buf, i):
    while True:
        nl = buf.find(b"\n", i)
        if nl < 0:
            return None
        size_text = buf[i:nl].split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return len(buf)  # malformed: treat as the end
        i = nl + 1
        if size == 0:
            while True:  # trailer lines up to an empty line
                nl = buf.find(b"\n", i)
                if nl < 0:
                    return None
                line, i = buf[i:nl], nl + 1
                if line in (b"", b"\r"):
                    return i
        if len(buf) < i + size + 1:
            return None
        i += size
        i += 2 if buf[i:i + 2] == b"\r\n" else 1


def parse_head(raw):
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    fields = []
    for line in lines[1:]:
        if b":" in line:
            n, v = line.split(b":", 1)
            fields.append((n.decode("latin-1").strip().lower(), v.strip()))
    cl = [v for n, v in fields if n == "content-length"]
    te = [v for n, v in fields if n == "transfer-encoding"]
    try:
        cl_value = int(cl[0]) if cl else 0
    except ValueError:
        cl_value = 0
    return {
        "start": lines[0].decode("latin-1"),
        "fields": fields,
        "cl": cl_value,
        "te": b", ".join(te).decode("latin-1") if te else None,
    }


def ok(body, extra=""):
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n{body}".encode()


def like_uvicorn(head, body):
    """What uvicorn does: keep-alive for HTTP/1.1 requests; an HTTP/1.0 one
    is answered without a length, delimited by closing."""
    if head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0"):
        return [(0, f"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}".encode()), (0, None)]
    return ok(body)


def chunked(body, extra="", trailer=""):
    return (f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{extra}\r\n"
            f"{len(body):x}\r\n{body}\r\n0\r\n{trailer}\r\n").encode()



# --------------------------------------------------------------------------
# Reference proxies.

HAPROXY_CFG = """
global
    maxconn 256
defaults
    mode http
    option forwardfor
    timeout connect 1s
    timeout client 5s
    timeout server 500ms
frontend plain
    bind {host}:{plain}
    default_backend b
backend b
    server s1 {host}:{backend}
frontend sticky
    bind {host}:{sticky}
    default_backend bc
backend bc
    cookie SERVERID insert indirect nocache
    server s1 {host}:{backend} cookie s1
"""

NGINX_LOCATION = """
            proxy_pass http://{host}:{backend};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 500ms;
            proxy_send_timeout 500ms;
"""

NGINX_CFG = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    server {{
        listen {host}:{plain};
        location / {{ {location} }}
        location /unbuffered/ {{ {location} proxy_request_buffering off; }}
    }}
}}
"""


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, within=5.0):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def start_refs(tmp, backend):
    ports = {"haproxy": free_port(), "haproxy-sticky": free_port(), "nginx": free_port()}
    with open(f"{tmp}/haproxy.cfg", "w") as f:
        f.write(HAPROXY_CFG.format(host=HOST, plain=ports["haproxy"],
                                   sticky=ports["haproxy-sticky"], backend=backend.port))
    location = NGINX_LOCATION.format(host=HOST, backend=backend.port)
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(NGINX_CFG.format(dir=tmp, host=HOST, plain=ports["nginx"], location=location))
    procs = [
        subprocess.Popen(["haproxy", "-db", "-f", f"{tmp}/haproxy.cfg"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["nginx", "-p", tmp, "-c", f"{tmp}/nginx.conf"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    for p in ports.values():
        wait_port(p)
    return ports, procs


# --------------------------------------------------------------------------
# The client side.


def exchange(port, steps, wait=2.0):
    """Runs `steps` (bytes to send, ("sleep", s), ("shut",), or ("close",))
    on one connection, then reads until the proxy closes or `wait` seconds
    pass without a byte."""
    s = socket.create_connection((HOST, port), timeout=5)
    out = b""
    try:
        for step in steps:
            if isinstance(step, bytes):
                s.sendall(step)
            elif step[0] == "sleep":
                time.sleep(step[1])
            elif step[0] == "shut":
                s.shutdown(socket.SHUT_WR)
            elif step[0] == "close":
                s.close()
                return b"(client closed)"
            elif step[0] == "read":  # read one response before going on
                s.settimeout(wait)
                try:
                    out += s.recv(65536)
                except OSError:
                    pass
        s.settimeout(wait)
        while True:
            try:
                data = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                out += b"" if out else b"(no answer; reset or timeout)"
                break
            if not data:
                break
            out += data
    finally:
        s.close()
    return out


def summarize_messages(raw, is_request):
    """Start lines and key headers of every message in `raw`, with bodies."""
    parts = []
    i = 0
    while i < len(raw):
        rest = raw[i:]
        h = find_head_end(rest)
        if h is None:
            parts.append(f"…{rest[:60]!r}")
            break
        head = parse_head(rest[:h])
        fields = [f"{n}: {v.decode('latin-1')!s}" for n, v in head["fields"] if n in KEY_HEADERS]
        start = head["start"]
        body_start = i + h
        if not is_request and start.split(" ")[1:2] and start.split(" ")[1].startswith("1"):
            parts.append(f"[{start}] {'; '.join(fields)}")
            i = body_start
            continue
        if head["te"] and "chunked" in head["te"].lower():
            end = chunked_end(raw, body_start)
            end = len(raw) if end is None else end
            body = dechunk(raw[body_start:end])
            framing = "chunked"
        elif any(n == "content-length" for n, _ in head["fields"]) or is_request:
            end = min(body_start + head["cl"], len(raw))
            body = raw[body_start:end]
            framing = f"CL {head['cl']}"
        elif start.startswith("HTTP/") and (start.split(" ")[1] in ("204", "304")):
            end, body, framing = body_start, b"", "none"
        else:
            end, body, framing = len(raw), raw[body_start:], "to close"
        if start.startswith("HEAD ") or start.startswith("CONNECT "):
            framing += " (head)"
        parts.append(f"[{start}] {'; '.join(fields)} | {framing} body={body[:40]!r}")
        i = end
    return parts


def dechunk(raw):
    out, i = b"", 0
    while True:
        nl = raw.find(b"\n", i)
        if nl < 0:
            return out
        try:
            size = int(raw[i:nl].split(b";")[0].strip(), 16)
        except ValueError:
            return out + b"<bad chunk>"
        if size == 0:
            tr = raw[nl + 1:].strip()
            return out + (b" +trailer " + tr if tr else b"")
        out += raw[nl + 1:nl + 1 + size]
        i = nl + 1 + size
        i += 2 if raw[i:i + 2] == b"\r\n" else 1


# --------------------------------------------------------------------------
# The cases, by item of issue #16.

H = b"Host: app.example\r\n"
CLOSE = b"Connection: close\r\n"
GZ = gzip.compress(b"hello", mtime=0)


def req(first, *fields, body=b""):
    return first.encode() + b"\r\n" + b"".join(fields) + b"\r\n" + body


def upload(path):
    size, pieces = 4096, 15
    steps = [req(f"POST {path} HTTP/1.1", H, CLOSE, f"Content-Length: {size * pieces}\r\n".encode())]
    for _ in range(pieces):
        steps += [("sleep", 0.1), b"u" * size]
    return steps


def smuggle_after(first):
    return [first + req("POST /smuggled HTTP/1.1", H, b"Content-Length: 5\r\n",
                        b"Transfer-Encoding: chunked\r\n", CLOSE, body=b"0\r\n\r\nX")]


LONG_TE = b"Transfer-Encoding:" + b" " * 300 + b"chunked\r\n"

CASES = [
    # id, what, client steps, backend answer, proxies (None: all plain ones)
    ("1a", "steady upload 1.5 s, server timeout 500 ms", upload("/up"), lambda h: ok("got it"), None),
    ("1a'", "same, nginx unbuffered", upload("/unbuffered/up"), lambda h: ok("got it"), ["nginx"]),
    ("1b", "backend silent 1.5 s", [req("GET /silent HTTP/1.1", H, CLOSE)],
     lambda h: [(1.5, ok("late"))], None),
    ("1c", "slow steady download 1.5 s",
     [req("GET /down HTTP/1.1", H, CLOSE)],
     lambda h: [(0, b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n")] + [(0.1, b"d")] * 15, None),
    ("2a", "Cookie city=Zürich; SERVERID=s1",
     [req("GET /c HTTP/1.1", H, CLOSE, "Cookie: city=Zürich; SERVERID=s1\r\n".encode())],
     lambda h: ok("c"), ["haproxy-sticky", "nginx"]),
    ("2b", "Cookie a=1;b=2; SERVERID=s1",
     [req("GET /c HTTP/1.1", H, CLOSE, b"Cookie: a=1;b=2; SERVERID=s1\r\n")], lambda h: ok("c"),
     ["haproxy-sticky", "nginx"]),
    ("2c", "Cookie SERVERID=s1; a=1;b=2",
     [req("GET /c HTTP/1.1", H, CLOSE, b"Cookie: SERVERID=s1; a=1;b=2\r\n")], lambda h: ok("c"),
     ["haproxy-sticky", "nginx"]),
    ("3", "answer CL 100 + TE chunked (5 bytes)", [req("GET / HTTP/1.1", H, CLOSE)],
     lambda h: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n", None),
    ("4a", "two Host fields", [req("GET / HTTP/1.1", b"Host: a.example\r\nHost: b.example\r\n", CLOSE)],
     lambda h: ok("x"), None),
    ("4b", "no Host on HTTP/1.1", [req("GET / HTTP/1.1", CLOSE)], lambda h: ok("x"), None),
    ("4c", "Host: a b", [req("GET / HTTP/1.1", b"Host: a b\r\n", CLOSE)], lambda h: ok("x"), None),
    ("4d", "Host: evil.com/x@a", [req("GET / HTTP/1.1", b"Host: evil.com/x@a\r\n", CLOSE)],
     lambda h: ok("x"), None),
    ("4e", "Connection: host", [req("GET / HTTP/1.1", H, b"Connection: host, close\r\n")],
     lambda h: ok("x"), None),
    ("4g", "Connection options name fields, both ways",
     [req("GET / HTTP/1.1", H, b"Connection: keep-alive, X-Private\r\n", b"X-Private: s\r\n",
          b"Keep-Alive: timeout=5\r\n", b"Proxy-Connection: keep-alive\r\n", b"X-Kept: k\r\n", CLOSE)],
     lambda h: b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: X-Resp\r\nX-Resp: r\r\n"
               b"Keep-Alive: timeout=9\r\nX-Kept: k\r\n\r\nx", None),
    ("4f", "absolute-form, other Host",
     [req("GET http://origin.example/p?q=1 HTTP/1.1", b"Host: other.example\r\n", CLOSE)],
     lambda h: ok("x"), None),
    ("5a", "GET with chunked body",
     [req("GET /g HTTP/1.1", H, CLOSE, b"Transfer-Encoding: chunked\r\n", body=b"5\r\nhello\r\n0\r\n\r\n")],
     lambda h: ok("x"), None),
    ("5b", "HEAD with chunked body",
     [req("HEAD /h HTTP/1.1", H, CLOSE, b"Transfer-Encoding: chunked\r\n", body=b"5\r\nhello\r\n0\r\n\r\n")],
     lambda h: b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", None),
    ("6a", "HTTP/1.0 keep-alive, two requests",
     [req("GET /a HTTP/1.0", H, b"Connection: keep-alive\r\n"), ("read",),
      req("GET /b HTTP/1.0", H)], lambda h: like_uvicorn(h, "ten"), None),
    ("6b", "HTTP/1.0 keep-alive, chunked answer",
     [req("GET /a HTTP/1.0", H, b"Connection: keep-alive\r\n")], lambda h: chunked("hello"), None),
    ("7a", "request TE gzip, chunked",
     [req("POST /z HTTP/1.1", H, CLOSE, b"Transfer-Encoding: gzip, chunked\r\n",
          body=f"{len(GZ):x}\r\n".encode() + GZ + b"\r\n0\r\n\r\n")], lambda h: ok("x"), None),
    ("7b", "answer TE gzip, chunked", [req("GET /z HTTP/1.1", H, CLOSE)],
     lambda h: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + f"{len(GZ):x}\r\n".encode()
               + GZ + b"\r\n0\r\n\r\n", None),
    ("8a", "bad chunk size",
     [req("POST /p HTTP/1.1", H, CLOSE, b"Transfer-Encoding: chunked\r\n", body=b"zz\r\nhello\r\n0\r\n\r\n")],
     lambda h: ok("x"), None),
    ("8b", "bare LF after chunk data",
     [req("POST /p HTTP/1.1", H, CLOSE, b"Transfer-Encoding: chunked\r\n", body=b"5\r\nhello\n0\r\n\r\n")],
     lambda h: ok("x"), None),
    ("8c", "client aborts its upload (CL 1000, 10 sent)",
     [req("POST /p HTTP/1.1", H, b"Content-Length: 1000\r\n", body=b"0123456789"), ("sleep", 0.3),
      ("close",)], lambda h: ok("x"), None),
    ("9a", "CL+TE after a request with Upgrade", smuggle_after(req("GET /u HTTP/1.1", H, b"Upgrade: foo\r\n")),
     lambda h: ok("x"), None),
    ("9b", "CL+TE with a 300-byte TE line",
     [req("POST /smuggled HTTP/1.1", H, b"Content-Length: 5\r\n", LONG_TE, CLOSE, body=b"0\r\n\r\nX")],
     lambda h: ok("x"), None),
    ("9c", "CL+TE after a 300-byte chunk extension",
     smuggle_after(req("POST /e HTTP/1.1", H, b"Transfer-Encoding: chunked\r\n",
                       body=b"1;e=" + b"a" * 300 + b"\r\nx\r\n0\r\n\r\n")), lambda h: ok("x"), None),
    ("9d", "CL+TE after a 300-byte chunk-size line",
     smuggle_after(req("POST /e HTTP/1.1", H, b"Transfer-Encoding: chunked\r\n",
                       body=b"0" * 300 + b"1\r\nx\r\n0\r\n\r\n")), lambda h: ok("x"), None),
    ("10a", "new session, answer Cache-Control: public", [req("GET / HTTP/1.1", H, CLOSE)],
     lambda h: ok("x", "Cache-Control: public, max-age=60\r\n"), ["haproxy-sticky"]),
    ("10b", "new session, no Cache-Control", [req("GET / HTTP/1.1", H, CLOSE)], lambda h: ok("x"),
     ["haproxy-sticky"]),
    ("11a", "CONNECT", [req("CONNECT origin.example:443 HTTP/1.1", b"Host: origin.example:443\r\n", CLOSE)],
     lambda h: ok("x"), None),
    ("11b", "GET authority-form", [req("GET origin.example:80 HTTP/1.1", H, CLOSE)], lambda h: ok("x"), None),
    ("11c", "GET *", [req("GET * HTTP/1.1", H, CLOSE)], lambda h: ok("x"), None),
    ("11d", "OPTIONS *", [req("OPTIONS * HTTP/1.1", H, CLOSE)], lambda h: ok("x"), None),
    ("12", "two X-Forwarded-For lines",
     [req("GET / HTTP/1.1", H, CLOSE, b"X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\n")],
     lambda h: ok("x"), None),
    ("13a", "TE: trailers, answer with a trailer", [req("GET / HTTP/1.1", H, CLOSE, b"TE: trailers\r\n")],
     lambda h: chunked("hello", "Trailer: X-Checksum\r\n", "X-Checksum: abc\r\n"), None),
    ("13b", "request with a trailer",
     [req("POST /t HTTP/1.1", H, CLOSE, b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n",
          body=b"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")], lambda h: ok("x"), None),
    ("13c", "103 Early Hints", [req("GET / HTTP/1.1", H, CLOSE)],
     lambda h: b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + ok("x"), None),
    ("14", "HTTP/1.2", [req("GET / HTTP/1.2", H, CLOSE)], lambda h: ok("x"), None),
    ("15", "half-close after a complete request", [req("GET / HTTP/1.1", H), ("shut",)],
     lambda h: ok("half"), None),
]


def run_ab(port):
    if not shutil.which("ab"):
        return "ab not installed"
    out = subprocess.run(["ab", "-k", "-n", "500", "-c", "1", "-s", "5", f"http://{HOST}:{port}/ab"],
                         capture_output=True, text=True, timeout=60).stdout
    pick = [l for l in out.splitlines() if l.startswith(("Complete requests", "Failed", "Keep-Alive"))]
    return "; ".join(" ".join(l.split()) for l in pick)


def main():
    wanted = sys.argv[1:]
    tmp = tempfile.mkdtemp(prefix="ringside-refs-")
    os.chmod(tmp, 0o755)  # nginx workers run as another user when started as root
    backend = Backend()
    ports, procs = start_refs(tmp, backend)
    try:
        for cid, what, steps, answer, only in CASES:
            if wanted and not any(cid.startswith(w) for w in wanted):
                continue
            print(f"== {cid}: {what}")
            for name in only or ["haproxy", "nginx"]:
                backend.reset(answer)
                started = time.time()
                got = exchange(ports[name], steps)
                took = time.time() - started
                time.sleep(0.1)  # let the backend see a close or late bytes
                seen = backend.received()
                print(f"  {name:15} client ({took:.1f} s): " + " || ".join(summarize_messages(got, False)))
                print(f"  {'':15} backend ({len(seen)} conn): "
                      + " || ".join(m for c in seen for m in summarize_messages(c, True)))
        if not wanted or any("6".startswith(w) or w.startswith("6") for w in wanted):
            for cid, what, answer in [
                ("6c", "backend answers 1.0 requests unframed, like uvicorn", lambda h: like_uvicorn(h, "ab")),
                ("6d", "backend answers with a length", lambda h: ok("ab")),
            ]:
                print(f"== {cid}: ab -k -n 500 -c 1, {what}")
                for name in ("haproxy", "nginx"):
                    backend.reset(answer)
                    print(f"  {name:15} {run_ab(ports[name])}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
