#!/usr/bin/env python3
"""volley vs EnvPool 1.2.5: env steps/s on the same tasks, env counts and threads, in one run.

Both sides step with uniform-random actions drawn ahead of time (EnvPool in sync
mode, batch = all envs; volley through `volley-actor bench`). The two alternate
A B A B ... so that drift of a shared, noisy machine hits both; the table gives the
median of each, and the median of the per-round ratios with their range (min-max)
in brackets, which shows how far the machine's noise moves them.

Atari rows compare the same preprocessing on both sides: ALE v5 with sticky actions
0.25, frame skip 4 with max-pooling, 84x84 grayscale (area resize), 4 frames
stacked, up to 30 no-ops, no fire reset, no episodic life or reward clipping. They
also measure the bare emulator in the same rounds (`volley-actor bench --emulator`:
ALE `act` calls on the same number of consoles and threads, nothing copied or
preprocessed), the ceiling any Atari vector env has here, and give volley's rate as
a fraction of it.

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

# EnvPool's Atari options that make its env volley's `preprocess=dqn` one (its
# defaults already give 84x84 grayscale, 4 frames, frame skip 4, 30 no-ops).
ATARI = dict(repeat_action_probability=0.25, use_fire_reset=False, episodic_life=False,
             reward_clip=False)

# (volley id, EnvPool id, envs, threads, EnvPool options)
CASES = [
    ("Hopper-v5", "Hopper-v5", 8, 2, {}),
    ("HalfCheetah-v5", "HalfCheetah-v5", 8, 2, {}),
    ("Ant-v5", "Ant-v5", 8, 2, {}),
    ("procgen:starpilot?distribution_mode=easy", "StarpilotEasy-v0", 64, 2, {}),
    ("procgen:bigfish?distribution_mode=easy", "BigfishEasy-v0", 64, 2, {}),
    ("procgen:coinrun?distribution_mode=easy", "CoinrunEasy-v0", 64, 2, {}),
] + [
    (f"ALE/{game}-v5?preprocess=dqn&episodic_life=false&reward_clip=false", f"{game}-v5",
     8, threads, ATARI)
    for game in ("MsPacman", "Pong", "Breakout") for threads in (1, 2)
]


def envpool_steps_per_sec(envpool, np, task, envs, threads, seconds, options):
    env = envpool.make(task, env_type="gymnasium", num_envs=envs, batch_size=envs,
                       num_threads=threads, seed=0, **options)
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


def volley_steps_per_sec(binary, env_id, envs, threads, seconds, emulator=False):
    extra = ["--emulator"] if emulator else []
    out = subprocess.run([binary, "bench", "--env", env_id, "--envs", str(envs), "--threads",
                          str(threads), "--seconds", str(seconds), "--json"] + extra,
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["steps_per_sec"]


def spread(xs, unit=""):
    """The median of the per-round ratios, and their range when there are several."""
    m = f"{statistics.median(xs):.2f}{unit}"
    return m if len(xs) < 2 else f"{m} ({min(xs):.2f}-{max(xs):.2f})"


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
    print("| task | envs | threads | volley steps/s | EnvPool steps/s | volley / EnvPool "
          "| bare ALE steps/s | volley / bare ALE |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for vid, eid, envs, threads, options in CASES:
        if a.only and a.only not in vid and a.only not in eid:
            continue
        atari = vid.startswith("ALE/")
        v, e, b, ratios, ceil = [], [], [], [], []
        for _ in range(a.rounds):
            e.append(envpool_steps_per_sec(envpool, np, eid, envs, threads, a.seconds, options))
            v.append(volley_steps_per_sec(a.binary, vid, envs, threads, a.seconds))
            ratios.append(v[-1] / e[-1])
            if atari:
                b.append(volley_steps_per_sec(a.binary, vid, envs, threads, a.seconds, True))
                ceil.append(v[-1] / b[-1])
        bare = (f"{statistics.median(b):.0f} | {spread(ceil)}" if atari else "| ")
        print(f"| {vid} | {envs} | {threads} | {statistics.median(v):.0f} | "
              f"{statistics.median(e):.0f} | {spread(ratios, 'x')} | {bare} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
