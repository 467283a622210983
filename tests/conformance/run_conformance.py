#!/usr/bin/env python3
"""Run the third-party SCIM conformance suite `scim2-tester` against a server.

Modes (exactly one):

    run_conformance.py target/release/scim-operator
        Start `BINARY serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0
        --data-dir <fresh temp dir>` with a random SCIM_TOKEN, wait for the
        `SCIM base URL: ...` line on its stdout, run every check, stop it.

    run_conformance.py --peer
        Same, against the Python peer `scim2-server` (bench/peer_app.py under
        uvicorn) instead of our binary: validates this harness and shows
        where the reference implementation itself stands.

    run_conformance.py --url http://127.0.0.1:8080/scim/v2 --token TOKEN
        Against a server that is already running (nothing is started).

Every check `scim2-tester` has is run: `check_server()` with no tag or
resource-type filter, i.e. discovery (ServiceProviderConfig, ResourceTypes,
Schemas), the random-URL 404 check, and for every resource type the server
publishes: create, read, list, attributes/excludedAttributes on GET, list and
POST /.search, PUT, DELETE, and PATCH add/remove/replace on every attribute.

Each result is printed as `STATUS  check [resource type]  reason`. The exit
status is 1 if any result is ERROR or CRITICAL (a violated MUST) and is not
covered by SKIP_LIST below, 2 if the harness itself failed (server did not
start, ...), 0 otherwise. With --strict, DEVIATION results (a violated
SHOULD) and SKIPPED results that scim2-tester decided on its own also fail.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEER_APP = REPO / "bench" / "peer_app.py"
URL_LINE = re.compile(r"SCIM base URL:\s*(\S+)")


# --------------------------------------------------------------------------
# Knowingly skipped checks. Empty by default: every check must pass.
#
# An entry waives ERROR/CRITICAL results whose check name equals `check`,
# whose resource type equals `resource_type` (None = any) and whose reason
# contains `reason_contains` (None = any). Each entry MUST say why, and the
# README must list it. A waived check that passes is reported as STALE so the
# entry gets removed.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Skip:
    check: str
    why: str
    resource_type: str | None = None
    reason_contains: str | None = None


SKIP_LIST: list[Skip] = [
    # Example:
    # Skip("check_replace_attribute", resource_type="User",
    #      reason_contains="'password'", why="password is write-only ..."),
]


FAILING = {"ERROR", "CRITICAL"}

# Resource types the server must publish and scim2-tester must exercise.
EXPECTED_RESOURCE_TYPES = ("User", "Group")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Server process management
# --------------------------------------------------------------------------
class Server:
    """A server child process that announces its URL on stdout."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, log_dir: Path):
        self.argv = argv
        self.stdout_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_path = log_dir / "server.stderr"
        self._stderr = open(self.stderr_path, "wb")
        log(f"starting: {' '.join(argv)}")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        # Keep draining stdout for the whole life of the server so it can never
        # block on a full pipe.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

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
                raise RuntimeError(f"no 'SCIM base URL:' line on stdout within {timeout:.0f}s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                rc = self.proc.wait()
                raise RuntimeError(f"server exited (status {rc}) before printing its URL")
            m = URL_LINE.search(line)
            if m:
                return m.group(1).rstrip("/")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log("server did not stop within 10s of SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def dump_logs(self, limit: int = 60) -> None:
        log("---- server stdout ----")
        for line in self.stdout_lines[-limit:]:
            log(line)
        log("---- server stderr (tail) ----")
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in lines[-limit:]:
            log(line)


# --------------------------------------------------------------------------
# Running the suite
# --------------------------------------------------------------------------
def run_checks(url: str, token: str | None, timeout: float):
    import httpx2
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import check_server

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx2.Client(base_url=url, headers=headers, timeout=timeout) as http:
        client = SyncSCIMClient(http)
        # No include/exclude tags, no resource-type filter: every check.
        return check_server(client, raise_exceptions=False)


def first_line(text: str | None, width: int = 160) -> str:
    if not text:
        return ""
    line = " | ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())
    return line if len(line) <= width else line[: width - 3] + "..."


def matching_skip(result) -> Skip | None:
    for skip in SKIP_LIST:
        if skip.check != result.title:
            continue
        if skip.resource_type is not None and skip.resource_type != result.resource_type:
            continue
        if skip.reason_contains is not None and skip.reason_contains not in (result.reason or ""):
            continue
        return skip
    return None


def report(results, strict: bool, verbose: bool, json_out: Path | None) -> int:
    counts: dict[str, int] = {}
    failures = []
    waived = []
    stale = set()
    tester_skips = []
    deviations = []
    rows = []

    for r in results:
        status = r.status.name
        skip = matching_skip(r)
        shown = status
        if skip is not None:
            if status in FAILING:
                shown = "WAIVED"
                waived.append((r, skip))
            else:
                stale.add(skip)
        elif status in FAILING:
            failures.append(r)
        elif status == "SKIPPED":
            tester_skips.append(r)
        elif status == "DEVIATION":
            deviations.append(r)
        counts[shown] = counts.get(shown, 0) + 1
        name = r.title or "?"
        rt = f" [{r.resource_type}]" if r.resource_type else ""
        print(f"{shown:<10} {name}{rt}  {first_line(r.reason)}")
        if verbose and status in FAILING and r.data is not None:
            print(f"           data: {first_line(repr(r.data), 600)}")
        rows.append(
            {
                "check": name,
                "resource_type": r.resource_type,
                "status": status,
                "waived": skip is not None and status in FAILING,
                "reason": r.reason,
                "tags": sorted(r.tags),
            }
        )

    print()
    print(f"scim2-tester results: {len(results)} total, " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    for r, skip in waived:
        print(f"  waived by SKIP_LIST: {r.title} [{r.resource_type}]: {skip.why}")
    for skip in stale:
        print(f"  STALE skip-list entry (the check passes now, remove it): {skip.check} [{skip.resource_type}]")
    for r in tester_skips:
        print(f"  skipped by scim2-tester itself: {r.title} [{r.resource_type}]: {first_line(r.reason)}")
    for r in deviations:
        print(f"  deviation (violated SHOULD): {r.title} [{r.resource_type}]: {first_line(r.reason)}")

    if json_out:
        json_out.write_text(json.dumps(rows, indent=2, default=str))

    # scim2-tester silently runs no CRUD check at all when it cannot build a
    # description of the server; a run that never touched Users and Groups
    # must not pass.
    ran_types = {r.resource_type for r in results if r.resource_type}
    missing_types = [t for t in EXPECTED_RESOURCE_TYPES if t not in ran_types]
    for t in missing_types:
        print(f"  MISSING: no check ran for resource type {t} (discovery failed?)")

    failed = len(failures) + len(missing_types) + (len(deviations) + len(tester_skips) if strict else 0)
    passed = len(results) - len(failures) - len(waived) - (len(deviations) + len(tester_skips) if strict else 0)
    # Plain closing line understood by CI: "N passed, N failed".
    print(f"conformance: {passed} passed, {failed} failed")
    if failures:
        print("FAILED checks:")
        for r in failures:
            print(f"  {r.status.name} {r.title} [{r.resource_type}]: {first_line(r.reason, 400)}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("binary", nargs="?", help="path of the scim-operator binary to start")
    target.add_argument("--peer", action="store_true", help="start the Python peer scim2-server (bench/peer_app.py) instead")
    target.add_argument("--url", help="base URL of an already running server (nothing is started)")
    parser.add_argument("--token", help="bearer token for --url (default: env SCIM_TOKEN; none if unset)")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="seconds to wait for the URL line (default 60)")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="per-request timeout in seconds (default 30)")
    parser.add_argument("--strict", action="store_true", help="also fail on DEVIATION and on checks scim2-tester skipped by itself")
    parser.add_argument("--verbose", "-v", action="store_true", help="print the data attached to failed checks")
    parser.add_argument("--json-out", type=Path, help="write all results as JSON to this file")
    parser.add_argument("--keep-data", action="store_true", help="do not delete the temporary data dir")
    args = parser.parse_args()

    if args.url:
        token = args.token if args.token is not None else os.environ.get("SCIM_TOKEN")
        try:
            results = run_checks(args.url.rstrip("/"), token, args.request_timeout)
        except Exception as exc:  # harness failure, not a check failure
            log(f"conformance harness error: {exc!r}")
            return 2
        return report(results, args.strict, args.verbose, args.json_out)

    token = secrets.token_urlsafe(32)
    env = dict(os.environ)
    env["SCIM_TOKEN"] = token
    env.setdefault("RUST_LOG", "warn")
    tmp = Path(tempfile.mkdtemp(prefix="scim-conformance-"))
    server: Server | None = None
    try:
        if args.peer:
            argv = [sys.executable, str(PEER_APP), "--listen", "127.0.0.1:0"]
        else:
            binary = Path(args.binary)
            if not binary.is_file() or not os.access(binary, os.X_OK):
                log(f"error: server binary {binary} does not exist or is not executable (build it first)")
                return 2
            data_dir = tmp / "data"
            data_dir.mkdir()
            argv = [
                str(binary.resolve()),
                "serve",
                "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0",
                "--data-dir", str(data_dir),
            ]
        server = Server(argv, env, REPO, tmp)
        try:
            url = server.wait_for_url(args.startup_timeout)
        except RuntimeError as exc:
            log(f"error: {exc}")
            server.dump_logs()
            return 2
        log(f"server up at {url}; running scim2-tester")
        try:
            results = run_checks(url, token, args.request_timeout)
        except Exception as exc:
            log(f"conformance harness error: {exc!r}")
            server.dump_logs()
            return 2
        if server.proc.poll() is not None:
            log(f"error: server exited with status {server.proc.returncode} during the run")
            server.dump_logs()
            return 2
        rc = report(results, args.strict, args.verbose, args.json_out)
        if rc:
            server.dump_logs(limit=30)
        return rc
    finally:
        if server is not None:
            server.stop()
        if args.keep_data:
            log(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
