#!/usr/bin/env python3
"""Benchmark scim-operator against the Python peer and a bare axum handler.

    bench/run_bench.py --ours target/release/scim-operator \\
                       --bare target/release/examples/bare_handler \\
                       [--targets ours,peer,bare] [--out BENCHMARKS.md]

For each target, one after the other (never two servers at once):

1. start it pinned to one core (`taskset -c $BENCH_SERVER_CPU`, default 0):
   - ours: `scim-operator serve --listen 127.0.0.1:0 --admin-listen
     127.0.0.1:0 --data-dir <fresh dir on disk>` with SCIM_TOKEN set,
     RUST_LOG=warn (durable SQLite store, as shipped);
   - peer: PyPI `scim2-server` as its ASGI app under uvicorn, one worker
     (bench/peer_app.py; in-memory storage, same bearer token check);
   - bare: examples/bare_handler (fixed User document, no SCIM work);
2. preload $BENCH_USERS (10,000) users with a concurrent Python client
   (every create must answer 201), write "id<TAB>userName" to a file;
3. for each operation (GET by id, filter userName eq, PATCH replace,
   create): a warm-up wrk run, then the measured wrk run with
   $BENCH_CONNECTIONS (16) connections, pinned to the other core
   (`taskset -c $BENCH_CLIENT_CPU`, default 1);
4. read VmRSS after preload and VmHWM (peak RSS) at the end from
   /proc/PID/status, stop the server.

Then write the markdown report (--out, default BENCHMARKS.md at the repo
root). Any non-2xx answer or socket error during a measured run is flagged
in the report and makes the script exit 1; a missing binary or a server that
does not start makes it exit 2. --check-targets also exits 1 when a target of
issue #2 is missed (>= 20x peer on every op, GET >= 0.5x bare, p99 < 5 ms,
peak RSS <= 1/5 of the peer).

Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, default 2),
BENCH_CONNECTIONS (16), BENCH_THREADS (wrk threads, 1), BENCH_USERS (10000),
BENCH_PRELOAD_CONCURRENCY (32), BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1),
BENCH_STARTUP_TIMEOUT (s, 60).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import queue
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
WRK_DIR = BENCH / "wrk"
PEER_APP = BENCH / "peer_app.py"
URL_LINE = re.compile(r"SCIM base URL:\s*(\S+)")

OPS = [
    # (key, title, wrk script)
    ("get", "GET by id (`GET /Users/{id}`)", "get.lua"),
    ("filter", 'Filter (`GET /Users?filter=userName eq "..."`)', "filter.lua"),
    ("patch", "PATCH replace (`PATCH /Users/{id}`, Entra style `Replace displayName`)", "patch.lua"),
    ("create", "Create (`POST /Users`)", "create.lua"),
]
TARGET_NAMES = {
    "ours": "scim-operator",
    "peer": "scim2-server (Python peer)",
    "bare": "bare axum handler",
}


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v else default


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    return int(v) if v else default


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# Server processes
# --------------------------------------------------------------------------
class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.argv = argv
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        log(f"{name}: starting {shlex.join(argv)}")
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line.rstrip("\n"))
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no 'SCIM base URL:' line within {timeout:.0f}s\n{self.logs()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait()
                raise BenchError(f"{self.name}: exited with status {rc} before printing its URL\n{self.logs()}")
            m = URL_LINE.search(line)
            if m:
                return m.group(1).rstrip("/")

    def status_kb(self, key: str) -> int | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float:
        """utime + stime of the whole server process (all threads), in seconds."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{self.name}: still running 10s after SIGTERM, killing it")
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def logs(self, limit: int = 40) -> str:
        try:
            err = self.stderr_path.read_text(errors="replace").splitlines()[-limit:]
        except OSError:
            err = []
        return "\n".join(["--- stdout ---", *self.stdout_lines[-limit:], "--- stderr ---", *err])


