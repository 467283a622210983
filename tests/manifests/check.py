#!/usr/bin/env python3
"""Every shipped manifest checked with real tools, offline.

    tests/manifests/check.py --bin target/debug/scim-operator [--kubectl kubectl]

1. Helm lint with Helm's own engine (helm-sdkpy: Helm 4's library) of the chart's
   defaults and of every value set in tests/manifests/values/ (each switches
   branches of the templates); any warning or error fails. The same value sets are
   linted again by helm-python-sdk (Helm 4's lint with values, strict, and the
   oldest Kubernetes the chart supports), which also prints the messages.
2. Helm renders every value set (helm-python-sdk's offline render, the chart's
   crds/ included) with a normal and a 53-character release name: no object name
   and no label value over 63 characters, every name a DNS-1123 name.
3. Every object of the chart's renderings, `kubectl kustomize config/default` and
   `scim-operator render -f` of config/samples/scimtenant.yaml and
   scimtenant-self-service.yaml is validated against
   the upstream Kubernetes OpenAPI schemas (kubernetes-validate, strict: an unknown
   field or a wrong type fails) of the oldest version we support (the chart's
   kubeVersion minimum) and the newest kubernetes-validate ships. ScimTenants (the
   sample) are validated against our CRD's own schema, unknown fields included.
   Only the ServiceMonitor, PodMonitor and PrometheusRule (prometheus-operator's
   CRDs, whose schemas are not here) are checked for shape by hand.
4. Our CRD's schema is structural as the API server requires (a type on every node,
   no $ref or type-carrying anyOf/oneOf, properties and additionalProperties never
   together, list-map keys required scalars of object items), and carries the
   admission rules it promises.
5. Each value set renders the optional objects its values ask for and no others:
   a PodDisruptionBudget exactly from replicaCount 2, the operator's NetworkPolicy,
   the aggregated ClusterRoles with their aggregation labels.

Prints one line per check and `N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "scim-operator"
VALUES_DIR = Path(__file__).resolve().parent / "values"
LONG_RELEASE = "r" * 40 + "-scim-release"  # 53 characters, Helm's maximum
assert len(LONG_RELEASE) == 53
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Kinds whose names become DNS labels (a Service's name is a DNS name in the cluster).
LABEL_KINDS = {"Service", "Namespace", "Deployment"}

passed = 0
failed = 0


def check(ok: bool, what: str, detail: str = "") -> bool:
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {what}")
    else:
        failed += 1
        print(f"FAILED: {what}" + (f"\n    {detail}" if detail else ""))
    return ok


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class K8sLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: an unquoted 1970-01-01T00:00:00Z is a string
    (sigs.k8s.io/yaml), not a YAML 1.1 timestamp as PyYAML would have it."""


K8sLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def docs(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=K8sLoader) if d]


def value_sets() -> dict[str, dict]:
    sets = {}
    for f in sorted(VALUES_DIR.glob("*.yaml")):
        sets[f.stem] = yaml.safe_load(f.read_text()) or {}
    return sets


def chart_kube_min() -> str:
    kv_range = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    m = re.search(r">=\s*v?(\d+\.\d+)", kv_range)
    assert m, f"Chart.yaml kubeVersion {kv_range!r} has no >= minimum"
    return m.group(1)


