"""Reads a volley run back from an MLflow tracking server with MLflow's own client and
compares it with the run directory.

    python check.py URI RUN_DIR [--killed] [--exported MLFLOW_RUN_ID]

Checks, for the live run (its MLflow run id is run.json's `mlflow_run_id`):
- the run exists, with volley's tags (run id, name, algorithm, env, seed) and the
  flattened config as params (`algorithm`, `run.seed`, `env.id`, `ppo.*` ...);
- every metric key of metrics.jsonl is there with its full history: the same
  (step, value) pairs as metrics.jsonl's lines, to float precision;
- its status is FINISHED and the artifacts (config.toml, run.json, metrics.jsonl, the
  best checkpoint, the learning curve) are listed.
With --killed (the server was stopped while the run trained): the run exists and what
reached MLflow is a prefix of metrics.jsonl, never a value metrics.jsonl lacks; the
learner's log says what it could not send.
With --exported ID: that run (sent after the fact by `volley-runs mlflow-export`: a new
run, or the live run completed) holds exactly metrics.jsonl (every value once), the
params, the tags, the artifacts and the record's status, and run.json names it.

Prints one line per check and "N passed, N failed"; exits 1 if any failed.
"""

import json
import math
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS  {name}")
    else:
        failed += 1
        print(f"FAIL  {name}" + (f": {detail}" if detail else ""))


def history_of_jsonl(path):
    """{key: [(step, value), ...]} of every finite number but `steps`."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        step = row["steps"]
        for k, v in row.items():
            if k == "steps" or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                continue
            out.setdefault(k, []).append((step, float(v)))
    return {k: sorted(v) for k, v in out.items()}


def history_of_mlflow(client, run_id, keys):
    out = {}
    for k in keys:
        hist = client.get_metric_history(run_id, k)
        out[k] = sorted((m.step, m.value) for m in hist)
    return out


def same(a, b):
    return len(a) == len(b) and all(
        sa == sb and math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-12)
        for (sa, va), (sb, vb) in zip(a, b)
    )


def check_identity(client, run_id, run_dir, record, label):
    run = client.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    for key, want in [
        ("volley.run_id", record["id"]),
        ("volley.run_name", record["name"]),
        ("volley.algorithm", record["algorithm"]),
        ("volley.env", record["env"]),
        ("volley.seed", str(record["seed"])),
    ]:
        check(f"{label}: tag {key} = {want}", tags.get(key) == want, tags.get(key))
    commit = tags.get("mlflow.source.git.commit", "")
    check(
        f"{label}: tag mlflow.source.git.commit is a commit",
        len(commit) == 40 and all(c in "0123456789abcdef" for c in commit),
        commit,
    )
    check(f"{label}: the MLflow run is named {record['name']}", run.info.run_name == record["name"], run.info.run_name)
    for key, want in [
        ("algorithm", record["algorithm"]),
        ("env.id", record["env"]),
        ("run.seed", str(record["seed"])),
    ]:
        check(f"{label}: param {key} = {want}", params.get(key) == want, params.get(key))
    algo = record["algorithm"]
    check(
        f"{label}: the {algo} section is in the params",
        any(k.startswith(f"{algo}.") for k in params),
        sorted(params)[:20],
    )
    check(f"{label}: no auth token among the params", "learner.auth_token" not in params)
    return run


def check_artifacts(client, run_id, label):
    names = {a.path for a in client.list_artifacts(run_id)}
    best = {a.path for a in client.list_artifacts(run_id, "best")} if "best" in names else set()
    for want in ["config.toml", "run.json", "metrics.jsonl"]:
        check(f"{label}: artifact {want}", want in names, sorted(names))
    check(f"{label}: the best checkpoint's files are artifacts", len(best) >= 2, sorted(best))
    plots = {a.path for a in client.list_artifacts(run_id, "plots")} if "plots" in names else set()
    check(f"{label}: the learning curve is an artifact", "plots/learning_curve.png" in plots, sorted(plots))


def main():
    args = sys.argv[1:]
    killed = "--killed" in args
    exported = None
    if "--exported" in args:
        i = args.index("--exported")
        exported = args[i + 1]
        del args[i : i + 2]
    args = [a for a in args if a != "--killed"]
    uri, run_dir = args[0], Path(args[1])
    client = MlflowClient(tracking_uri=uri)
    record = json.loads((run_dir / "run.json").read_text())
    disk = history_of_jsonl(run_dir / "metrics.jsonl")
    check("metrics.jsonl has the losses and returns", {"policy_loss", "value_loss", "episode_return_mean"} <= set(disk), sorted(disk))

    live = None if exported else record.get("mlflow_run_id")
    if not exported:
        check("run.json names the live MLflow run", bool(live), record)
    if live:
        run = check_identity(client, live, run_dir, record, "live")
        got = history_of_mlflow(client, live, list(disk))
        if killed:
            # What was sent before the server went away is a prefix of each history;
            # MLflow never holds a value metrics.jsonl lacks.
            prefix = all(got[k] == disk[k][: len(got[k])] or same(got[k], disk[k][: len(got[k])]) for k in disk)
            check("live: what reached MLflow before the kill is a prefix of metrics.jsonl", prefix)
            sent = sum(len(v) for v in got.values())
            total = sum(len(v) for v in disk.values())
            check("live: some values reached MLflow before the kill", sent > 0, f"{sent} of {total}")
            check("live: metrics.jsonl holds more than MLflow got (the kill cost MLflow, not the run)", sent < total, f"{sent} of {total}")
            print(f"      live run: {sent} of {total} values reached MLflow before the kill")
        else:
            bad = [k for k in disk if not same(got[k], disk[k])]
            check(
                f"live: every metric's full history equals metrics.jsonl ({len(disk)} keys, {sum(len(v) for v in disk.values())} values)",
                not bad,
                ", ".join(f"{k}: mlflow {len(got[k])} vs jsonl {len(disk[k])}" for k in bad[:5]),
            )
            check("live: status FINISHED", run.info.status == "FINISHED", run.info.status)
            check("live: end time set", bool(run.info.end_time))
            check_artifacts(client, live, "live")

    if exported:
        check("run.json names the exported MLflow run", record.get("mlflow_run_id") == exported, record.get("mlflow_run_id"))
        run = check_identity(client, exported, run_dir, record, "export")
        got = history_of_mlflow(client, exported, list(disk))
        bad = [k for k in disk if not same(got[k], disk[k])]
        check(
            f"export: every metric's full history equals metrics.jsonl, each value once ({len(disk)} keys, {sum(len(v) for v in disk.values())} values)",
            not bad,
            ", ".join(f"{k}: mlflow {len(got[k])} vs jsonl {len(disk[k])}" for k in bad[:5]),
        )
        want = {"finished": "FINISHED", "failed": "FAILED"}.get(record["status"], "KILLED")
        check(f"export: status {want} (run.json says {record['status']})", run.info.status == want, run.info.status)
        check_artifacts(client, exported, "export")

    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