# --------------------------------------------------------------------------
# Preload
# --------------------------------------------------------------------------
def user_doc(i: int, run: str) -> dict:
    name = f"bench-{run}-{i:05d}@example.com"
    return {
        "schemas": [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        ],
        "externalId": f"ext-{run}-{i:05d}",
        "userName": name,
        "active": True,
        "displayName": f"Bench User {i}",
        "name": {"givenName": "Bench", "familyName": f"User{i}", "formatted": f"Bench User{i}"},
        "emails": [{"primary": True, "type": "work", "value": name}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
            "department": f"Dept {i % 20}",
            "employeeNumber": str(i),
        },
    }


class _HTTPConn:
    """A minimal HTTP/1.1 keep-alive client connection (asyncio streams).

    httpx costs ~5 ms of client CPU per request here, which made the preload
    client, not the server, the bottleneck; this costs a few dozen µs.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if "content-length" in hdrs:
            data = await self.reader.readexactly(int(hdrs["content-length"]))
        elif hdrs.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunks.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(c[:-2] for c in chunks)
        else:
            data = await self.reader.read()
            self.close()
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _preload(url: str, token: str, n: int, concurrency: int, run: str) -> list[tuple[str, str]]:
    parsed = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/scim+json", "Accept": "application/scim+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    out: list[tuple[str, str] | None] = [None] * n
    next_i = 0
    errors: list[str] = []

    async def worker() -> None:
        nonlocal next_i
        conn = _HTTPConn(parsed.hostname or "127.0.0.1", parsed.port or 80)
        try:
            while next_i < n and not errors:
                i = next_i
                next_i += 1
                doc = user_doc(i, run)
                status, body = await conn.request("POST", parsed.path + "/Users", headers, json.dumps(doc).encode())
                if status != 201:
                    errors.append(f"POST /Users #{i} -> {status}: {body[:300]!r}")
                    return
                out[i] = (json.loads(body)["id"], doc["userName"])
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if errors:
        raise BenchError("preload failed: " + errors[0])
    return [x for x in out if x is not None]


def preload(url: str, token: str, n: int, concurrency: int, data_file: Path) -> float:
    run = secrets.token_hex(4)
    t0 = time.monotonic()
    rows = asyncio.run(_preload(url, token, n, concurrency, run))
    elapsed = time.monotonic() - t0
    if len(rows) != n:
        raise BenchError(f"preload created {len(rows)} of {n} users")
    data_file.write_text("".join(f"{i}\t{u}\n" for i, u in rows))
    return elapsed


def sanity_check(url: str, token: str, data_file: Path) -> None:
    """One request of each kind before wrk, so a misconfiguration fails loudly."""
    parsed = urllib.parse.urlsplit(url)
    uid, uname = data_file.read_text().splitlines()[0].split("\t")
    h = {"Accept": "application/scim+json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    hb = {**h, "Content-Type": "application/scim+json"}
    filter_q = urllib.parse.urlencode({"filter": f'userName eq "{uname}"'}, quote_via=urllib.parse.quote)
    patch = json.dumps({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "displayName", "value": "Sanity"}],
    }).encode()

    async def run() -> list[tuple[str, int, bytes]]:
        conn = _HTTPConn(parsed.hostname or "127.0.0.1", parsed.port or 80)
        try:
            return [
                ("GET by id", *await conn.request("GET", f"{parsed.path}/Users/{uid}", h, b"")),
                ("filter", *await conn.request("GET", f"{parsed.path}/Users?{filter_q}", h, b"")),
                ("PATCH", *await conn.request("PATCH", f"{parsed.path}/Users/{uid}", hb, patch)),
            ]
        finally:
            conn.close()

    checks = asyncio.run(run())
    for what, status, body in checks:
        if not 200 <= status < 300:
            raise BenchError(f"sanity check {what} -> {status}: {body[:300]!r}")
    f = json.loads(checks[1][2])
    if "totalResults" in f and f.get("totalResults") != 1:
        raise BenchError(f"sanity check: filter on {uname!r} found {f.get('totalResults')} users, expected 1")


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------
def wrk_cmd(cfg: "Config", url: str, script: str, duration: float) -> list[str]:
    parsed = urllib.parse.urlsplit(url)
    root = f"{parsed.scheme}://{parsed.netloc}/"
    return [
        "taskset", "-c", str(cfg.client_cpu),
        "wrk", "-t", str(cfg.threads), "-c", str(cfg.connections),
        "-d", f"{max(1, round(duration))}s", "--timeout", "5s",  # wrk takes whole seconds
        "-s", str(WRK_DIR / script), root,
    ]


def run_wrk(cfg: "Config", url: str, token: str, data_file: Path, script: str,
            duration: float, result_file: Path) -> dict:
    env = dict(os.environ)
    env.update(
        BENCH_BASE_PATH=urllib.parse.urlsplit(url).path,
        BENCH_TOKEN=token,
        BENCH_DATA=str(data_file),
        BENCH_RUN_ID=secrets.token_hex(4),
        BENCH_RESULT=str(result_file),
    )
    cmd = wrk_cmd(cfg, url, script, duration)
    result_file.unlink(missing_ok=True)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 120)
    if p.returncode != 0 or not result_file.exists():
        raise BenchError(f"wrk failed ({p.returncode}): {shlex.join(cmd)}\n{p.stdout}\n{p.stderr}")
    res = json.loads(result_file.read_text())
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["wrk_stdout"] = p.stdout
    return res


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------
@dataclass
class Config:
    duration: int
    warmup: int
    connections: int
    threads: int
    users: int
    preload_concurrency: int
    server_cpu: int
    client_cpu: int
    startup_timeout: float


@dataclass
class TargetResult:
    key: str
    ops: dict[str, dict] = field(default_factory=dict)
    rss_after_preload_kb: int | None = None
    hwm_kb: int | None = None
    # Peak RSS while the server still holds the preloaded users (before the
    # create run adds its own): the "with 10,000 users" figure.
    hwm_preloaded_kb: int | None = None
    preload_s: float | None = None
    busy: float | None = None


def server_argv(key: str, args, cfg: Config, tmp: Path) -> list[str]:
    pin = ["taskset", "-c", str(cfg.server_cpu)]
    if key == "ours":
        data = tmp / "ours-data"
        data.mkdir()
        return pin + [str(Path(args.ours).resolve()), "serve", "--listen", "127.0.0.1:0",
                      "--admin-listen", "127.0.0.1:0", "--data-dir", str(data)] \
            + shlex.split(os.environ.get("BENCH_OURS_ARGS", ""))
    if key == "peer":
        return pin + [sys.executable, str(PEER_APP), "--listen", "127.0.0.1:0"]
    if key == "bare":
        return pin + [str(Path(args.bare).resolve()), "127.0.0.1:0"]
    raise ValueError(key)


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs' time spent busy over a short sample (from /proc/stat)."""
    def snap() -> tuple[int, int]:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f[:8]), idle
    t0, i0 = snap()
    time.sleep(seconds)  # a measurement window, not a wait for readiness
    t1, i1 = snap()
    return 0.0 if t1 == t0 else 1 - (i1 - i0) / (t1 - t0)


