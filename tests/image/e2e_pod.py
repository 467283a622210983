#!/usr/bin/env python3
"""The pod the operator renders, run the way a kubelet would (make e2e-pod).

    tests/image/e2e_pod.py --image IMAGE --bin HOST_BINARY --fake ZITADEL_FAKE_BINARY

`HOST_BINARY render` prints the objects for a ScimTenant (the sample, pointed at
the ZITADEL fake), with `--image IMAGE`. Everything below is read from those
objects; nothing about the pod is hard-coded here:

- image, command/args, env (value, and valueFrom Secret/ConfigMap keys and the
  downward API), every volume materialised from the rendered ConfigMap and Secrets
  at its mountPath (read-only where the spec says so, defaultMode/items honoured),
  a persistent directory for the PVC with the pod's fsGroup, emptyDirs, runAsUser/
  runAsGroup/fsGroup, runAsNonRoot (refused if the uid would be 0),
  readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation, ports by name;
- the pod gets a network namespace of its own (so the fixed container ports do not
  clash with the machine's), the ZITADEL fake listens on its loopback and the
  container reaches it by host name (`zitadel.test`, an /etc/hosts entry as a
  Service's DNS name would be) with the machine key the fake issued in the Secret
  the config names: what the controller does when it reconciles the tenant.

Then: the readiness probe's path answers, the liveness probe's path answers; an
Entra cycle through the SCIM port with the rendered key (users with the enterprise
extension, a group, member PATCHes in both dialects, deactivate, delete) is
projected into the fake; the container is stopped and started on the same volume
and every acknowledged write is still there. Prints `N passed, M failed`.

Not covered here (needs a Kubernetes API fake served by a process, which the
project does not have yet): `controller` from the same image until a ScimTenant
is Ready. tests/image/README.md says what that needs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "samples" / "scimtenant.yaml"
MANAGER = ROOT / "config" / "manager" / "manager.yaml"
ZITADEL_HOST = "zitadel.test"

passed = failed = 0


def check(ok: bool, what: str, detail: str = "") -> bool:
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {what}", flush=True)
    else:
        failed += 1
        print(f"FAILED: {what}" + (f"\n    {detail}" if detail else ""), flush=True)
    return ok


def probes_answer(pod, label: str) -> bool:
    """The pod's readiness probe answers (waited for), then its liveness probe."""
    for probe, timeout in (("readinessProbe", None), ("livenessProbe", 5)):
        ok, url = pod.wait_probe(probe) if timeout is None else pod.wait_probe(probe, timeout=timeout)
        kind = probe.removesuffix("Probe")
        if not check(ok, f"{label}{kind} probe answers ({url})", pod.logs() if not ok else ""):
            return False
    return True


