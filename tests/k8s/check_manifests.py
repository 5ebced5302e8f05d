#!/usr/bin/env python3
"""Checks rendered volley Kubernetes manifests (the output of `kubectl kustomize`).

    check_manifests.py --repo ROOT [--k8s-version 1.32.0] [--learner-bin PATH]
                       [--actor-bin PATH] RENDERED.yaml

1. Every object validates against the Kubernetes JSON schemas of one pinned version
   (kubernetes-validate, strict: unknown fields are errors); the Prometheus Operator's
   monitors get structural checks of their own.
2. What no schema sees: the learner Deployment (one replica, Recreate, one GPU, the run
   directory on a PersistentVolumeClaim, the config file in a ConfigMap that exists),
   the Service selecting the learner's pods and no actor's, port names and numbers
   agreeing across Service, containers, probes, Prometheus annotations and the
   processes' own listen arguments, the actors' --learner address naming that
   Service's gRPC port, every $(VAR) in args defined, every CLI flag known to the
   binary, every run-config key (file and overrides) known to the learner with a
   value of the right type, resources requested, dashboards that parse.
3. With --learner-bin: the learner starts on the rendered config (on CPU, loopback)
   and is stopped once it serves, which checks the config as the learner reads it.

Prints one line per finding and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

FAILURES: list[str] = []
WARNINGS: list[str] = []


def fail(msg: str) -> None:
    FAILURES.append(msg)
    print(f"FAIL: {msg}")


def warn(msg: str) -> None:
    WARNINGS.append(msg)
    print(f"WARN: {msg}")


def ok(msg: str) -> None:
    print(f"ok: {msg}")


# --- what the Rust sources say -------------------------------------------------------


def rust_structs(paths: list[Path]) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Named-field structs (field -> type) and unit-variant enums of the given files.
    The fields of a `#[serde(flatten)]` field's struct are merged into its parent."""
    structs: dict[str, dict[str, str]] = {}
    enums: dict[str, list[str]] = {}
    flattened: dict[str, list[str]] = {}
    for p in paths:
        text = p.read_text()
        for m in re.finditer(r"pub struct (\w+)\s*\{(.*?)\n\}", text, re.S):
            fields = {}
            flat = False
            for line in m.group(2).splitlines():
                if "#[serde(flatten)]" in line:
                    flat = True
                    continue
                f = re.match(r"\s*pub (\w+):\s*(.+?),?\s*$", line)
                if f:
                    if flat:
                        flattened.setdefault(m.group(1), []).append(f.group(2).rstrip(","))
                        flat = False
                    else:
                        fields[f.group(1)] = f.group(2).rstrip(",")
            structs[m.group(1)] = fields
        for m in re.finditer(
            r"#\[serde\(rename_all = \"lowercase\"\)\]\s*pub enum (\w+)\s*\{(.*?)\n\}", text, re.S
        ):
            variants = re.findall(r"^\s*(\w+),", m.group(2), re.M)
            enums[m.group(1)] = [v.lower() for v in variants]
    for name, inner in flattened.items():
        for t in inner:
            structs[name].update(structs.get(t, {}))
    return structs, enums


def config_schema(repo: Path):
    """The learner's config structs. A run config's algorithm sections (`[ppo]`,
    `[sac]`, ...) are the algorithms of common/src/algorithms.rs, each read by its
    module learner/src/algo/<name>.rs (or <name>/mod.rs) into the struct of its
    `ctx.section()`."""
    paths = sorted((repo / "learner" / "src").rglob("*.rs")) + [repo / "common" / "src" / "reward.rs"]
    structs, enums = rust_structs(paths)
    if "RunConfig" not in structs or not structs["RunConfig"]:
        raise SystemExit("check_manifests.py: cannot read RunConfig from learner/src/config.rs")
    listing = (repo / "common" / "src" / "algorithms.rs").read_text()
    m = re.search(r"\$m!\s*\{(.*?)\}", listing, re.S)
    if not m:
        raise SystemExit("check_manifests.py: cannot read the list of algorithms in common/src/algorithms.rs")
    structs["RunConfig"].pop("sections", None)
    for name in re.findall(r"(\w+),", m.group(1)):
        algo = repo / "learner" / "src" / "algo"
        # An algorithm is the module algo/<name>.rs or algo/<name>/mod.rs.
        found = [p for p in (algo / f"{name}.rs", algo / name / "mod.rs") if p.exists()]
        if not found:
            raise SystemExit(f"check_manifests.py: no module learner/src/algo/{name}.rs or {name}/mod.rs")
        module = found[0].read_text()
        s = re.search(r"let cfg: (\w+) = ctx\.section\(\)", module)
        if not s or s.group(1) not in structs:
            raise SystemExit(f"check_manifests.py: cannot find the config struct of {name} in learner/src/algo/{name}.rs")
        structs["RunConfig"][name] = s.group(1)
    return structs, enums


