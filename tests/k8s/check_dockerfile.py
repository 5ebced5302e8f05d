#!/usr/bin/env python3
"""Light checks of deploy/docker/Dockerfile, for machines without a Docker engine.

    check_dockerfile.py REPO [DOCKERFILE]

Every COPY/ADD source from the build context exists and is not excluded by the
Dockerfile's ignore file; every --from names an earlier stage; the stages the docs
name (learner, actor) exist; every ARG used in a FROM is declared before the first
FROM; the runtime's VOLLEY_DEPS_DIR is the build's WORKDIR/.deps (the binaries'
RUNPATH points there); the ENTRYPOINT is a file some COPY put in place. Exits 1 on a
finding.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shlex
import sys
from pathlib import Path


def instructions(text: str) -> list[tuple[int, str, str]]:
    out, buf, start = [], "", 0
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    result = False
    for p in patterns:
        neg = p.startswith("!")
        p = p.lstrip("!").strip("/")
        parts = path.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[: i + 1]), p) for i in range(len(parts)))
        if p.startswith("**/"):
            hit = hit or any(fnmatch.fnmatch(x, p[3:]) for x in parts)
        if hit:
            result = not neg
    return result


def main() -> int:
    repo = Path(sys.argv[1])
    dockerfile = Path(sys.argv[2]) if len(sys.argv) > 2 else repo / "deploy/docker/Dockerfile"
    ignore_file = Path(str(dockerfile) + ".dockerignore")
    if not ignore_file.exists():
        ignore_file = repo / ".dockerignore"
    patterns = []
    if ignore_file.exists():
        patterns = [l.strip() for l in ignore_file.read_text().splitlines() if l.strip() and not l.startswith("#")]
    failures = []
    stages: list[str] = []
    args_before_from: set[str] = set()
    copied: list[str] = []
    workdirs: dict[str, str] = {}
    envs: dict[str, dict[str, str]] = {}
    stage = None
    entrypoint = None
    for n, word, rest in instructions(dockerfile.read_text()):
        where = f"{dockerfile.name}:{n}"
        if word == "ARG" and not stages:
            args_before_from.add(rest.split("=")[0].strip())
        elif word == "FROM":
            toks = rest.split()
            for var in re.findall(r"\$\{?(\w+)\}?", toks[0]):
                if var not in args_before_from:
                    failures.append(f"{where}: FROM uses ${var}, not declared by an ARG before the first FROM")
            base = toks[0]
            stage = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else f"#{len(stages)}"
            if stage in stages:
                failures.append(f"{where}: stage {stage} defined twice")
            if base in stages:  # inherits from an earlier stage
                workdirs[stage] = workdirs.get(base, "/")
                envs[stage] = dict(envs.get(base, {}))
            stages.append(stage)
        elif word == "WORKDIR":
            workdirs[stage] = rest
        elif word == "ENV":
            for tok in shlex.split(rest):
                k, eq, v = tok.partition("=")
                if eq:
                    envs.setdefault(stage, {})[k] = v
        elif word in ("COPY", "ADD"):
            toks = shlex.split(rest)
            flags = [t for t in toks if t.startswith("--")]
            paths = [t for t in toks if not t.startswith("--")]
            src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if len(paths) < 2:
                failures.append(f"{where}: {word} needs a source and a destination")
                continue
            *srcs, dest = paths
            if src_stage is not None:
                if src_stage not in stages[:-1]:
                    failures.append(f"{where}: --from={src_stage} is not an earlier stage ({', '.join(stages[:-1])})")
                continue
            for s in srcs:
                rel = os.path.normpath(s).lstrip("/")
                if rel == ".":
                    continue
                hits = glob.glob(str(repo / rel))
                if not hits:
                    failures.append(f"{where}: {word} source {s} does not exist in the repository")
                elif ignored(rel, patterns):
                    failures.append(f"{where}: {word} source {s} is excluded by {ignore_file.name}")
                copied.append(dest.rstrip("/") + "/" + os.path.basename(rel) if dest.endswith("/") else dest)
        elif word == "ENTRYPOINT":
            toks = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            entrypoint = toks[0]
    for needed in ("build", "learner", "actor"):
        if needed not in stages:
            failures.append(f"no stage named {needed} (docs: --target learner / actor)")
    build_deps = workdirs.get("build", "/").rstrip("/") + "/.deps"
    for s in ("learner", "actor"):
        got = envs.get(s, {}).get("VOLLEY_DEPS_DIR")
        if got != build_deps:
            failures.append(f"stage {s}: VOLLEY_DEPS_DIR={got!r}, expected {build_deps} (the build's WORKDIR/.deps)")
    if entrypoint is None or entrypoint not in copied:
        failures.append(f"ENTRYPOINT {entrypoint!r} is not a file that a COPY from the context puts in place")
    for p in ("target", ".deps", ".cargo/config.toml"):
        if not ignored(p, patterns):
            failures.append(f"{ignore_file.name} does not exclude {p} (machine-specific build state)")
    for f in failures:
        print(f"FAIL: {f}")
    if not failures:
        print(f"ok: {dockerfile.name}: stages {', '.join(stages)}; every COPY source exists and is in the context")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
