#!/usr/bin/env python3
"""Breaks a copy of deploy/k8s on purpose, for tests/k8s.sh to prove that
check_manifests.py notices.

    mutate.py --list              names and the message each must produce
    mutate.py NAME K8S_DIR        applies mutation NAME to the copy in K8S_DIR
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml


def edit_yaml(base: Path, file: str, kind: str, fn) -> None:
    p = base / file
    docs = [d for d in yaml.safe_load_all(p.read_text()) if d]
    hits = [d for d in docs if d.get("kind") == kind]
    if not hits:
        raise SystemExit(f"mutate.py: no {kind} in {p}")
    fn(hits[0])
    p.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def container(d: dict) -> dict:
    return d["spec"]["template"]["spec"]["containers"][0]


def edit_text(base: Path, file: str, old: str, new: str) -> None:
    p = base / file
    text = p.read_text()
    if not re.search(old, text, re.M):
        raise SystemExit(f"mutate.py: {old!r} not found in {p}")
    p.write_text(re.sub(old, new, text, count=1, flags=re.M))


def set_env(c: dict, name: str, value: str) -> None:
    for e in c["env"]:
        if e["name"] == name:
            e.clear()
            e.update({"name": name, "value": value})
            return
    raise SystemExit(f"mutate.py: no env {name}")


def replace_arg(c: dict, old: str, new: str) -> None:
    i = c["args"].index(old)
    c["args"][i] = new


MUTATIONS = {
    # name: (what it does, the message check_manifests.py must print)
    "replicas-type": (
        lambda b: edit_yaml(b, "base/actor.yaml", "Deployment", lambda d: d["spec"].update(replicas="two")),
        "is not of type 'integer'",
    ),
    "unknown-field": (
        lambda b: edit_yaml(b, "base/learner.yaml", "Deployment", lambda d: container(d).update(imagePullPolice="Always")),
        "Additional properties are not allowed",
    ),
    "service-selector": (
        lambda b: edit_yaml(b, "base/learner.yaml", "Service",
                            lambda d: d["spec"]["selector"].update({"app.kubernetes.io/component": "actor"})),
        "selects no learner pod",
    ),
    "annotation-port": (
        lambda b: edit_yaml(b, "base/learner.yaml", "Deployment",
                            lambda d: d["spec"]["template"]["metadata"]["annotations"].update({"prometheus.io/port": "9200"})),
        "pod annotation prometheus.io/port='9200'",
    ),
    "probe-port": (
        lambda b: edit_yaml(b, "base/actor.yaml", "Deployment",
                            lambda d: container(d)["livenessProbe"]["httpGet"].update(port=9102)),
        "livenessProbe port 9102 is not the metrics port",
    ),
    "learner-address": (
        lambda b: edit_yaml(b, "base/actor.yaml", "Deployment",
                            lambda d: replace_arg(container(d), "volley-learner:50051", "volley-learner:50052")),
        "port 50052 is not Service/volley-learner's grpc port",
    ),
    "undefined-var": (
        lambda b: edit_yaml(b, "base/actor.yaml", "Deployment",
                            lambda d: replace_arg(container(d), "$(POD_NAME)", "$(POD_NAM)")),
        "uses $(POD_NAM), which the container does not define",
    ),
    "unknown-flag": (
        lambda b: edit_yaml(b, "base/actor.yaml", "Deployment",
                            lambda d: container(d)["args"].extend(["--metrics-port", "9101"])),
        "unknown flag --metrics-port",
    ),
    "metrics-listen": (
        lambda b: edit_yaml(b, "base/actor.yaml", "Deployment",
                            lambda d: replace_arg(container(d), "0.0.0.0:9101", "0.0.0.0:9111")),
        "--metrics-listen 0.0.0.0:9111 is not the 'metrics' port",
    ),
    "config-key": (
        lambda b: edit_text(b, "base/run.toml", r"^\[ppo\]$", "[ppo]\nlearning_rate = 1e-4"),
        "unknown config key 'ppo.learning_rate'",
    ),
    "config-type": (
        lambda b: edit_text(b, "base/run.toml", r"^num_envs = \d+$", 'num_envs = "32"'),
        "'env.num_envs' = '32' must be a non-negative integer",
    ),
    "override-key": (
        lambda b: edit_yaml(b, "base/learner.yaml", "Deployment",
                            lambda d: replace_arg(container(d), "learner.metrics_listen=0.0.0.0:9100",
                                                  "learner.metric_listen=0.0.0.0:9100")),
        "override 'learner.metric_listen' is not a config key",
    ),
    "run-dir": (
        lambda b: edit_yaml(b, "base/learner.yaml", "Deployment", lambda d: set_env(container(d), "VOLLEY_RUN_DIR", "/data")),
        "VOLLEY_RUN_DIR='/data' is not the mount path of a PersistentVolumeClaim",
    ),
    "no-gpu": (
        lambda b: edit_yaml(b, "base/learner.yaml", "Deployment",
                            lambda d: container(d)["resources"]["limits"].pop("nvidia.com/gpu")),
        "limits nvidia.com/gpu is None, expected 1",
    ),
    "monitor-job": (
        lambda b: edit_yaml(b, "components/prometheus-operator/monitors.yaml", "PodMonitor",
                            lambda d: d["spec"].update(jobLabel="app.kubernetes.io/component")),
        "scrapes under job 'actor'; the dashboards and alerts expect 'volley-actor'",
    ),
    "monitor-port": (
        lambda b: edit_yaml(b, "components/prometheus-operator/monitors.yaml", "ServiceMonitor",
                            lambda d: d["spec"]["endpoints"][0].update(port="http-metrics")),
        "port 'http-metrics' is not among",
    ),
    "rolling-learner": (
        lambda b: edit_yaml(b, "base/learner.yaml", "Deployment", lambda d: d["spec"].update(strategy={"type": "RollingUpdate"})),
        "strategy must be Recreate",
    ),
}


def main() -> int:
    if sys.argv[1:] == ["--list"]:
        for name, (_, msg) in MUTATIONS.items():
            print(f"{name}\t{msg}")
        return 0
    if len(sys.argv) != 3 or sys.argv[1] not in MUTATIONS:
        print(__doc__, file=sys.stderr)
        return 2
    MUTATIONS[sys.argv[1]][0](Path(sys.argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