def type_ok(value, rust_type: str, structs, enums) -> str | None:
    """None if value fits rust_type, else a description of what was expected."""
    t = rust_type.strip()
    m = re.fullmatch(r"Option<(.+)>", t)
    if m:
        return type_ok(value, m.group(1), structs, enums)
    m = re.fullmatch(r"Vec<(.+)>", t)
    if m:
        if not isinstance(value, list):
            return "an array"
        for v in value:
            e = type_ok(v, m.group(1), structs, enums)
            if e:
                return f"an array of {e}"
        return None
    if t == "bool":
        return None if isinstance(value, bool) else "true or false"
    if t in ("u8", "u16", "u32", "u64", "usize"):
        ok_ = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok_ else "a non-negative integer"
    if t in ("i32", "i64", "isize"):
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if t in ("f32", "f64"):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if t == "String":
        return None if isinstance(value, str) else "a string"
    if t in enums:
        return None if value in enums[t] else "one of " + ", ".join(enums[t])
    return None  # a type this check does not know: the learner itself will judge


def check_config_table(table: dict, struct: str, prefix: str, structs, enums, where: str) -> int:
    """Checks keys and value types; returns the number of leaf keys seen."""
    fields = structs[struct]
    n = 0
    for k, v in table.items():
        key = f"{prefix}{k}"
        if k not in fields:
            fail(f"{where}: unknown config key '{key}' (the learner refuses it)")
            continue
        t = fields[k]
        if t in structs:
            if not isinstance(v, dict):
                fail(f"{where}: '{key}' must be a section")
                continue
            n += check_config_table(v, t, key + ".", structs, enums, where)
            continue
        e = type_ok(v, t, structs, enums)
        if e:
            fail(f"{where}: '{key}' = {v!r} must be {e} ({t})")
        n += 1
    return n


def override_key_known(key: str, structs) -> bool:
    struct = "RunConfig"
    parts = key.split(".")
    for i, p in enumerate(parts):
        fields = structs.get(struct, {})
        if p not in fields:
            return False
        t = fields[p]
        if i < len(parts) - 1:
            if t not in structs:
                return False
            struct = t
    return True


def clap_flags_from_source(path: Path, block_start: str) -> dict[str, bool]:
    """Flags (name -> takes a value) of a clap struct or enum variant in a source file."""
    text = path.read_text()
    i = text.find(block_start)
    if i < 0:
        return {}
    depth = 0
    body = ""
    for j in range(text.index("{", i), len(text)):
        c = text[j]
        depth += c == "{"
        depth -= c == "}"
        if depth == 0:
            body = text[text.index("{", i) + 1 : j]
            break
    flags = {}
    for m in re.finditer(r"^\s*(?:pub\s+)?(\w+):\s*([^,\n]+),", body, re.M):
        name, t = m.group(1), m.group(2).strip()
        if name == "overrides":  # positional key=value list
            continue
        flags["--" + name.replace("_", "-")] = t != "bool"
    return flags


def clap_flags_from_help(cmd: list[str]) -> dict[str, bool] | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    flags = {}
    for m in re.finditer(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)(?: <[^>]+>)?", out, re.M):
        flags[m.group(1)] = "<" in m.group(0)
    return flags or None


def parse_cli(args: list[str], flags: dict[str, bool], where: str) -> tuple[dict[str, str], list[str]]:
    """Splits args into known flags and positionals; unknown flags fail."""
    seen: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            name, eq, val = a.partition("=")
            if name not in flags:
                fail(f"{where}: unknown flag {name} (known: {', '.join(sorted(flags))})")
                i += 1
                continue
            if flags[name] and not eq:
                if i + 1 >= len(args):
                    fail(f"{where}: flag {name} has no value")
                    break
                val = args[i + 1]
                i += 1
            seen[name] = val
        else:
            positional.append(a)
        i += 1
    return seen, positional