def bench_target(key: str, args, cfg: Config, tmp: Path) -> TargetResult:
    token = "" if key == "bare" else secrets.token_urlsafe(32)
    env = dict(os.environ)
    env["SCIM_TOKEN"] = token
    env.setdefault("RUST_LOG", "warn")
    res = TargetResult(key)
    res.busy = cpu_busy()
    if res.busy > 0.1:
        log(f"warning: the CPUs were {res.busy:.0%} busy just before {key} starts; "
            "other work on this machine skews the numbers")
    server = Server(key, server_argv(key, args, cfg, tmp), env, tmp)
    try:
        url = server.wait_for_url(cfg.startup_timeout)
        log(f"{key}: up at {url}; preloading {cfg.users} users")
        data_file = tmp / f"{key}-users.tsv"
        res.preload_s = preload(url, token, cfg.users, cfg.preload_concurrency, data_file)
        res.rss_after_preload_kb = server.status_kb("VmRSS")
        log(f"{key}: preloaded in {res.preload_s:.1f}s, RSS {res.rss_after_preload_kb} kB")
        sanity_check(url, token, data_file)
        for op, _title, script in OPS:
            if op == "create":
                res.hwm_preloaded_kb = server.status_kb("VmHWM")
                log(f"{key}: peak RSS with the preloaded users (VmHWM) {res.hwm_preloaded_kb} kB")
            if cfg.warmup > 0:
                run_wrk(cfg, url, token, data_file, script, cfg.warmup, tmp / "warmup.json")
            cpu0 = server.cpu_seconds()
            r = run_wrk(cfg, url, token, data_file, script, cfg.duration, tmp / f"{key}-{op}.json")
            r["server_cpu"] = (server.cpu_seconds() - cpu0) / (r["duration_us"] / 1e6)
            res.ops[op] = r
            lat = r["latency_us"]
            err = r["errors"]
            log(f"{key} {op}: {r['rps']:.0f} req/s, server CPU {r['server_cpu']:.0%}, p50 {lat['p50'] / 1000:.2f} ms, "
                f"p99 {lat['p99'] / 1000:.2f} ms, status errors {err['status']}, "
                f"socket errors {err['connect'] + err['read'] + err['write'] + err['timeout']}")
            if not server.alive():
                raise BenchError(f"{key}: server died during {op}\n{server.logs()}")
        res.hwm_kb = server.status_kb("VmHWM")
        log(f"{key}: peak RSS (VmHWM) {res.hwm_kb} kB")
    finally:
        server.stop()
    return res


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info() -> dict[str, str]:
    model = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpu": model or platform.processor() or "?",
        "cores": str(os.cpu_count()),
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "wrk": (sh(["wrk", "--version"]).splitlines() or ["?"])[0].split(" Copyright")[0],
        "python": platform.python_version(),
    }


