#!/usr/bin/env python3
"""End-to-end throughput of a volley run on this machine, as ratios from one run.

For each env (Procgen starpilot easy, Hopper-v5):
  - bare: the vector env alone under random actions (`volley-actor bench`), the ceiling;
  - transport: one actor streaming to a learner that only ingests
    (learner.ingest_only=true), against the same actor with sending switched off
    (`--no-send`): the cost of the transport to an actor;
  - end to end: a training learner and 1, 2 and 4 actors; env steps/s summed over
    the actors (from their volley_env_steps_total) and steps/s the learner trained on.

    python3 benches/e2e.py [--seconds 20] [--warmup 10] [--only Hopper]

Needs a release build (cargo build --release -p volley-learner -p volley-actor).
All processes are on loopback and are stopped at the end of each case.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")

CASES = [
    # (label, env id, config, envs per actor, env threads per actor)
    ("procgen:starpilot easy", "procgen:starpilot?distribution_mode=easy", "configs/ppo_procgen.toml", 32, 1),
    ("Hopper-v5", "Hopper-v5", "configs/ppo_mujoco.toml", 4, 1),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port, name):
    """Sum of an (unlabelled or labelled) metric's samples on a /metrics endpoint."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in body.splitlines():
        if re.match(rf"^{name}(\{{.*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def run_case(env_id, config, envs, threads, actors, seconds, warmup, extra=(), no_send=False):
    """Starts a learner and `actors` actors; returns (actor steps/s, trained steps/s)."""
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="volley-e2e-")
    port, mport = free_port(), free_port()
    try:
        procs.start([os.path.join(BIN, "volley-learner"), "--config", os.path.join(ROOT, config),
                     f"env.id={env_id}", f"env.num_envs={envs}", f"env.threads={threads}",
                     f"learner.listen=127.0.0.1:{port}", f"learner.metrics_listen=127.0.0.1:{mport}",
                     f"run.dir={tmp}", "run.name=bench", "run.total_steps=0", "run.checkpoint_every=0",
                     *extra])
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        aports = [free_port() for _ in range(actors)]
        for i, ap in enumerate(aports):
            args = [os.path.join(BIN, "volley-actor"), "run", "--learner", f"127.0.0.1:{port}",
                    "--actor-id", f"bench-{i}", "--metrics-listen", f"127.0.0.1:{ap}"]
            if no_send:
                args.append("--no-send")
            procs.start(args)
        time.sleep(warmup)
        a0 = sum(scrape(p, "volley_env_steps_total") for p in aports)
        l0 = scrape(mport, "volley_env_steps_total")
        t0 = time.time()
        time.sleep(seconds)
        dt = time.time() - t0
        a1 = sum(scrape(p, "volley_env_steps_total") for p in aports)
        l1 = scrape(mport, "volley_env_steps_total")
        return (a1 - a0) / dt, (l1 - l0) / dt
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def bare(env_id, envs, threads, seconds):
    out = subprocess.run([os.path.join(BIN, "volley-actor"), "bench", "--env", env_id, "--envs", str(envs),
                          "--threads", str(threads), "--seconds", str(seconds), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["steps_per_sec"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--only", default=None)
    a = p.parse_args()
    for b in ("volley-learner", "volley-actor"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            print(f"no {b} in {BIN}: cargo build --release -p volley-learner -p volley-actor", file=sys.stderr)
            return 2
    print(f"{os.cpu_count()} cores; {a.seconds} s measured after {a.warmup} s warm-up per case\n")
    print("| env | case | actors | actor env steps/s | trained steps/s | reference | ratio |")
    print("|---|---|---:|---:|---:|---|---:|")
    for label, env_id, config, envs, threads in CASES:
        if a.only and a.only not in label:
            continue
        b = bare(env_id, envs, threads, a.seconds)
        print(f"| {label} | bare vector env ({envs} envs, random actions) | - | {b:.0f} | - | | |", flush=True)
        off, _ = run_case(env_id, config, envs, threads, 1, a.seconds, a.warmup,
                          extra=["learner.ingest_only=true"], no_send=True)
        on, _ = run_case(env_id, config, envs, threads, 1, a.seconds, a.warmup,
                         extra=["learner.ingest_only=true"])
        print(f"| {label} | actor, sending off | 1 | {off:.0f} | - | bare | {off / b:.2f}x |")
        print(f"| {label} | actor -> ingest-only learner | 1 | {on:.0f} | - | sending off | {on / off:.2f}x |",
              flush=True)
        for n in (1, 2, 4):
            act, trained = run_case(env_id, config, envs, threads, n, a.seconds, a.warmup)
            print(f"| {label} | training | {n} | {act:.0f} | {trained:.0f} | bare | {act / b:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