# --- manifest helpers ---------------------------------------------------------------


def port_of(addr: str) -> int | None:
    m = re.fullmatch(r"(?:\[[^\]]*\]|[^:]*):(\d+)", addr)
    return int(m.group(1)) if m else None


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container: dict, ref) -> int | None:
    for p in container.get("ports", []) or []:
        if ref == p.get("name") or ref == p.get("containerPort"):
            return p.get("containerPort")
    return None


def check_probe(where: str, container: dict, probe_name: str, metrics_port: int | None) -> None:
    probe = container.get(probe_name)
    if not probe:
        fail(f"{where}: no {probe_name}")
        return
    http = probe.get("httpGet")
    if not http:
        fail(f"{where}: {probe_name} is not an HTTP probe of /metrics")
        return
    if http.get("path") != "/metrics":
        fail(f"{where}: {probe_name} path is {http.get('path')!r}, not /metrics")
    if container_port(container, http.get("port")) != metrics_port or metrics_port is None:
        fail(f"{where}: {probe_name} port {http.get('port')!r} is not the metrics port")


def check_var_refs(where: str, container: dict) -> None:
    defined = {e["name"] for e in container.get("env", []) or []}
    for a in (container.get("command") or []) + (container.get("args") or []):
        for var in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            if var not in defined:
                fail(f"{where}: argument {a!r} uses $({var}), which the container does not define "
                     "(Kubernetes would pass it on literally)")


def check_resources(where: str, container: dict) -> None:
    res = container.get("resources") or {}
    req = res.get("requests") or {}
    for r in ("cpu", "memory"):
        if r not in req:
            fail(f"{where}: no {r} request")
    if "memory" not in (res.get("limits") or {}):
        fail(f"{where}: no memory limit")


def check_annotations(where: str, template: dict, metrics_port: int | None) -> None:
    ann = (template.get("metadata") or {}).get("annotations") or {}
    if ann.get("prometheus.io/scrape") != "true":
        fail(f"{where}: pod annotation prometheus.io/scrape is not \"true\"")
    try:
        annotated = int(ann.get("prometheus.io/port", ""))
    except ValueError:
        annotated = None
    if annotated is None or annotated != metrics_port:
        fail(f"{where}: pod annotation prometheus.io/port={ann.get('prometheus.io/port')!r} "
             f"is not the container's metrics port {metrics_port}")
    if ann.get("prometheus.io/path", "/metrics") != "/metrics":
        fail(f"{where}: pod annotation prometheus.io/path is not /metrics")


# --- the checks -----------------------------------------------------------------------


