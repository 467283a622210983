#!/usr/bin/env python3
"""Paired comparison of two builds of scim-operator on a shared, noisy machine.

    bench/ab_pair.py BASE_BINARY NEW_BINARY [ROUNDS=5] [SECONDS=5]
    AB_OPS=patch:patch.lua,create:create.lua bench/ab_pair.py ...

Both servers run at once, pinned to the same CPU (only one is loaded at a
time), each preloaded with the same 10,000 users; the wrk runs of the two
alternate (the order flips every round), so a slower minute of the machine
hits both. Prints each pair's ratio (new / base) and their median: on a VM
whose throughput drifts 10% from one minute to the next, the paired median
is the figure to compare, not two separate `make bench` runs.
"""
import os, sys, secrets, tempfile, statistics
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb
OPS = [tuple(x.split(":")) for x in os.environ.get("AB_OPS", "get:get.lua,filter:filter.lua").split(",")]
bins = {"base": sys.argv[1], "new": sys.argv[2]}
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
secs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
cfg = rb.Config(duration=secs, warmup=1, connections=16, threads=1, users=10000,
                preload_concurrency=32, server_cpu=0, client_cpu=1, startup_timeout=60)
servers = {}
try:
    for k, b in bins.items():
        class A: pass
        a = A(); a.ours = b; a.bare = None
        tmp = Path(tempfile.mkdtemp()); token = secrets.token_urlsafe(32)
        env = dict(os.environ); env["SCIM_TOKEN"] = token; env["RUST_LOG"] = "warn"
        s = rb.Server(k, rb.server_argv("ours", a, cfg, tmp), env, tmp)
        url = s.wait_for_url(60); data = tmp / "u.tsv"
        rb.preload(url, token, cfg.users, cfg.preload_concurrency, data)
        servers[k] = (s, url, token, data, tmp)
    res = {(k, op): [] for k in bins for op, _ in OPS}
    for op, script in OPS:
        for k, (s, url, token, data, tmp) in servers.items():
            rb.run_wrk(cfg, url, token, data, script, 2, tmp / "w.json")
        for r in range(rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(list(servers)))
            for k in order:
                s, url, token, data, tmp = servers[k]
                res[(k, op)].append(rb.run_wrk(cfg, url, token, data, script, secs, tmp / "r.json")["rps"])
        o, n = res[("base", op)], res[("new", op)]
        ratios = [b / a for a, b in zip(o, n)]
        print(f"{op}: base {[round(x) for x in o]} new {[round(x) for x in n]} ratio median {statistics.median(ratios):.3f} "
              f"(pairs {[round(x, 3) for x in ratios]}), medians {statistics.median(o):.0f} vs {statistics.median(n):.0f} "
              f"= {statistics.median(n) / statistics.median(o):.3f}", flush=True)
finally:
    for s, *_ in servers.values():
        s.stop()