# ---------------------------------------------------------------- 1. helm lint
def helm_lint(sets: dict[str, dict], kube_min: str) -> None:
    import helm_python
    import helm_sdkpy

    cfg = helm_sdkpy.Configuration(namespace="scim-operator")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    cases = {"chart defaults": None, **sets}
    for name, values in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            # helm-sdkpy's lint takes no values: lint a copy whose values.yaml is the
            # merged set, which is what `helm lint -f set.yaml` lints.
            chart = Path(tmp) / "scim-operator"
            shutil.copytree(CHART, chart)
            if values is not None:
                (chart / "values.yaml").write_text(yaml.safe_dump(deep_merge(defaults, values), sort_keys=False))
            report = asyncio.run(helm_sdkpy.Lint(cfg).run(str(chart)))
        msgs = report.get("Messages") or []
        bad = [m for m in msgs if m.get("Severity", 0) >= 2]
        detail = ""
        if msgs:
            # helm-sdkpy loses the message text in JSON; helm-python-sdk gives it.
            r = helm_python.lint(str(CHART), values)
            detail = "; ".join(f"[{m['severity']}] {m['path']}: {m['error'].strip()}" for m in r["messages"])
        check(not bad and not report.get("Errors"), f"helm lint (Helm 4, helm-sdkpy): {name}",
              detail or json.dumps(report))
        check(not msgs, f"helm lint: {name} has no INFO either", detail)
        for kube in (kube_min, kv.latest_version()):
            r = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{kube}.0")
            msgs2 = r.get("messages") or []
            check(not msgs2 and not r.get("errors"), f"helm lint --strict --kube-version {kube} (helm-python-sdk): {name}",
                  "; ".join(f"[{m['severity']}] {m['path']}: {m['error'].strip()}" for m in msgs2))


