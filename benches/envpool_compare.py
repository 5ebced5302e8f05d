#!/usr/bin/env python3
"""volley vs EnvPool 1.2.5: env steps/s on the same tasks, env counts and threads, in one run.

Both sides step with uniform-random actions drawn ahead of time (EnvPool in sync
mode, batch = all envs; volley through `volley-actor bench`). The two alternate
A B A B ... so that drift of a shared, noisy machine hits both; the table gives the
median of each and their ratio.

    python3 benches/envpool_compare.py [--seconds 3] [--rounds 3] [--only Hopper]

Needs EnvPool in the Python that runs it (`pip install envpool==1.2.5`) and a release
build (`cargo build --release -p volley-actor`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# (volley id, EnvPool id, envs, threads)
CASES = [
    ("Hopper-v5", "Hopper-v5", 8, 2),
    ("HalfCheetah-v5", "HalfCheetah-v5", 8, 2),
    ("Ant-v5", "Ant-v5", 8, 2),
    ("procgen:starpilot?distribution_mode=easy", "StarpilotEasy-v0", 64, 2),
    ("procgen:bigfish?distribution_mode=easy", "BigfishEasy-v0", 64, 2),
    ("procgen:coinrun?distribution_mode=easy", "CoinrunEasy-v0", 64, 2),
]


def envpool_steps_per_sec(envpool, np, task, envs, threads, seconds):
    env = envpool.make(task, env_type="gymnasium", num_envs=envs, batch_size=envs,
                       num_threads=threads, seed=0)
    space = env.action_space
    rng = np.random.default_rng(7)
    if hasattr(space, "n"):
        batches = [rng.integers(0, space.n, size=envs).astype(np.int32) for _ in range(64)]
    else:
        batches = [rng.uniform(space.low, space.high, size=(envs,) + space.shape).astype(space.dtype)
                   for _ in range(64)]
    env.reset()
    def run(d):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < d:
            for a in batches:
                env.step(a)
            n += len(batches)
        return n * envs / (time.perf_counter() - start)
    run(min(1.0, seconds * 0.1))
    r = run(seconds)
    env.close()
    return r


def volley_steps_per_sec(binary, env_id, envs, threads, seconds):
    out = subprocess.run([binary, "bench", "--env", env_id, "--envs", str(envs), "--threads",
                          str(threads), "--seconds", str(seconds), "--json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["steps_per_sec"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default=None, help="run only cases whose id contains this")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p.add_argument("--binary", default=os.path.join(root, "target", "release", "volley-actor"))
    a = p.parse_args()
    try:
        import envpool
        import numpy as np
    except ImportError:
        print("envpool is not installed in this Python: pip install envpool==1.2.5", file=sys.stderr)
        return 2
    if not os.access(a.binary, os.X_OK):
        print(f"no volley-actor at {a.binary}: cargo build --release -p volley-actor", file=sys.stderr)
        return 2
    print(f"EnvPool {envpool.__version__}, {a.rounds} alternating rounds of {a.seconds} s each, "
          f"{os.cpu_count()} cores")
    print()
    print("| task | envs | threads | volley steps/s | EnvPool steps/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for vid, eid, envs, threads in CASES:
        if a.only and a.only not in vid and a.only not in eid:
            continue
        v, e, ratios = [], [], []
        for _ in range(a.rounds):
            e.append(envpool_steps_per_sec(envpool, np, eid, envs, threads, a.seconds))
            v.append(volley_steps_per_sec(a.binary, vid, envs, threads, a.seconds))
            ratios.append(v[-1] / e[-1])
        print(f"| {vid} | {envs} | {threads} | {statistics.median(v):.0f} | "
              f"{statistics.median(e):.0f} | {statistics.median(ratios):.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
