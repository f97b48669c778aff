#!/usr/bin/env python3
"""Latency of session-creating and sticky requests through balancers that
share a Redis session store, from one keep-alive client on loopback.

    store_latency.py APP_A APP_B LB_C [ROUNDS]

APP_A and APP_B are two balancers in app-cookie mode, LB_C one in lb-cookie
mode (host:port each). Each round: a login through A (its response creates
a session), the next request through B (B has never seen the session), a
sticky request through B, a cookieless request through C (a new balancer
cookie) and a request with that cookie through C. Prints the median, p90
and p99 of each kind, in microseconds, as one JSON line.
"""

import http.client
import json
import statistics
import sys
import time


def conn(addr):
    host, port = addr.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=10)


def call(c, method, path, cookie=None):
    headers = {"Cookie": cookie} if cookie else {}
    started = time.perf_counter()
    c.request(method, path, headers=headers)
    r = c.getresponse()
    r.read()
    took = (time.perf_counter() - started) * 1e6
    return r, took


def cookie_of(r, name):
    for k, v in r.getheaders():
        if k.lower() == "set-cookie" and v.startswith(name + "="):
            return v.split(";", 1)[0]
    return None


def main():
    a, b, c = (conn(x) for x in sys.argv[1:4])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
    kinds = {k: [] for k in ("login", "first-other", "sticky", "new-cookie", "cookie-sticky")}
    lost = 0
    for i in range(rounds):
        r, t = call(a, "POST", f"/login?user=u{i}")
        kinds["login"].append(t)
        session = cookie_of(r, "session_id")
        r, t = call(b, "GET", "/profile", session)
        kinds["first-other"].append(t)
        lost += r.status != 200
        r, t = call(b, "GET", "/profile", session)
        kinds["sticky"].append(t)
        r, t = call(c, "GET", "/")
        kinds["new-cookie"].append(t)
        lb = cookie_of(r, "SERVERID")
        r, t = call(c, "GET", "/", lb)
        kinds["cookie-sticky"].append(t)
    out = {"rounds": rounds, "lost": lost}
    for k, v in kinds.items():
        q = statistics.quantiles(v, n=100)
        out[k] = {"p50": round(statistics.median(v)), "p90": round(q[89]), "p99": round(q[98])}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