def pkg_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "?"


def fmt_rps(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def fmt_ms(us: float | None) -> str:
    return "—" if us is None else f"{us / 1000:.2f} ms"


def fmt_ratio(a: float | None, b: float | None, suffix: str = "×") -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}{suffix}"


def fmt_mb(kb: int | None) -> str:
    return "—" if kb is None else f"{kb / 1024:.1f} MiB"


def errors_cell(r: dict | None) -> str:
    if r is None:
        return "—"
    e = r["errors"]
    sock = e["connect"] + e["read"] + e["write"] + e["timeout"]
    if e["status"] == 0 and sock == 0:
        return "0"
    parts = []
    if e["status"]:
        parts.append(f"{e['status']} non-2xx")
    if sock:
        parts.append(f"{sock} socket errors")
    return "**⚠ " + ", ".join(parts) + "**"


def write_report(out: Path, results: dict[str, TargetResult], cfg: Config, argv: list[str],
                 started: dt.datetime, targets: list[str]) -> list[str]:
    m = machine_info()
    flagged: list[str] = []
    cols = [k for k in ("ours", "peer", "bare") if k in targets]
    lines: list[str] = []
    w = lines.append
    w("# Benchmarks")
    w("")
    w(f"Generated by `make bench` (`bench/run_bench.py`) on {started.strftime('%Y-%m-%d %H:%M UTC')}.")
    w("")
    w("## Setup")
    w("")
    w(f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, Linux {m['kernel']}; "
      f"{m['wrk']}; Python {m['python']}.")
    w(f"- Command: `{shlex.join(argv)}`")
    w(f"  with BENCH_DURATION={cfg.duration:g} BENCH_WARMUP={cfg.warmup:g} BENCH_CONNECTIONS={cfg.connections} "
      f"BENCH_THREADS={cfg.threads} BENCH_USERS={cfg.users} BENCH_SERVER_CPU={cfg.server_cpu} "
      f"BENCH_CLIENT_CPU={cfg.client_cpu}.")
    w(f"- Each server in turn is pinned to CPU {cfg.server_cpu} (`taskset -c {cfg.server_cpu}`), "
      f"the load generator `wrk -t{cfg.threads} -c{cfg.connections}` (keep-alive) to CPU {cfg.client_cpu}. "
      f"{cfg.users:,} users are preloaded first (each answered 201); then per operation a "
      f"{cfg.warmup:g} s warm-up and a {cfg.duration:g} s measured run, in the order "
      + ", ".join(op for op, _, _ in OPS) + " (creates last, so the other operations see exactly "
      f"{cfg.users:,} users).")
    w("- Servers:")
    if "ours" in targets:
        w("  - **scim-operator**: `scim-operator serve` standalone, embedded SQLite store in a fresh data "
          "dir on disk (creates and PATCHes durable before the answer), bearer key from `SCIM_TOKEN`, "
          "`RUST_LOG=warn`.")
    if "peer" in targets:
        w(f"  - **scim2-server {pkg_version('scim2-server')}** (PyPI, the Python peer): its ASGI app "
          f"(`AsyncInMemoryStorage`, RFC 7643 default schemas, same bearer check) under uvicorn "
          f"{pkg_version('uvicorn')} with one worker, uvloop + httptools (`bench/peer_app.py`). "
          "Not durable: everything is in memory. Its PATCH answers 204 without a body.")
    if "bare" in targets:
        w("  - **bare axum handler** (`examples/bare_handler.rs`): answers every request with a fixed "
          "~700-byte User document, no auth, no storage: the ceiling of the HTTP stack here.")
    w("- Machine busy (all CPUs, 1 s sample) just before each server started; anything but "
      "a few % means other work skewed the numbers: "
      + ", ".join(f"{TARGET_NAMES[c]} {results[c].busy:.0%}" for c in cols
                  if c in results and results[c].busy is not None) + ".")
    w("- *server CPU* is the server process's CPU time over the run's wall time: well under 100% "
      "means the server was not the bottleneck (the load generator or waiting on disk was).")
    w("- Latencies are wrk's (coordinated omission not corrected); p50/p99 in milliseconds. "
      "Any non-2xx answer or socket error is flagged with ⚠.")
    w("")

    def ratio_cols() -> list[str]:
        out = []
        if "ours" in cols and "peer" in cols:
            out.append("ours / peer")
        if "ours" in cols and "bare" in cols:
            out.append("ours / bare")
        return out

    for op, title, _ in OPS:
        w(f"## {title}")
        w("")
        rc = ratio_cols()
        w("| | " + " | ".join(TARGET_NAMES[c] for c in cols) + (" | " + " | ".join(rc) if rc else "") + " |")
        w("|---|" + "---:|" * (len(cols) + len(rc)))

        def get(c: str) -> dict | None:
            return results[c].ops.get(op) if c in results else None

        def row(label: str, fn, ratio_fn=None) -> None:
            cells = [fn(get(c)) for c in cols]
            extra = []
            if ratio_fn:
                if "ours" in cols and "peer" in cols:
                    extra.append(ratio_fn(get("ours"), get("peer")))
                if "ours" in cols and "bare" in cols:
                    extra.append(ratio_fn(get("ours"), get("bare")))
            else:
                extra = [""] * len(rc)
            w(f"| {label} | " + " | ".join(cells) + (" | " + " | ".join(extra) if rc else "") + " |")

        row("requests/s", lambda r: fmt_rps(r["rps"]) if r else "—",
            lambda a, b: fmt_ratio(a and a["rps"], b and b["rps"]))
        row("p50", lambda r: fmt_ms(r["latency_us"]["p50"]) if r else "—",
            lambda a, b: fmt_ratio(a and a["latency_us"]["p50"], b and b["latency_us"]["p50"]))
        row("p99", lambda r: fmt_ms(r["latency_us"]["p99"]) if r else "—",
            lambda a, b: fmt_ratio(a and a["latency_us"]["p99"], b and b["latency_us"]["p99"]))
        row("server CPU (of its one core)", lambda r: f"{r['server_cpu']:.0%}" if r else "—")
        row("requests", lambda r: f"{r['requests']:,}" if r else "—")
        row("errors", errors_cell)
        w("")
        for c in cols:
            r = get(c)
            if r is not None:
                e = r["errors"]
                if e["status"] or e["connect"] or e["read"] or e["write"] or e["timeout"]:
                    flagged.append(f"{TARGET_NAMES[c]} {op}: {errors_cell(r)}")

    w("## Memory")
    w("")
    w("| | " + " | ".join(TARGET_NAMES[c] for c in cols) + (" | ours / peer" if "ours" in cols and "peer" in cols else "") + " |")
    w("|---|" + "---:|" * (len(cols) + (1 if "ours" in cols and "peer" in cols else 0)))
    for label, attr in (("RSS after preload (VmRSS)", "rss_after_preload_kb"),
                        ("peak RSS with the preloaded users, before the create run (VmHWM)", "hwm_preloaded_kb"),
                        ("peak RSS at the end (VmHWM)", "hwm_kb")):
        cells = [fmt_mb(getattr(results[c], attr)) if c in results else "—" for c in cols]
        extra = ""
        if "ours" in cols and "peer" in cols:
            extra = " | " + fmt_ratio(getattr(results["ours"], attr), getattr(results["peer"], attr))
        w(f"| {label} | " + " | ".join(cells) + extra + " |")
    w("")
    w("The end includes the users added by the create runs, which differ per server: each keeps "
      "every user it created, and a faster server creates more in the same time. Preload time (Python client, "
      f"{cfg.preload_concurrency} concurrent requests): "
      + ", ".join(f"{TARGET_NAMES[c]} {results[c].preload_s:.1f} s" for c in cols if c in results
                  and results[c].preload_s is not None) + ".")
    w("")

    misses: list[str] = []
    if "ours" in results and "peer" in results and "bare" in results:
        w("## Targets (issue #2)")
        w("")
        w("| target | measured | |")
        w("|---|---|---|")
        ours, peer, bare = results["ours"], results["peer"], results["bare"]
        for op, _, _ in OPS:
            ratio = ours.ops[op]["rps"] / peer.ops[op]["rps"]
            ok = ratio >= 20
            w(f"| {op}: ≥ 20× the peer | {ratio:.1f}× | {'✅' if ok else '❌'} |")
            if not ok:
                misses.append(f"{op} only {ratio:.1f}x the peer")
        ratio = ours.ops["get"]["rps"] / bare.ops["get"]["rps"]
        ok = ratio >= 0.5
        w(f"| GET by id: ≥ ½ of the bare handler | {ratio:.2f}× | {'✅' if ok else '❌'} |")
        if not ok:
            misses.append(f"GET by id only {ratio:.2f}x the bare handler")
        for op, _, _ in OPS:
            p99 = ours.ops[op]["latency_us"]["p99"] / 1000
            ok = p99 < 5
            w(f"| {op}: p99 < 5 ms | {p99:.2f} ms | {'✅' if ok else '❌'} |")
            if not ok:
                misses.append(f"{op} p99 {p99:.2f} ms")
        if ours.hwm_preloaded_kb and peer.hwm_preloaded_kb:
            ratio = ours.hwm_preloaded_kb / peer.hwm_preloaded_kb
            ok = ratio <= 0.2
            w(f"| peak RSS with 10,000 users ≤ ⅕ of the peer | {ratio:.2f}× | {'✅' if ok else '❌'} |")
            if not ok:
                misses.append(f"peak RSS {ratio:.2f}x the peer")
        w("")
    if flagged:
        w("## ⚠ Errors during measured runs")
        w("")
        for f in flagged:
            w(f"- {f}")
        w("")
    out.write_text("\n".join(lines))
    return flagged + [f"target missed: {x}" for x in misses]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ours", help="path of the scim-operator binary")
    parser.add_argument("--bare", help="path of the bare_handler example binary")
    parser.add_argument("--targets", default="ours,peer,bare",
                        help="comma-separated subset of ours,peer,bare (default: all three)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="report path")
    parser.add_argument("--json-out", type=Path, help="also write raw results as JSON")
    parser.add_argument("--check-targets", action="store_true",
                        help="exit 1 if a target of issue #2 is missed")
    args = parser.parse_args()

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in targets if t not in TARGET_NAMES]
    if bad or not targets:
        parser.error(f"unknown targets {bad}; choose from ours,peer,bare")
    for key, path in (("ours", args.ours), ("bare", args.bare)):
        if key in targets:
            if not path:
                parser.error(f"--{key} BINARY is required when '{key}' is a target")
            if not (Path(path).is_file() and os.access(path, os.X_OK)):
                log(f"error: {key} binary {path} does not exist or is not executable; build it first")
                return 2
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            log(f"error: '{tool}' not found (apt-get install wrk util-linux)")
            return 2

    cfg = Config(
        duration=max(1, env_int("BENCH_DURATION", 10)),
        warmup=max(0, env_int("BENCH_WARMUP", 2)),
        connections=env_int("BENCH_CONNECTIONS", 16),
        threads=env_int("BENCH_THREADS", 1),
        users=env_int("BENCH_USERS", 10_000),
        preload_concurrency=env_int("BENCH_PRELOAD_CONCURRENCY", 32),
        server_cpu=env_int("BENCH_SERVER_CPU", 0),
        client_cpu=env_int("BENCH_CLIENT_CPU", 1),
        startup_timeout=env_float("BENCH_STARTUP_TIMEOUT", 60),
    )
    if cfg.server_cpu == cfg.client_cpu:
        log("warning: server and client pinned to the same CPU")
    # The preload client and this script share the load generator's core.
    try:
        os.sched_setaffinity(0, {cfg.client_cpu})
    except OSError as exc:
        log(f"warning: could not pin the harness to CPU {cfg.client_cpu}: {exc}")

    started = dt.datetime.now(dt.timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="scim-bench-"))
    results: dict[str, TargetResult] = {}
    try:
        for key in targets:
            results[key] = bench_target(key, args, cfg, tmp)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    argv = [os.path.relpath(sys.argv[0], REPO) if sys.argv[0].startswith(str(REPO)) else sys.argv[0], *sys.argv[1:]]
    problems = write_report(args.out, results, cfg, argv, started, targets)
    if args.json_out:
        args.json_out.write_text(json.dumps(
            {k: {"ops": {o: {kk: vv for kk, vv in r.items() if kk != "wrk_stdout"} for o, r in v.ops.items()},
                 "rss_after_preload_kb": v.rss_after_preload_kb, "hwm_kb": v.hwm_kb,
                 "hwm_preloaded_kb": v.hwm_preloaded_kb,
                 "preload_s": v.preload_s} for k, v in results.items()}, indent=2))
    log(f"wrote {args.out}")
    errors = [p for p in problems if not p.startswith("target missed")]
    misses = [p for p in problems if p.startswith("target missed")]
    for p in problems:
        log(p)
    if errors:
        log("FAILED: non-2xx answers or socket errors during measured runs (see report)")
        return 1
    if misses and args.check_targets:
        log("FAILED: targets missed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