def schema_checks(docs: list[dict], version: str) -> None:
    import kubernetes_validate as kv

    for d in docs:
        name = f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        if d.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            monitor_check(d, name)
            continue
        try:
            kv.validate(d, version, strict=True)
            ok(f"schema {name} (Kubernetes {version}, strict)")
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            fail(f"schema {name}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            fail(f"schema {name}: {e.message}")


def monitor_check(d: dict, name: str) -> None:
    """Structure only; what a monitor selects is checked in monitor_targets."""
    spec = d.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels")
    eps = spec.get("endpoints") if d["kind"] == "ServiceMonitor" else spec.get("podMetricsEndpoints")
    if d["kind"] not in ("ServiceMonitor", "PodMonitor"):
        fail(f"{name}: unexpected kind")
    elif not sel:
        fail(f"{name}: no spec.selector.matchLabels")
    elif not eps or not all(e.get("port") for e in eps):
        fail(f"{name}: every endpoint needs a named port")
    else:
        ok(f"structure {name} (no schema for this CRD)")


# The job names the dashboards and alert rules (deploy/grafana, deploy/prometheus) use.
JOBS = {"learner": "volley-learner", "actor": "volley-actor"}


def monitor_targets(docs: list[dict]) -> None:
    """Each monitor selects volley's objects, on a port they have, under the job name
    the dashboards expect."""
    for d in docs:
        if d.get("kind") not in ("ServiceMonitor", "PodMonitor"):
            continue
        name = f"{d['kind']}/{d['metadata']['name']}"
        spec = d.get("spec") or {}
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        if d["kind"] == "ServiceMonitor":
            targets = [(s["metadata"].get("labels") or {}, [p.get("name") for p in s["spec"].get("ports", [])])
                       for s in docs if s.get("kind") == "Service"
                       and labels_match(sel, s["metadata"].get("labels") or {})]
            eps = spec.get("endpoints") or []
        else:
            targets = []
            for w in docs:
                if w.get("kind") != "Deployment":
                    continue
                t = w["spec"]["template"]
                if labels_match(sel, t["metadata"].get("labels") or {}):
                    ports = [p.get("name") for c in t["spec"]["containers"] for p in c.get("ports", []) or []]
                    targets.append((t["metadata"].get("labels") or {}, ports))
            eps = spec.get("podMetricsEndpoints") or []
        if not targets:
            fail(f"{name}: selector {sel} matches nothing")
            continue
        before = len(FAILURES)
        for labels, ports in targets:
            for e in eps:
                if e.get("port") not in ports:
                    fail(f"{name}: port {e.get('port')!r} is not among {ports}")
            job = labels.get(spec.get("jobLabel", ""), d["metadata"]["name"] if d["kind"] == "ServiceMonitor" else None)
            want = JOBS.get(labels.get("app.kubernetes.io/component", ""))
            if job != want:
                fail(f"{name}: scrapes under job {job!r}; the dashboards and alerts expect {want!r}")
        if len(FAILURES) == before:
            ok(f"{name}: selects {len(targets)} volley object(s) on a port they have, job name as the dashboards expect")


def by_component(docs: list[dict], kind: str, component: str) -> list[dict]:
    out = []
    for d in docs:
        if d.get("kind") != kind:
            continue
        labels = (((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        if labels.get("app.kubernetes.io/component") == component:
            out.append(d)
    return out


def semantic_checks(docs: list[dict], repo: Path, learner_bin: str | None, actor_bin: str | None):
    """Returns (run config text, learner overrides) for the start check."""
    structs, enums = config_schema(repo)
    objects = {(d.get("kind"), (d.get("metadata") or {}).get("name")): d for d in docs}
    namespaces = {(d.get("metadata") or {}).get("namespace") for d in docs}
    learners = by_component(docs, "Deployment", "learner")
    actors = by_component(docs, "Deployment", "actor")
    if len(learners) != 1 or len(actors) != 1:
        fail(f"expected one learner and one actor Deployment, found {len(learners)} and {len(actors)}")
        return None, []
    learner, actor = learners[0], actors[0]
    lname, aname = learner["metadata"]["name"], actor["metadata"]["name"]
    lpod, apod = learner["spec"]["template"], actor["spec"]["template"]
    lc = lpod["spec"]["containers"][0]
    ac = apod["spec"]["containers"][0]
    lwhere, awhere = f"Deployment/{lname}", f"Deployment/{aname}"

    # The learner Deployment.
    if learner["spec"].get("replicas", 1) != 1:
        fail(f"{lwhere}: replicas must be 1 (one learner per run)")
    if (learner["spec"].get("strategy") or {}).get("type") != "Recreate":
        fail(f"{lwhere}: strategy must be Recreate (two learners must never share a run directory)")
    gpu = ((lc.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu")
    if str(gpu) != "1":
        fail(f"{lwhere}: limits nvidia.com/gpu is {gpu!r}, expected 1")
    for where, c, pod in ((lwhere, lc, lpod), (awhere, ac, apod)):
        for other in (pod["spec"].get("containers") or [])[1:]:
            warn(f"{where}: extra container {other.get('name')} is not checked")
        check_var_refs(where, c)
        check_resources(where, c)
        if not c.get("image"):
            fail(f"{where}: no image")
    if "volley-learner" not in lc.get("image", ""):
        fail(f"{lwhere}: image {lc.get('image')!r} is not a volley-learner image")
    if "volley-actor" not in ac.get("image", "") and "volley-learner" not in ac.get("image", ""):
        fail(f"{awhere}: image {ac.get('image')!r} is not a volley image")
    if not isinstance(actor["spec"].get("replicas", 1), int):
        fail(f"{awhere}: replicas must be an integer")

    # Volumes: the run directory on a PVC, the config in a ConfigMap.
    env = {e["name"]: e for e in lc.get("env", []) or []}
    volumes = {v["name"]: v for v in lpod["spec"].get("volumes", []) or []}
    mounts = {m["mountPath"].rstrip("/"): m for m in lc.get("volumeMounts", []) or []}
    for m in mounts.values():
        if m["name"] not in volumes:
            fail(f"{lwhere}: volumeMount {m['name']} has no volume")
    run_dir = (env.get("VOLLEY_RUN_DIR") or {}).get("value")
    m = mounts.get((run_dir or "").rstrip("/"))
    vol = volumes.get(m["name"]) if m else None
    if not vol or "persistentVolumeClaim" not in vol:
        fail(f"{lwhere}: VOLLEY_RUN_DIR={run_dir!r} is not the mount path of a PersistentVolumeClaim")
    else:
        claim = vol["persistentVolumeClaim"]["claimName"]
        if ("PersistentVolumeClaim", claim) not in objects:
            fail(f"{lwhere}: claim {claim} is not among the rendered objects")
        elif m.get("readOnly"):
            fail(f"{lwhere}: the run directory is mounted read-only")
        else:
            ok(f"{lwhere}: run directory {run_dir} on PersistentVolumeClaim/{claim}")
    cfg_path = (env.get("VOLLEY_CONFIG") or {}).get("value", "")
    cfg_text = None
    m = mounts.get(os.path.dirname(cfg_path))
    vol = volumes.get(m["name"]) if m else None
    if not vol or "configMap" not in vol:
        fail(f"{lwhere}: VOLLEY_CONFIG={cfg_path!r} is not in a ConfigMap volume's mount")
    else:
        cm = objects.get(("ConfigMap", vol["configMap"]["name"]))
        key = os.path.basename(cfg_path)
        if cm is None:
            fail(f"{lwhere}: ConfigMap {vol['configMap']['name']} is not among the rendered objects")
        elif key not in (cm.get("data") or {}):
            fail(f"{lwhere}: ConfigMap {vol['configMap']['name']} has no key {key}")
        else:
            cfg_text = cm["data"][key]
            ok(f"{lwhere}: run config {cfg_path} from ConfigMap/{vol['configMap']['name']}")

    # The run config: keys and value types against the learner's config structs.
    if cfg_text is not None:
        try:
            table = tomllib.loads(cfg_text)
        except tomllib.TOMLDecodeError as e:
            fail(f"run config: not valid TOML: {e}")
        else:
            n = check_config_table(table, "RunConfig", "", structs, enums, "run config")
            if (table.get("learner") or {}).get("auth_token"):
                fail("run config: learner.auth_token is set in a ConfigMap; put it in the Secret")
            ok(f"run config: {n} keys checked against the learner's config structs")

    # CLI: the entry point's role, then the binary's flags.
    largs, aargs = lc.get("args") or [], ac.get("args") or []
    if lc.get("command"):
        fail(f"{lwhere}: command overrides the image's entry point")
    if ac.get("command"):
        fail(f"{awhere}: command overrides the image's entry point")
    if largs[:1] != ["learner"]:
        fail(f"{lwhere}: args must start with the entry point's role 'learner'")
    if aargs[:1] != ["actor"]:
        fail(f"{awhere}: args must start with the entry point's role 'actor'")
    lflags = (learner_bin and clap_flags_from_help([learner_bin, "--help"])) or clap_flags_from_source(
        repo / "learner/src/main.rs", "struct Cli")
    aflags = (actor_bin and clap_flags_from_help([actor_bin, "run", "--help"])) or clap_flags_from_source(
        repo / "actor/src/main.rs", "    Run {")
    for f in ("--help", "--version"):
        lflags.pop(f, None)
        aflags.pop(f, None)
    if not lflags or not aflags:
        fail("cannot read the binaries' flags (learner/src/main.rs Cli, actor/src/main.rs Run)")
        return cfg_text, []
    lseen, overrides = parse_cli(largs[1:], lflags, lwhere)
    aseen, apos = parse_cli(aargs[1:], aflags, awhere)
    if "--config" in lseen or "--resume" in lseen:
        fail(f"{lwhere}: the entry point passes --config/--resume itself (VOLLEY_CONFIG, VOLLEY_RUN_DIR)")
    if lseen.get("--device", "auto") not in ("auto", "cpu", "cuda"):
        fail(f"{lwhere}: --device {lseen['--device']!r}: expected auto, cpu or cuda")
    if apos:
        fail(f"{awhere}: stray arguments {apos}")
    ov = {}
    for o in overrides:
        k, eq, v = o.partition("=")
        if not eq:
            fail(f"{lwhere}: argument {o!r} is neither a flag nor key=value")
        elif not override_key_known(k, structs):
            fail(f"{lwhere}: override '{k}' is not a config key of the learner")
        else:
            ov[k] = v
    if "learner.auth_token" in ov:
        fail(f"{lwhere}: learner.auth_token in args; use the VOLLEY_AUTH_TOKEN variable from a Secret")

    # Ports: names, numbers, listen arguments, probes, annotations.
    lports = {p.get("name"): p.get("containerPort") for p in lc.get("ports", []) or []}
    aports = {p.get("name"): p.get("containerPort") for p in ac.get("ports", []) or []}
    for where, ports, names in ((lwhere, lports, ("grpc", "metrics")), (awhere, aports, ("metrics",))):
        for n in names:
            if n not in ports:
                fail(f"{where}: no container port named {n}")
    for key, name in (("learner.listen", "grpc"), ("learner.metrics_listen", "metrics")):
        if key not in ov:
            fail(f"{lwhere}: no {key}= override (the port would depend on the config file)")
        elif port_of(ov[key]) != lports.get(name):
            fail(f"{lwhere}: {key}={ov[key]} does not listen on the '{name}' port {lports.get(name)}")
        elif not ov[key].startswith(("0.0.0.0:", "[::]:")):
            fail(f"{lwhere}: {key}={ov[key]} does not listen on all interfaces")
    ml = aseen.get("--metrics-listen")
    if ml is None:
        fail(f"{awhere}: no --metrics-listen (the actor would serve no metrics)")
    elif port_of(ml) != aports.get("metrics"):
        fail(f"{awhere}: --metrics-listen {ml} is not the 'metrics' port {aports.get('metrics')}")
    for where, c, pod, port in ((lwhere, lc, lpod, lports.get("metrics")), (awhere, ac, apod, aports.get("metrics"))):
        for probe in ("livenessProbe", "readinessProbe"):
            check_probe(where, c, probe, port)
        if c.get("startupProbe"):
            check_probe(where, c, "startupProbe", port)
        check_annotations(where, pod, port)
    if not FAILURES:
        ok("ports: names, listen arguments, probes and prometheus.io annotations agree")

    # The Service: selects the learner's pods (and no actor), ports resolve.
    lpod_labels = lpod["metadata"].get("labels") or {}
    apod_labels = apod["metadata"].get("labels") or {}
    sel = learner["spec"]["selector"].get("matchLabels") or {}
    if not labels_match(sel, lpod_labels):
        fail(f"{lwhere}: selector {sel} does not match its own pod labels")
    services = [d for d in docs if d.get("kind") == "Service"]
    learner_svcs = []
    for s in services:
        ssel = (s.get("spec") or {}).get("selector") or {}
        sname = s["metadata"]["name"]
        if labels_match(ssel, apod_labels):
            fail(f"Service/{sname}: selector {ssel} also matches the actor pods")
        if labels_match(ssel, lpod_labels):
            learner_svcs.append(s)
            for p in s["spec"].get("ports", []):
                target = p.get("targetPort", p.get("port"))
                if container_port(lc, target) is None:
                    fail(f"Service/{sname}: port {p.get('name')} targets {target!r}, not a learner container port")
                if p.get("name") not in lports:
                    fail(f"Service/{sname}: port name {p.get('name')!r} differs from the container's port names")
        else:
            fail(f"Service/{sname}: selector {ssel} selects no learner pod")
    if not learner_svcs:
        fail("no Service selects the learner's pods")

    # The actors' --learner address: a learner Service and its grpc port.
    addr = aseen.get("--learner", "")
    host, _, port = addr.rpartition(":")
    target = None
    for s in learner_svcs:
        sname = s["metadata"]["name"]
        ns = s["metadata"].get("namespace") or "default"
        if host in (sname, f"{sname}.{ns}", f"{sname}.{ns}.svc", f"{sname}.{ns}.svc.cluster.local"):
            target = s
    if target is None:
        fail(f"{awhere}: --learner {addr!r} names no Service that selects the learner "
             f"(services: {[s['metadata']['name'] for s in services]}; a namePrefix renames them)")
    else:
        grpc = [p for p in target["spec"]["ports"] if p.get("name") == "grpc"]
        if not grpc or str(grpc[0]["port"]) != port:
            fail(f"{awhere}: --learner {addr!r}: port {port} is not Service/{target['metadata']['name']}'s grpc port")
        elif container_port(lc, grpc[0].get("targetPort")) != port_of(ov.get("learner.listen", "")):
            fail(f"Service/{target['metadata']['name']}: grpc does not reach the port the learner listens on")
        else:
            ok(f"{awhere}: --learner {addr} reaches the learner's gRPC port through Service/{target['metadata']['name']}")
    if len(namespaces) > 1:
        fail(f"objects in several namespaces: {sorted(str(n) for n in namespaces)}")

    # Secrets referenced by both sides: the same token.
    def token_ref(c):
        for e in c.get("env", []) or []:
            if e["name"] == "VOLLEY_AUTH_TOKEN":
                r = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
                return (r.get("name"), r.get("key"))
        return None
    if token_ref(lc) != token_ref(ac):
        fail(f"learner and actors take VOLLEY_AUTH_TOKEN from different places: {token_ref(lc)} vs {token_ref(ac)}")

    monitor_targets(docs)

    # Dashboards: JSON, and small enough to apply.
    for d in docs:
        if d.get("kind") == "ConfigMap" and (d["metadata"].get("labels") or {}).get("grafana_dashboard"):
            data = d.get("data") or {}
            size = sum(len(v.encode()) for v in data.values())
            for k, v in data.items():
                try:
                    j = json.loads(v)
                    if "panels" not in j:
                        fail(f"ConfigMap/{d['metadata']['name']}: {k} has no panels")
                except json.JSONDecodeError as e:
                    fail(f"ConfigMap/{d['metadata']['name']}: {k} is not JSON: {e}")
            if size > 1_000_000:
                fail(f"ConfigMap/{d['metadata']['name']}: {size} bytes, over the 1 MiB ConfigMap limit")
            elif size > 250_000:
                warn(f"ConfigMap/{d['metadata']['name']}: {size} bytes; use kubectl apply --server-side")
            ok(f"ConfigMap/{d['metadata']['name']}: {len(data)} dashboards, {size} bytes")
    return cfg_text, [o for o in overrides if not o.startswith(("learner.listen=", "learner.metrics_listen="))]


def start_learner(learner_bin: str, cfg_text: str, overrides: list[str]) -> None:
    """Runs `volley-learner --check` on the rendered config and overrides: parses and
    validates them, probes the env and builds the model, without ports or a run directory."""
    with tempfile.TemporaryDirectory(prefix="volley-k8s-") as tmp:
        cfg = Path(tmp) / "run.toml"
        cfg.write_text(cfg_text)
        cmd = [learner_bin, "--check", "--config", str(cfg), "--device", "cpu", *overrides,
               f"run.dir={tmp}/runs", "run.name=k8s-check"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            fail("learner: volley-learner --check did not finish within 120 s")
            return
        if p.returncode == 0 and not (Path(tmp) / "runs").exists():
            ok("learner: volley-learner --check accepts the rendered run config and overrides")
        else:
            tail = "\n    ".join(p.stderr.strip().splitlines()[-8:])
            fail(f"learner: volley-learner --check refused the rendered run config:\n    {tail}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--k8s-version", default="1.32.0")
    ap.add_argument("--learner-bin")
    ap.add_argument("--actor-bin")
    ap.add_argument("rendered", type=Path)
    a = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(a.rendered.read_text()) if d]
    if not docs:
        fail(f"{a.rendered}: no objects")
        return 1
    schema_checks(docs, a.k8s_version)
    cfg_text, overrides = semantic_checks(docs, a.repo, a.learner_bin, a.actor_bin)
    if a.learner_bin and cfg_text is not None and not FAILURES:
        start_learner(a.learner_bin, cfg_text, overrides)
    print(f"check_manifests: {len(FAILURES)} failed, {len(WARNINGS)} warnings")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