class K8sLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it (no YAML 1.1 timestamps)."""


K8sLoader.yaml_implicit_resolvers = {
    ch: [(t, rx) for t, rx in rs if t != "tag:yaml.org,2002:timestamp"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# ------------------------------------------------------------------ network namespace
def in_own_netns(argv: list[str]) -> int:
    """Re-runs this script inside a fresh network namespace (loopback only)."""
    name = f"scim-e2e-pod-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        # podman itself must run in this (the original) namespace: runc refuses the
        # pod's namespace as "host" if podman is started inside it.
        env = dict(os.environ, E2E_POD_NETNS=name, E2E_HOST_NETNS=f"/proc/{os.getpid()}/ns/net")
        # nsenter, not `ip netns exec`: the latter remounts /sys, which hides the
        # cgroup mounts runc needs.
        return subprocess.run(["nsenter", f"--net=/run/netns/{name}", sys.executable, *argv], env=env).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


# ------------------------------------------------------------------ rendered objects
class Objects:
    def __init__(self, text: str):
        self.all = [d for d in yaml.load_all(text, Loader=K8sLoader) if d]

    def get(self, kind: str, name: str) -> dict:
        for o in self.all:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        raise SystemExit(f"render printed no {kind}/{name}")

    def one(self, kind: str) -> dict:
        found = [o for o in self.all if o["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, got {len(found)}"
        return found[0]

    def secret_data(self, name: str) -> dict[str, bytes]:
        s = self.get("Secret", name)
        out = {k: base64.b64decode(v) for k, v in (s.get("data") or {}).items()}
        out.update({k: v.encode() for k, v in (s.get("stringData") or {}).items()})
        return out

    def configmap_data(self, name: str) -> dict[str, bytes]:
        c = self.get("ConfigMap", name)
        out = {k: v.encode() for k, v in (c.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (c.get("binaryData") or {}).items()})
        return out


class Pod:
    """The Deployment's pod, as a kubelet would run it with podman."""

    def __init__(self, objs: Objects, work: Path, runtime: list[str], netns: str, role: str = "pod",
                 hosts: tuple[str, ...] = (ZITADEL_HOST,)):
        self.objs, self.work, self.runtime, self.netns, self.hosts = objs, work, runtime, netns, hosts
        dep = objs.one("Deployment")
        self.namespace = dep["metadata"].get("namespace", "default")
        self.name = f"{dep['metadata']['name']}-e2e-{os.getpid()}"
        self.spec = dep["spec"]["template"]["spec"]
        cs = self.spec["containers"]
        assert len(cs) == 1, "one container expected"
        self.c = cs[0]
        self.container = f"scim-e2e-{role}-{os.getpid()}"
        self.pvc_dirs: dict[str, Path] = {}

    # Files -----------------------------------------------------------------
    def volume_source(self, vol: dict) -> dict[str, tuple[bytes, int]] | None:
        """Files of a ConfigMap/Secret volume: {relative path: (content, mode)}."""
        for kind, key, getter in (("configMap", "name", self.objs.configmap_data),
                                  ("secret", "secretName", self.objs.secret_data)):
            if kind in vol:
                src = vol[kind]
                data = getter(src[key])
                mode = src.get("defaultMode", 0o644)
                items = src.get("items")
                if items:
                    return {i["path"]: (data[i["key"]], i.get("mode", mode)) for i in items}
                return {k: (v, mode) for k, v in data.items()}
        return None

    def materialise(self) -> list[str]:
        """podman -v arguments for every volumeMount (fresh emptyDirs each start)."""
        psc = self.spec.get("securityContext") or {}
        fs_group = psc.get("fsGroup")
        vols = {v["name"]: v for v in self.spec.get("volumes") or []}
        args = []
        for m in self.c.get("volumeMounts") or []:
            vol = vols[m["name"]]
            files = self.volume_source(vol)
            if files is not None:
                d = self.work / "vol" / m["name"]
                if d.exists():
                    shutil.rmtree(d)
                d.mkdir(parents=True)
                for rel, (content, mode) in files.items():
                    p = d / rel
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(content)
                    os.chmod(p, mode)
                    if fs_group is not None:
                        os.chown(p, 0, fs_group)
                d.chmod(0o755)
                host = d
            elif "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                self.objs.get("PersistentVolumeClaim", claim)  # it must be rendered too
                host = self.pvc_dirs.setdefault(claim, self.work / "pvc" / claim)
                host.mkdir(parents=True, exist_ok=True)
                if fs_group is not None:  # the kubelet's fsGroup ownership: group-writable, setgid
                    os.chown(host, 0, fs_group)
                    host.chmod(0o2775)
            elif "emptyDir" in vol:
                host = self.work / "empty" / m["name"]
                if host.exists():
                    shutil.rmtree(host)
                host.mkdir(parents=True)
                host.chmod(0o1777 if fs_group is None else 0o2777)
            else:
                raise SystemExit(f"volume {m['name']}: kind not supported here: {sorted(vol)}")
            if m.get("subPath"):
                host = host / m["subPath"]
            opts = "ro" if m.get("readOnly") else "rw"
            args += ["-v", f"{host}:{m['mountPath']}:{opts}"]
        return args

    # Security ----------------------------------------------------------------
    def security(self, image_user: str) -> list[str]:
        psc = self.spec.get("securityContext") or {}
        csc = self.c.get("securityContext") or {}
        eff = {**psc, **csc}
        args = []
        uid = eff.get("runAsUser")
        gid = eff.get("runAsGroup")
        if uid is None:
            uid = image_user.split(":")[0] if image_user else "0"
        if eff.get("runAsNonRoot") and not str(uid).isdigit():
            raise SystemExit(f"runAsNonRoot with a non-numeric user {uid!r}: the kubelet refuses it")
        check(not (eff.get("runAsNonRoot") and int(uid) == 0), f"runAsNonRoot: the container runs as uid {uid}")
        args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        if psc.get("fsGroup") is not None:
            args += ["--group-add", str(psc["fsGroup"])]
        for g in psc.get("supplementalGroups") or []:
            args += ["--group-add", str(g)]
        if csc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        caps = csc.get("capabilities") or {}
        for c in caps.get("drop") or []:
            args += ["--cap-drop", c]
        for c in caps.get("add") or []:
            args += ["--cap-add", c]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if csc.get("privileged"):
            raise SystemExit("privileged containers are not run here")
        seccomp = (eff.get("seccompProfile") or {}).get("type")
        if seccomp not in (None, "RuntimeDefault"):
            raise SystemExit(f"seccompProfile {seccomp} not supported here")
        return args

    def env(self) -> list[str]:
        args = []
        for e in self.c.get("env") or []:
            if "value" in e:
                v = e["value"]
            else:
                vf = e["valueFrom"]
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    v = self.objs.secret_data(r["name"])[r["key"]].decode()
                elif "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    v = self.objs.configmap_data(r["name"])[r["key"]].decode()
                elif "fieldRef" in vf:
                    v = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                         "spec.nodeName": "e2e-node", "status.podIP": "127.0.0.1"}[vf["fieldRef"]["fieldPath"]]
                else:
                    raise SystemExit(f"env {e['name']}: valueFrom {sorted(vf)} not supported here")
            args += ["-e", f"{e['name']}={v}"]
        for ef in self.c.get("envFrom") or []:
            if "secretRef" in ef:
                data = self.objs.secret_data(ef["secretRef"]["name"])
            else:
                data = self.objs.configmap_data(ef["configMapRef"]["name"])
            for k, v in data.items():
                args += ["-e", f"{ef.get('prefix', '')}{k}={v.decode()}"]
        return args

    def port(self, p) -> int:
        if isinstance(p, int):
            return p
        for cp in self.c.get("ports") or []:
            if cp.get("name") == p:
                return cp["containerPort"]
        raise SystemExit(f"no container port named {p}")

    # Lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        image = self.c["image"]
        user = subprocess.run([*self.runtime, "image", "inspect", image, "--format", "{{.Config.User}}"],
                              capture_output=True, text=True, check=True).stdout.strip()
        cmd = [*self.runtime, "run", "-d", "--name", self.container,
               "--network", f"ns:/run/netns/{self.netns}",
               "--hostname", self.name[:63]]
        for h in self.hosts:  # names a cluster's DNS would resolve, to this namespace's loopback
            cmd += ["--add-host", f"{h}:127.0.0.1"]
        cmd += self.security(user) + self.env() + self.materialise()
        if self.c.get("workingDir"):
            cmd += ["--workdir", self.c["workingDir"]]
        if self.c.get("command"):
            cmd += ["--entrypoint", json.dumps(self.c["command"])]
        cmd += [image, *(self.c.get("args") or [])]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        for cmd in (["stop", "-t", str(grace)], ["rm", "-f"]):  # quiet if already gone
            subprocess.run([*self.runtime, *cmd, self.container], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def exit_code(self) -> str:
        return f"exit code {self.inspect('{{.State.ExitCode}}')}"

    def inspect(self, fmt: str) -> str:
        return subprocess.run([*self.runtime, "inspect", "--format", fmt, self.container],
                              capture_output=True, text=True).stdout.strip()

    def logs(self) -> str:
        return subprocess.run([*self.runtime, "logs", self.container], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True).stdout[-6000:]

    def wait_probe(self, probe_key: str, timeout: float = 60) -> tuple[bool, str]:
        probe = self.c.get(probe_key)
        if not probe or "httpGet" not in probe:
            return False, f"no {probe_key} httpGet"
        hg = probe["httpGet"]
        url = f"{hg.get('scheme', 'HTTP').lower()}://127.0.0.1:{self.port(hg['port'])}{hg.get('path', '/')}"
        deadline = time.time() + probe.get("initialDelaySeconds", 0) + timeout
        last, polls = "", 0
        while time.time() < deadline:
            polls += 1
            if polls % 5 == 0 and not self.running():  # exited: a kubelet would report CrashLoopBackOff
                return False, f"{url}: the container exited ({self.exit_code()})"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if 200 <= r.status < 400:
                        return True, url
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.2)
        return False, f"{url}: {last}"


