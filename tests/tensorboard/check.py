#!/usr/bin/env python3
"""Checks a run directory's TensorBoard event files against its metrics.jsonl.

    .deps/tb-venv/bin/python tests/tensorboard/check.py RUN_DIR

Reads the event files with TensorBoard's own EventAccumulator and checks that
- the directory has one event file, named events.out.tfevents.<unix secs>.<host>,
  whose file version is brain.Event:2;
- the scalar tags are exactly those the mapping below (the table of
  learner/src/tensorboard.rs, written out again here) gives the keys of
  metrics.jsonl that have a number in some line;
- every tag has, point for point, the steps (metrics.jsonl's `steps`) and the
  values (as float32) of metrics.jsonl, in order, and the wall times do not go
  back; charts/episodic_return, charts/SPS, losses/value_loss, losses/policy_loss
  and eval/episodic_return must be among them.

Prints one line per check and "tensorboard: N passed, N failed"; exits 1 on a
failure.
"""

import json
import os
import re
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

# Rule 1: CleanRL's names.
CLEANRL = {
    "episode_return_mean": "charts/episodic_return",
    "episode_length_mean": "charts/episodic_length",
    "fps": "charts/SPS",
    "lr": "charts/learning_rate",
    "value_loss": "losses/value_loss",
    "policy_loss": "losses/policy_loss",
    "entropy": "losses/entropy",
    "approx_kl": "losses/approx_kl",
    "clip_fraction": "losses/clipfrac",
    "explained_variance": "losses/explained_variance",
    "qf1_loss": "losses/qf1_loss",
    "qf2_loss": "losses/qf2_loss",
    "actor_loss": "losses/actor_loss",
    "alpha": "losses/alpha",
    "alpha_loss": "losses/alpha_loss",
    "q_mean": "losses/q_values",
    "loss": "losses/td_loss",
    "eval_return_mean": "eval/episodic_return",
    "eval_length_mean": "eval/episodic_length",
}
# Rule 2: accounting of the work under volley/.
VOLLEY = {
    "updates_per_second",
    "update_seconds",
    "episodes",
    "policy_lag_mean",
    "chunks_dropped",
    "replay_size",
    "replay_ratio",
    "minibatch_steps",
}
# Rule 3: counters of the line, no scalar.
NOT_SCALARS = {"steps", "update", "weights_version", "time", "eval_weights_version"}
# The tags this test must see with data.
REQUIRED = [
    "charts/episodic_return",
    "charts/SPS",
    "losses/value_loss",
    "losses/policy_loss",
    "eval/episodic_return",
]


def tag(key):
    """The tag of a metrics.jsonl key, None for no scalar (rule 4: losses/<key>)."""
    if key in CLEANRL:
        return CLEANRL[key]
    if key in VOLLEY:
        return "volley/" + key
    if key in NOT_SCALARS:
        return None
    return "losses/" + key


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
            print(f"tensorboard: ok: {what}")
        else:
            self.failed += 1
            print(f"tensorboard: FAIL: {what}")
        return ok


def expected_series(run_dir):
    """tag -> [(step, float32 value)] from metrics.jsonl, in line order."""
    series = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for raw in f:
            line = json.loads(raw)
            for key, value in line.items():
                t = tag(key)
                if t is None or not is_number(value):
                    continue
                series.setdefault(t, []).append((line["steps"], np.float32(value)))
    return series


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run_dir = sys.argv[1]
    c = Checks()
    want = expected_series(run_dir)
    lines = sum(1 for _ in open(os.path.join(run_dir, "metrics.jsonl")))

    files = sorted(f for f in os.listdir(run_dir) if "tfevents" in f)
    c.check(
        len(files) == 1 and re.fullmatch(r"events\.out\.tfevents\.\d{10}\.[A-Za-z0-9._-]+", files[0]),
        f"one event file named events.out.tfevents.<secs>.<host>: {files}",
    )

    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    c.check(acc.file_version == 2.0, f"file version brain.Event:2 (read {acc.file_version})")

    got_tags = set(acc.Tags()["scalars"])
    missing = sorted(set(want) - got_tags)
    extra = sorted(got_tags - set(want))
    c.check(
        not missing and not extra,
        f"{len(got_tags)} tags, as the mapping gives metrics.jsonl's keys"
        + (f" (missing {missing})" if missing else "")
        + (f" (not expected {extra})" if extra else ""),
    )
    for t in REQUIRED:
        c.check(len(want.get(t, [])) > 0 and t in got_tags, f"{t} has data ({len(want.get(t, []))} points)")

    for t in sorted(set(want) & got_tags):
        events = acc.Scalars(t)
        got = [(e.step, np.float32(e.value)) for e in events]
        exp = want[t]
        same = len(got) == len(exp) and all(gs == es and gv == ev for (gs, gv), (es, ev) in zip(got, exp))
        walls = [e.wall_time for e in events]
        ordered = all(a <= b for a, b in zip(walls, walls[1:]))
        detail = f"{len(got)} points"
        if exp:
            detail += f", steps {exp[0][0]}..{exp[-1][0]}, last value {float(exp[-1][1]):.6g}"
        if not same:
            bad = next(
                (i for i, (g, e) in enumerate(zip(got, exp)) if g != e),
                min(len(got), len(exp)),
            )
            detail += f"; first difference at point {bad}: event file {got[bad:bad + 1]}, metrics.jsonl {exp[bad:bad + 1]}"
        c.check(same and ordered, f"{t}: steps and values equal metrics.jsonl's ({detail})")

    print(
        f"tensorboard: {lines} metrics.jsonl lines, {len(got_tags)} tags read back with "
        f"EventAccumulator from {files}"
    )
    print(f"tensorboard: {c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