# ---------------------------------------------------------------- 2. helm render
def helm_render(sets: dict[str, dict]) -> dict[str, list[dict]]:
    import helm_python

    chart = helm_python.Chart.load(str(CHART))
    crds = [d for c in chart.crds for d in docs(c["data"])]
    out: dict[str, list[dict]] = {}
    for name, values in sets.items():
        for release in ("scim-operator", LONG_RELEASE):
            rendered = chart.render(values=values, name=release, namespace="scim-operator", is_install=True)
            objs = [d for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt") for d in docs(text)]
            key = f"chart[{name}, release {len(release)} chars]"
            out[key] = objs + crds
            problems = []
            for o in objs:
                n = o["metadata"]["name"]
                if len(n) > 63:
                    problems.append(f"{o['kind']}/{n}: {len(n)} characters")
                if not (DNS1123_LABEL if o["kind"] in LABEL_KINDS else DNS1123_SUBDOMAIN).match(n):
                    problems.append(f"{o['kind']}/{n}: not a DNS-1123 name")
                for where, labels in label_maps(o):
                    for lk, lv in labels.items():
                        if len(str(lv)) > 63:
                            problems.append(f"{o['kind']}/{n} {where} label {lk}={lv}: {len(str(lv))} characters")
            check(not problems, f"helm template {key}: names and label values <= 63 characters",
                  "; ".join(problems))
    return out


def label_maps(o: dict):
    yield "metadata", o["metadata"].get("labels") or {}
    spec = o.get("spec") or {}
    if isinstance(spec.get("selector"), dict):
        yield "selector", spec["selector"].get("matchLabels") or (
            spec["selector"] if o["kind"] == "Service" else {})
    tmpl = spec.get("template") or {}
    yield "template", (tmpl.get("metadata") or {}).get("labels") or {}


# ---------------------------------------------------------------- 3. schemas
def crd_schema(crd: dict) -> dict:
    for v in crd["spec"]["versions"]:
        if v.get("storage"):
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError("CRD has no storage version")


def unknown_fields(obj, schema: dict, path: str = "") -> list[str]:
    """Fields a structural schema would prune (the API server drops them silently)."""
    out = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        if props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for k, v in obj.items():
                if path == "" and k in ("apiVersion", "kind", "metadata"):
                    continue
                if k not in props:
                    if not isinstance(schema.get("additionalProperties"), dict):
                        out.append(f"{path}.{k}")
                else:
                    out += unknown_fields(v, props[k], f"{path}.{k}")
        elif isinstance(schema.get("additionalProperties"), dict):
            for k, v in obj.items():
                out += unknown_fields(v, schema["additionalProperties"], f"{path}.{k}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(obj):
            out += unknown_fields(v, schema["items"], f"{path}[{i}]")
    return out


def validate_all(sources: dict[str, list[dict]], versions: list[str], crd: dict) -> None:
    scim_schema = crd_schema(crd)
    for source, objs in sources.items():
        for version in versions:
            problems, n = [], 0
            for o in objs:
                kind = f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"
                api = o.get("apiVersion", "")
                if api.startswith("scim.unique.app/"):
                    errs = [e.message for e in jsonschema.Draft7Validator(scim_schema).iter_errors(o)]
                    errs += [f"unknown field {f}" for f in unknown_fields(o, scim_schema)]
                    problems += [f"{kind}: {e}" for e in errs]
                    n += 1
                    continue
                if api.startswith("monitoring.coreos.com/"):
                    spec = o.get("spec") or {}
                    shape = {
                        "ServiceMonitor": spec.get("selector") and isinstance(spec.get("endpoints"), list),
                        "PodMonitor": spec.get("selector") and isinstance(spec.get("podMetricsEndpoints"), list),
                        "PrometheusRule": isinstance(spec.get("groups"), list) and all(
                            isinstance(r.get("expr"), str) and r.get("alert")
                            for g in spec["groups"] for r in g.get("rules", [])),
                    }.get(o.get("kind"))
                    if not shape:
                        problems.append(f"{kind}: not the shape of a {o.get('kind')}")
                    n += 1
                    continue
                try:
                    kv.validate(o, version, strict=True)
                    n += 1
                except kv.ValidationError as e:
                    problems.append(f"{kind}: {'.'.join(str(p) for p in e.path)}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    problems.append(f"{kind}: {e.message}")
            check(not problems and n == len(objs) and n > 0,
                  f"schemas of Kubernetes {version} (strict): {source}, {n} objects", "; ".join(problems))


# ---------------------------------------------------------------- 4. structural CRD
def structural_problems(node: dict, path: str = "") -> list[str]:
    """What the API server's structural-schema check would reject (apiextensions
    validation: every node typed unless int-or-string or preserving unknown fields,
    no $ref, no types inside logical junctors, list-map keys required scalars)."""
    out = []
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    if "$ref" in node:
        out.append(f"{path}: $ref")
    if "type" not in node and not (node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")):
        out.append(f"{path}: no type")
    if "properties" in node and "additionalProperties" in node:
        out.append(f"{path}: properties and additionalProperties together")
    for junctor in ("anyOf", "oneOf", "allOf"):
        # The one exception: int-or-string may spell its two types out in anyOf.
        if node.get("x-kubernetes-int-or-string") and junctor == "anyOf":
            continue
        for i, sub in enumerate(node.get(junctor) or []):
            for banned in ("type", "default", "description", "nullable", "additionalProperties", "$ref"):
                if banned in sub:
                    out.append(f"{path}.{junctor}[{i}]: {banned} inside a logical junctor")
    if node.get("x-kubernetes-list-type") == "map":
        items = node.get("items") or {}
        keys = node.get("x-kubernetes-list-map-keys") or []
        if items.get("type") != "object" or not keys:
            out.append(f"{path}: a list-map needs object items and keys")
        for k in keys:
            prop = (items.get("properties") or {}).get(k) or {}
            if prop.get("type") not in ("string", "integer", "boolean"):
                out.append(f"{path}: list-map key {k} is not a scalar property")
            if k not in (items.get("required") or []) and "default" not in prop:
                out.append(f"{path}: list-map key {k} is neither required nor defaulted")
    for k, sub in (node.get("properties") or {}).items():
        out += structural_problems(sub, f"{path}.{k}")
    if isinstance(node.get("additionalProperties"), dict):
        out += structural_problems(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        out += structural_problems(node["items"], f"{path}[]")
    return out


def check_crd(crd: dict) -> None:
    schema = crd_schema(crd)
    problems = structural_problems(schema)
    check(not problems, "the CRD's schema is structural", "; ".join(problems[:10]))
    spec = schema["properties"]["spec"]["properties"]
    keys, server = spec["keys"], spec["server"]["properties"]
    rules = {
        "spec.keys is a list-map keyed on name": keys.get("x-kubernetes-list-type") == "map"
        and keys.get("x-kubernetes-list-map-keys") == ["name"],
        "spec.keys[].expiresAfter has a pattern": "pattern" in keys["items"]["properties"]["expiresAfter"],
        "spec.server.storage.size has a pattern": "pattern" in server["storage"]["properties"]["size"],
        "spec.server.replicas is 0..1": (server["replicas"].get("minimum"), server["replicas"].get("maximum")) == (0, 1),
    }
    for what, ok in rules.items():
        check(ok, f"CRD admission rule: {what}")


# ---------------------------------------------------------------- 5. optional objects
def check_optional_objects(sets: dict[str, dict], sources: dict[str, list[dict]]) -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, values in sets.items():
        v = deep_merge(defaults, values)
        objs = sources[f"chart[{name}, release {len('scim-operator')} chars]"]
        kinds = [o["kind"] for o in objs]
        want_pdb = int(v["replicaCount"]) >= 2
        check(("PodDisruptionBudget" in kinds) == want_pdb,
              f"{name}: a PodDisruptionBudget {'exists' if want_pdb else 'does not exist'} (replicaCount {v['replicaCount']})")
        want_np = v["networkPolicy"]["operator"]["enabled"]
        check(("NetworkPolicy" in kinds) == want_np, f"{name}: the operator's NetworkPolicy {'exists' if want_np else 'does not exist'}")
        aggregated = {o["metadata"]["name"].rsplit("-", 2)[-2] + "-" + o["metadata"]["name"].rsplit("-", 1)[-1]: o
                      for o in objs if o["kind"] == "ClusterRole" and "aggregate-to-admin" in str(o["metadata"].get("labels"))}
        want_roles = v["rbac"]["create"] and v["rbac"]["aggregatedRoles"]
        ok = sorted(aggregated) == (["scimtenant-editor", "scimtenant-viewer"] if want_roles else [])
        if want_roles and ok:
            labels = aggregated["scimtenant-viewer"]["metadata"]["labels"]
            ok = labels.get("rbac.authorization.k8s.io/aggregate-to-view") == "true" and not any(
                "secrets" in r["resources"] for role in aggregated.values() for r in role["rules"])
        check(ok, f"{name}: aggregated ScimTenant roles {'exist, viewer aggregated to view, no Secrets' if want_roles else 'absent'}",
              str(sorted(aggregated)))


def run(cmd: list[str]) -> str:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr}")
    return p.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the scim-operator binary (for `render`)")
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--skip-lint", action="store_true")
    a = ap.parse_args()
    sets = value_sets()
    check(len(sets) >= 5, f"at least five value sets in {VALUES_DIR.relative_to(ROOT)} ({len(sets)})")
    kube_min = chart_kube_min()
    versions = [kube_min, kv.latest_version().rsplit(".", 1)[0]]
    print(f"Kubernetes versions: {versions[0]} (Chart.yaml kubeVersion minimum) and {versions[1]} "
          f"(newest in kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''})")

    if not a.skip_lint:
        helm_lint(sets, kube_min)
    sources = helm_render(sets)
    crd = docs((ROOT / "crds" / "scimtenants.scim.unique.app.yaml").read_text())[0]
    check(sorted(p.name for p in (ROOT / "crds").iterdir()) == ["scimtenants.scim.unique.app.yaml"]
          and crd["kind"] == "CustomResourceDefinition",
          "crds/ holds only CustomResourceDefinitions (kubectl apply --server-side -f crds/)")
    sources["kubectl kustomize config/default"] = docs(run([a.kubectl, "kustomize", "config/default"]))
    sources["kubectl kustomize config/samples"] = docs(run([a.kubectl, "kustomize", "config/samples"]))
    sources["scim-operator render -f config/samples/scimtenant.yaml"] = docs(
        run([os.path.abspath(a.bin), "render", "-f", "config/samples/scimtenant.yaml"]))
    sources["scim-operator render -f config/samples/scimtenant-self-service.yaml"] = docs(
        run([os.path.abspath(a.bin), "render", "-f", "config/samples/scimtenant-self-service.yaml"]))
    sources["scim-operator crd"] = docs(run([os.path.abspath(a.bin), "crd"]))
    validate_all(sources, versions, crd)
    check_crd(crd)
    check_optional_objects(sets, sources)
    print(f"manifests: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