# ------------------------------------------------------------------ HTTP helpers
def http(method: str, url: str, body=None, token: str | None = None, ctype="application/scim+json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def read_until(p: subprocess.Popen, done, timeout: float = 30) -> list[str]:
    """Lines of a process's stdout until `done(lines)`, within the timeout."""
    fd, buf, lines = p.stdout.fileno(), b"", []
    deadline = time.monotonic() + timeout
    while not done(lines):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise SystemExit(f"{p.args[0]} printed {lines} and nothing more within {timeout}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise SystemExit(f"{p.args[0]} exited ({p.wait()}) after printing {lines}")
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            lines.append(line.decode().strip())
    return lines


def start_fake(fake: str, work: Path, procs: list) -> dict[str, str]:
    key_file = work / "fake-machine-key.json"
    p = subprocess.Popen([fake, "--listen", "127.0.0.1:0", "--key-file", str(key_file)], stdout=subprocess.PIPE)
    procs.append(p)
    lines = read_until(p, lambda ls: any(x.startswith("ZITADEL KEY FILE:") for x in ls))
    info = {m.group(1): m.group(2) for m in (re.match(r"ZITADEL ([A-Z ]+): (.*)", x) for x in lines) if m}
    info["KEY"] = key_file.read_text()
    return info


def start_kube_fake(binary: str, procs: list) -> str:
    # stdin a pipe: the fake also ends when this script dies without terminating it.
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    procs.append(p)
    lines = read_until(p, lambda ls: any(x.startswith("KUBE URL:") for x in ls))
    return next(x for x in lines if x.startswith("KUBE URL:")).split(": ", 1)[1]


def free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


# ------------------------------------------------------------------ the test
class Phase:
    """Prints a step's name and, when it ends, how long it took."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.t = time.monotonic()
        print(f"--- {self.name}", flush=True)

    def __exit__(self, *exc):
        print(f"--- {self.name}: {time.monotonic() - self.t:.1f}s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--bin", required=True, help="host scim-operator (for `render`)")
    ap.add_argument("--fake", required=True, help="the zitadel_fake example binary")
    ap.add_argument("--kube-fake", required=True, help="the kube_fake example binary")
    ap.add_argument("--runtime", default="podman")
    a = ap.parse_args()
    if "E2E_POD_NETNS" not in os.environ:
        return in_own_netns(sys.argv)
    runtime = ["nsenter", f"--net={os.environ['E2E_HOST_NETNS']}", a.runtime]
    if a.runtime == "podman":
        runtime += ["--runtime", "runc", "--cgroup-manager=cgroupfs"]

    work = Path(tempfile.mkdtemp(prefix="scim-e2e-pod-"))
    procs: list[subprocess.Popen] = []
    pods: list[Pod] = []
    t0 = time.monotonic()
    try:
        run(a, runtime, work, procs, pods)
    except (Exception, SystemExit) as e:  # a step that cannot go on is one failure, reported
        check(False, f"the test could not go on: {type(e).__name__}", str(e))
        for p in pods:
            print(f"    logs of {p.container}:\n{p.logs()}", flush=True)
    finally:
        for p in pods:
            p.stop()
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(f"e2e-pod took {time.monotonic() - t0:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def run(a, runtime: list[str], work: Path, procs: list, pods: list) -> None:
    netns = os.environ["E2E_POD_NETNS"]
    with Phase("the tenant's objects from render"):
        z = start_fake(os.path.abspath(a.fake), work, procs)
        port = int(z["URL"].rsplit(":", 1)[1])
        # The sample tenant, pointed at the fake's organisations.
        tenant = next(d for d in yaml.safe_load_all(SAMPLE.read_text()) if d and d.get("kind") == "ScimTenant")
        tz = tenant["spec"]["zitadel"]
        tz.update(organizationId=z["ORG"], projectId=z["PROJECT"],
                  projectOrganizationId=z["PROJECT ORG"], idpId=z["IDP"])
        (work / "tenant.yaml").write_text(yaml.safe_dump(tenant))
        zitadel_url = f"http://{ZITADEL_HOST}:{port}"
        rendered = subprocess.run(
            [os.path.abspath(a.bin), "render", "-f", str(work / "tenant.yaml"), "--image", a.image,
             "--zitadel-url", zitadel_url],
            capture_output=True, text=True, check=True).stdout
        objs = Objects(rendered)
        pod = Pod(objs, work / "server", runtime, netns)
        check(pod.c["image"] == a.image, f"the Deployment runs the image just built ({a.image})")

        # The machine key the controller would write: into the Secret and key that the
        # serve config's credential path resolves to through the volume mounts.
        args = pod.c.get("args") or []
        cfg_path = args[args.index("--config") + 1]
        cfg = yaml.safe_load(pod_files(pod, cfg_path))
        cred_path = (cfg["zitadel"]["credentials"].get("keyFile") or cfg["zitadel"]["credentials"]["patFile"])
        secret, key = mounted_secret_key(pod, cred_path)
        s = objs.get("Secret", secret)
        s.setdefault("data", {})[key] = base64.b64encode(z["KEY"].encode()).decode()
        print(f"credential: {cred_path} = Secret {secret} key {key} (the fake's machine key)")

        # The SCIM key Entra gets: the key Secret whose token hashes to keys.yaml's entry.
        keys = yaml.safe_load(pod_files(pod, cfg["keysFile"]))["keys"]
        token = None
        for o in objs.all:
            if o["kind"] == "Secret" and "token" in (o.get("data") or {}):
                t = base64.b64decode(o["data"]["token"])
                if any(k["sha256"] == hashlib.sha256(t).hexdigest() for k in keys):
                    token = t.decode()
        if not check(token is not None, "a rendered key Secret's token matches the keys file the server reads"):
            return

    with Phase("the server pod: probes"):
        pods.append(pod)
        pod.start()
        if not probes_answer(pod, ""):
            return

    with Phase("an Entra cycle through the SCIM port, projected into ZITADEL"):
        scim_port = pod.port("scim") if any(p.get("name") == "scim" for p in pod.c["ports"]) else \
            int(str(cfg["listen"]).rsplit(":", 1)[1])
        base = f"http://127.0.0.1:{scim_port}" + re.sub(r"^https?://[^/]+", "", cfg.get("publicUrl", "/scim/v2"))
        acked, entra = entra_cycle(base, token)
        projected(z, port, entra)

    with Phase("stop and start on the same volume"):
        pod.stop()
        pod.start()
        ok, url = pod.wait_probe("readinessProbe")
        check(ok, "ready again after stop and start on the same volume", pod.logs() if not ok else "")
        for path, expect in acked.items():
            st, body = http("GET", base + path, token=token)
            if expect is None:
                check(st == 404, f"after restart: {path} stays deleted", f"{st} {body}")
            else:
                same = st == 200 and all(body.get(k) == v for k, v in expect.items())
                check(same, f"after restart: {path} as acknowledged", f"{st} {body} vs {expect}")

    with Phase("controller from the same image against the Kubernetes API fake"):
        controller(a, runtime, work / "controller", netns, procs, pods, z, zitadel_url, tenant, objs, pod, acked)


TENANT_API = "/apis/scim.unique.app/v1alpha1"


def controller(a, runtime: list[str], work: Path, netns: str, procs: list, pods: list, z: dict,
               zitadel_url: str, tenant: dict, rendered: Objects, server: Pod, entra_acked: dict) -> None:
    """`controller` from the image, as config/manager/manager.yaml runs it, against the
    Kubernetes API fake (a process, reached through a mounted kubeconfig) and the ZITADEL
    fake (the admin PAT as the mounted credential), until the sample ScimTenant is Ready.

    What a real install sets differently from manager.yaml, and only that, is changed:
    the image (kustomize's images transformer, and its replacement into SCIM_SERVER_IMAGE),
    ZITADEL_URL, the admin's credential Secret, the cluster's API (a kubeconfig Secret and
    KUBECONFIG instead of the service account), and the admin port, because this pod shares
    its network namespace with the server pod (whose ports a real pod IP would keep apart).
    The tenant server's /status, which the controller polls through the Service's DNS name,
    is the server pod started above: that name resolves to this namespace's loopback."""
    kube_url = start_kube_fake(os.path.abspath(a.kube_fake), procs)
    print(f"kube fake: {kube_url}")
    manifests = Objects(MANAGER.read_text())
    dep = manifests.one("Deployment")
    c = next(iter(dep["spec"]["template"]["spec"]["containers"]))
    c["image"] = a.image
    env = {e["name"]: e for e in c.get("env") or []}
    for name in ("ZITADEL_URL", "ZITADEL_CREDENTIAL_FILE", "SCIM_SERVER_IMAGE"):
        if name not in env:
            raise SystemExit(f"{MANAGER}: the controller's env has no {name}")
    env["ZITADEL_URL"]["value"] = zitadel_url
    env["SCIM_SERVER_IMAGE"]["value"] = a.image
    admin_port = free_port()
    metrics = next(p for p in c["ports"] if p["name"] == "http-metrics")
    metrics["containerPort"] = admin_port
    if "ADMIN_LISTEN" in env:
        env["ADMIN_LISTEN"]["value"] = f"0.0.0.0:{admin_port}"
    else:
        c.setdefault("env", []).append({"name": "ADMIN_LISTEN", "value": f"0.0.0.0:{admin_port}"})
    kube_dir = "/var/run/e2e/kube"
    c["env"].append({"name": "KUBECONFIG", "value": f"{kube_dir}/config"})
    c.setdefault("volumeMounts", []).append({"name": "e2e-kubeconfig", "mountPath": kube_dir, "readOnly": True})
    dep["spec"]["template"]["spec"].setdefault("volumes", []).append(
        {"name": "e2e-kubeconfig", "secret": {"secretName": "e2e-kubeconfig", "defaultMode": 0o440}})
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
        "clusters": [{"name": "kube-fake", "cluster": {"server": kube_url}}],
        # The fake has no authentication; a token is sent as a service account's would be.
        "users": [{"name": "scim-operator", "user": {"token": "e2e-dummy-token"}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "kube-fake", "user": "scim-operator",
                                                  "namespace": dep["metadata"]["namespace"]}}],
    }
    # The credential Secret the volume names (created by the admin before install).
    cred_vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] != "e2e-kubeconfig"
                    and "secret" in v and env["ZITADEL_CREDENTIAL_FILE"]["value"].startswith(
                        next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == v["name"])))
    cred_key = (cred_vol["secret"].get("items") or [{"key": os.path.basename(env["ZITADEL_CREDENTIAL_FILE"]["value"])}])[0]["key"]
    manifests.all += [
        {"kind": "Secret", "metadata": {"name": cred_vol["secret"]["secretName"]},
         "stringData": {cred_key: z["PAT"] + "\n"}},
        {"kind": "Secret", "metadata": {"name": "e2e-kubeconfig"}, "stringData": {"config": yaml.safe_dump(kubeconfig)}},
    ]

    # The Service DNS name the controller's default status URL template uses must reach
    # the server pod's admin port, as the rendered Service maps it.
    svc = rendered.one("Service")
    sport = next((p for p in svc["spec"]["ports"] if p["port"] == 9090), None)
    if sport is None or server.port(sport.get("targetPort", sport["port"])) != sport["port"]:
        raise SystemExit(f"Service {svc['metadata']['name']}: port 9090 does not map to the same container port; "
                         "loopback cannot stand in for it")
    svc_host = f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"

    # The cluster side: the namespaces (manager.yaml's own, the tenant's), then the tenant.
    for ns in {dep["metadata"]["namespace"], tenant["metadata"]["namespace"]}:
        st, body = http("POST", f"{kube_url}/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                                  "metadata": {"name": ns}}, ctype="application/json")
        if st != 201:
            raise SystemExit(f"kube fake: create namespace {ns}: {st} {body}")

    ctl = Pod(manifests, work, runtime, netns, role="controller", hosts=(ZITADEL_HOST, svc_host))
    pods.append(ctl)
    ctl.start()
    if not probes_answer(ctl, "controller: "):
        return

    ns, name = tenant["metadata"]["namespace"], tenant["metadata"]["name"]
    path = f"{kube_url}{TENANT_API}/namespaces/{ns}/scimtenants"
    st, body = http("POST", path, tenant, ctype="application/json")
    check(st == 201, f"ScimTenant {ns}/{name} created in the Kubernetes API fake", f"{st} {body}")
    deadline, status = time.monotonic() + 120, None
    ready = False
    while time.monotonic() < deadline:
        st, body = http("GET", f"{path}/{name}")
        status = (body or {}).get("status") if st == 200 else (st, body)
        conds = (status or {}).get("conditions") or [] if isinstance(status, dict) else []
        true = {x.get("type") for x in conds if x.get("status") == "True"}
        if {"Ready", "ProvisioningHealthy"} <= true:
            ready = True
            break
        time.sleep(0.5)
    summary = " ".join(f"{x.get('type')}={x.get('status')}" for x in conds) if ready else ""
    check(ready, f"controller: ScimTenant {ns}/{name} Ready=True, ProvisioningHealthy=True ({summary})",
          f"status: {json.dumps(status, indent=1)}\n    controller log:\n{ctl.logs()}")
    if not ready:
        return
    # ProvisioningHealthy and the counts come from the server pod's /status (the one run
    # above, through the Service's name): what the Entra cycle left there.
    prov = status.get("provisioning") or {}
    live = [p for p, v in entra_acked.items() if v is not None]
    want = {"users": sum(p.startswith("/Users/") for p in live), "groups": sum(p.startswith("/Groups/") for p in live)}
    check({k: prov.get(k) for k in want} == want,
          f"controller: the tenant's provisioning status read from the server pod's /status ({want})", str(prov))
    # The Deployment the controller applied runs the image it was given and is the pod
    # spec `render` printed (the one run above).
    st, applied = http("GET", f"{kube_url}/apis/apps/v1/namespaces/{ns}/deployments/{svc['metadata']['name']}")
    want = rendered.one("Deployment")["spec"]["template"]["spec"]
    got = (applied or {}).get("spec", {}).get("template", {}).get("spec") if st == 200 else None
    check(got == want, "controller: its Deployment is the pod spec render printed, with the image just built",
          f"{st}: {json.dumps(got)[:1500]}\n    render: {json.dumps(want)[:1500]}")
    ctl.stop()
    stopped = subprocess.run([*runtime, "ps", "-a", "--filter", f"name={ctl.container}", "--format", "{{.Names}}"],
                             capture_output=True, text=True).stdout.strip()
    check(stopped == "", "controller: stopped and removed")


def pod_files(pod: Pod, path: str) -> str:
    """The content of a file the container sees at `path`, from the rendered objects."""
    vols = {v["name"]: v for v in pod.spec.get("volumes") or []}
    for m in pod.c.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/") + "/"
        if path.startswith(mp):
            files = pod.volume_source(vols[m["name"]])
            if files and path[len(mp):] in files:
                return files[path[len(mp):]][0].decode()
    raise SystemExit(f"{path}: no ConfigMap/Secret volume mount holds it")


def mounted_secret_key(pod: Pod, path: str) -> tuple[str, str]:
    vols = {v["name"]: v for v in pod.spec.get("volumes") or []}
    for m in pod.c.get("volumeMounts") or []:
        mp = m["mountPath"].rstrip("/") + "/"
        v = vols[m["name"]]
        if path.startswith(mp) and "secret" in v:
            rel = path[len(mp):]
            for i in v["secret"].get("items") or []:
                if i["path"] == rel:
                    return v["secret"]["secretName"], i["key"]
            return v["secret"]["secretName"], rel
    raise SystemExit(f"{path}: not inside a Secret volume mount")


ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def entra_cycle(base: str, token: str) -> tuple[dict[str, dict | None], dict[str, dict]]:
    """Entra's requests, as it sends them. Returns what each acknowledged write left (by
    SCIM path) and what ZITADEL should hold for each user (by userName)."""
    acked: dict[str, dict | None] = {}
    entra: dict[str, dict] = {}
    users = {}
    for i, (given, family) in enumerate([("Ada", "Lovelace"), ("Alan", "Turing"), ("Grace", "Hopper")]):
        upn = f"{given.lower()}.{family.lower()}@contoso.com"
        st, body = http("POST", base + "/Users", {
            "schemas": [CORE_USER, ENTERPRISE], "externalId": f"0f4c1e2a-000{i}", "userName": upn, "active": True,
            "displayName": f"{given} {family}", "name": {"givenName": given, "familyName": family},
            "emails": [{"primary": True, "type": "work", "value": upn}],
            ENTERPRISE: {"employeeNumber": f"E{i}", "department": "Engineering"},
        }, token)
        check(st == 201, f"POST /Users {upn} (enterprise extension)", f"{st} {body}")
        users[upn] = body["id"]
        acked[f"/Users/{body['id']}"] = {"userName": upn, "active": True}
        entra[upn] = {"externalId": f"0f4c1e2a-000{i}", "active": True, "deleted": False, "roles": ["Chat.User"],
                      "absentRoles": []}
    ids, upns = list(users.values()), list(users)
    st, body = http("POST", base + "/Groups", {"schemas": [CORE_GROUP], "displayName": "Unique Admins",
                                               "externalId": "9a1b-admins", "members": []}, token)
    check(st == 201, "POST /Groups Unique Admins", f"{st} {body}")
    gid = body["id"]
    # Entra's member PATCHes: add (array value), remove by filter path, remove with a value array.
    for what, ops in [
        ("add two members", [{"op": "Add", "path": "members", "value": [{"value": ids[0]}, {"value": ids[1]}]}]),
        ("remove a member by filter path", [{"op": "Remove", "path": f'members[value eq "{ids[1]}"]'}]),
        ("add a member", [{"op": "Add", "path": "members", "value": [{"value": ids[2]}]}]),
        ("remove a member with a value array", [{"op": "Remove", "path": "members", "value": [{"value": ids[2]}]}]),
    ]:
        st, body = http("PATCH", f"{base}/Groups/{gid}", {"schemas": [PATCH], "Operations": ops}, token)
        check(st in (200, 204), f"PATCH /Groups: {what}", f"{st} {body}")
    acked[f"/Groups/{gid}"] = {"displayName": "Unique Admins"}
    # Deactivate (Entra sends the boolean as the string "False") and delete.
    st, body = http("PATCH", f"{base}/Users/{ids[1]}", {"schemas": [PATCH], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]}, token)
    check(st in (200, 204), "PATCH /Users active=\"False\" (deactivate)", f"{st} {body}")
    acked[f"/Users/{ids[1]}"]["active"] = False
    entra[upns[1]]["active"] = False
    st, body = http("DELETE", f"{base}/Users/{ids[2]}", None, token)
    check(st == 204, "DELETE /Users", f"{st} {body}")
    acked[f"/Users/{ids[2]}"] = None
    entra[upns[2]]["deleted"] = True
    # The group's member holds its role (groupRoles: Unique Admins -> Chat.Admin.All); the
    # member removed from it does not.
    entra[upns[0]]["roles"].append("Chat.Admin.All")
    entra[upns[1]].update(roles=[], absentRoles=["Chat.Admin.All"])
    st, body = http("GET", f"{base}/Groups/{gid}", None, token)
    members = sorted(m["value"] for m in (body or {}).get("members") or [])
    check(members == [ids[0]], "the group's members after the PATCHes", f"{members} vs {[ids[0]]}")
    return acked, entra


