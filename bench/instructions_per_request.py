#!/usr/bin/env python3
"""Instructions per request of a scim-operator build, counted by callgrind.

    bench/instructions_per_request.py BINARY LABEL [SECONDS=5]

Starts `serve` under `valgrind --tool=callgrind` with instrumentation off,
preloads 2,000 users, then for GET by id and filter counts the instructions
the server executes (all threads, user space) over a wrk run and divides by
the requests answered. Unlike req/s on a shared VM, the figure repeats within
about 1% between runs, so it tells a change of a few % per request from
noise. Needs valgrind (apt) and wrk. Profiles are left in /tmp/ipr for
`callgrind_annotate --inclusive=no`.
"""
import os, sys, subprocess, secrets, tempfile, time, re
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_bench as rb
Path("/tmp/ipr").mkdir(exist_ok=True)

binary, label = sys.argv[1], sys.argv[2]
secs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
cfg = rb.Config(duration=secs, warmup=1, connections=16, threads=1, users=2000,
                preload_concurrency=16, server_cpu=0, client_cpu=1, startup_timeout=120)
tmp = Path(tempfile.mkdtemp())
token = secrets.token_urlsafe(32)
env = dict(os.environ); env["SCIM_TOKEN"] = token; env["RUST_LOG"] = "warn"
data_dir = tmp / "data"; data_dir.mkdir()
argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file=/tmp/ipr/cg-{label}.%p.out",
        binary, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
server = rb.Server("ours", argv, env, tmp)
try:
    url = server.wait_for_url(120)
    data = tmp / "users.tsv"
    rb.preload(url, token, cfg.users, cfg.preload_concurrency, data)
    pid = server.proc.pid
    for op, script in (("get", "get.lua"), ("filter", "filter.lua")):
        rb.run_wrk(cfg, url, token, data, script, 1, tmp / "w.json")
        subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True)
        subprocess.run(["callgrind_control", "-i", "on", str(pid)], capture_output=True)
        r = rb.run_wrk(cfg, url, token, data, script, secs, tmp / f"{op}.json")
        subprocess.run(["callgrind_control", "-i", "off", str(pid)], capture_output=True)
        d = subprocess.run(["callgrind_control", "-d", op, str(pid)], capture_output=True, text=True)
        time.sleep(1)
        files = sorted(Path("/tmp/ipr").glob(f"cg-{label}.{pid}.out*"), key=lambda p: p.stat().st_mtime)
        f = files[-1]
        summ = subprocess.run(["callgrind_annotate", str(f)], capture_output=True, text=True).stdout
        m = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", summ)
        total = int(m.group(1).replace(",", "")) if m else 0
        n = r["requests"]
        print(f"{label} {op}: {n} req, Ir/req {total / max(n,1):.0f}  file {f}", flush=True)
finally:
    server.stop()