def projected(z: dict, port: int, entra: dict[str, dict]) -> None:
    """The fake's state read through its API with the admin PAT, until it matches what
    Entra sent: every user in the customer org under its userName, active or inactive,
    with its externalId as metadata; the deleted one gone; the group's role on its member."""
    url = f"http://127.0.0.1:{port}"

    def rpc(method: str, body: dict):
        return http("POST", f"{url}/zitadel.{method}", body, z["PAT"], "application/json")

    def observe() -> tuple[dict, dict]:
        """{userName: what ZITADEL has} for Entra's users, and the mismatches."""
        st, body = http("POST", f"{url}/v2/users", {"query": {"limit": 1000}}, z["PAT"], "application/json")
        if st != 200:
            return {}, {"ListUsers": (st, body)}
        seen, bad = {}, {}
        by_name = {u.get("username"): u for u in body.get("result") or []}
        for upn, want in entra.items():
            u = by_name.get(upn)
            if want["deleted"]:
                seen[upn] = "absent" if u is None else u.get("state")
                if u is not None:
                    bad[upn] = "still there"
                continue
            if u is None:
                bad[upn] = "missing"
                continue
            st, md = rpc("user.v2.UserService/ListUserMetadata", {"userId": u["userId"]})
            meta = {m["key"]: base64.b64decode(m["value"]).decode() for m in (md or {}).get("metadata") or []} \
                if st == 200 else {"error": str(md)}
            st, az = rpc("authorization.v2.AuthorizationService/ListAuthorizations",
                         {"filters": [{"inUserIds": {"ids": [u["userId"]]}}]})
            roles = sorted(r["key"] for a in (az or {}).get("authorizations") or []
                           if a.get("project", {}).get("id") == z["PROJECT"] for r in a.get("roles") or [])
            have = {"org": (u.get("details") or {}).get("resourceOwner"), "state": u.get("state"),
                    "externalId": meta.get("scim.externalId"), "roles": roles}
            seen[upn] = have
            expect = {"org": z["ORG"], "state": "USER_STATE_ACTIVE" if want["active"] else "USER_STATE_INACTIVE",
                      "externalId": want["externalId"]}
            diff = {k: (have[k], v) for k, v in expect.items() if have[k] != v}
            if set(want["roles"]) - set(roles) or set(want["absentRoles"]) & set(roles):
                diff["roles"] = (roles, want["roles"])
            if diff:
                bad[upn] = diff
        return seen, bad

    deadline = time.time() + 60
    seen, bad = observe()
    while bad and time.time() < deadline:
        time.sleep(0.5)
        seen, bad = observe()
    live = [n for n, w in entra.items() if not w["deleted"]]
    check(not any(n in bad for n in live),
          f"projected into the ZITADEL fake: {len(live)} users in org {z['ORG']} by userName, "
          "state (the deactivated one inactive), externalId metadata, the group's role on its member",
          json.dumps({"mismatch (have, want)": {n: bad[n] for n in live if n in bad}, "seen": seen}, indent=1))
    dead = [n for n, w in entra.items() if w["deleted"]]
    check(not any(n in bad for n in dead), f"projected into the ZITADEL fake: the deleted user is gone ({dead})",
          str({n: seen.get(n) for n in dead}))


if __name__ == "__main__":
    sys.exit(main())
