#!/usr/bin/env bash
# Tests the learner's MLflow mirror against a real MLflow tracking server:
#
#   bash tests/mlflow.sh
#
# 1. Installs PyPI's mlflow (tests/mlflow/requirements.txt) into .deps/mlflow-venv if
#    missing, and starts `mlflow server` with a sqlite backend store and its artifact
#    proxy on a free loopback port.
# 2. Live: a short PPO CartPole run with tracking.mlflow_uri set. tests/mlflow/check.py
#    reads it back with MLflow's own client: tags, the config as params, every metric's
#    full history equal to metrics.jsonl, status FINISHED, the artifacts.
#    `volley-runs explain` on that run sends its explanation (explain/best/) to the same
#    MLflow run as artifacts.
# 3. A server that dies: a longer run; once MLflow has some of its metrics
#    (volley_mlflow_sent_total > 0) the server is killed (SIGKILL). The learner must
#    keep training to run.total_steps, exit 0, and say what it could not send;
#    metrics.jsonl must be whole (a line per update). The server is started again on
#    the same store: what it got is a prefix of metrics.jsonl. `volley-runs
#    mlflow-export` completes that MLflow run after the fact; check.py finds every
#    value exactly once, and a second export sends nothing.
# 4. A run trained without MLflow, exported after the fact: a new MLflow run that
#    check.py finds whole; run.json names it.
#
# Builds the binaries if they are missing. Every process it starts is stopped on
# exit. About 60 s on two cores after the install (which takes a few minutes).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t_start=$(date +%s)
say() { echo "mlflow: $*"; }
die() {
  echo "mlflow: FAIL: $*" >&2
  echo "mlflow: 0 passed, 1 failed"
  exit 1
}
elapsed() { echo "$(($(date +%s) - t_start))s"; }
# shellcheck source=tests/lib/common.sh
. tests/lib/common.sh

test_venv mlflow-venv tests/mlflow/requirements.txt
mlflow_bin="$(dirname "$py")/mlflow"
if [ ! -x target/release/volley-learner ] || [ ! -x target/release/volley-actor ] \
  || [ ! -x target/release/volley-runs ]; then
  say "building the binaries (release)"
  deploy/setup.sh
  cargo build --release -q -p volley-learner -p volley-actor
fi
say "mlflow $("$py" -c 'import mlflow; print(mlflow.__version__)') ready ($(elapsed))"
t_start=$(date +%s)

work="$(mktemp -d "${TMPDIR:-/tmp}/volley-mlflow.XXXXXX")"
pids=()
server_pid=""
ok=0
stop_all() {
  local p _
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
}
cleanup() {
  stop_all "${pids[@]+"${pids[@]}"}" ${server_pid:+"$server_pid"}
  wait 2>/dev/null || true
  if [ "$ok" = 1 ]; then
    rm -rf "$work"
  else
    echo "mlflow: logs and runs kept in $work" >&2
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "---- tail of $f" >&2
      tail -8 "$f" >&2
    done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

read -r mlflow_port grpc_a metrics_a grpc_b metrics_b grpc_c metrics_c < <(free_ports 7)
uri="http://127.0.0.1:$mlflow_port"
start_server() {
  # mlflow server runs its workers as children: it gets a process group of its own,
  # so the kill below takes them all.
  setsid "$mlflow_bin" server --backend-store-uri "sqlite:///$work/mlflow.db" \
    --artifacts-destination "$work/artifacts" --host 127.0.0.1 --port "$mlflow_port" \
    --workers 1 >>"$work/server.log" 2>&1 &
  server_pid=$!
  local _
  for _ in $(seq 1 600); do
    kill -0 "$server_pid" 2>/dev/null || die "mlflow server exited; see $work/server.log"
    "$py" -c "import urllib.request, sys; urllib.request.urlopen('$uri/health', timeout=1)" 2>/dev/null && return 0
    sleep 0.2
  done
  die "mlflow server did not answer on $uri/health in 120 s"
}
kill_server() {
  kill -KILL -- "-$server_pid" 2>/dev/null || kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
start_server
say "mlflow server on $uri ($(elapsed))"

# learner NAME GRPC METRICS [overrides...]: starts a learner (mirrored to the server
# unless an override says otherwise) and one actor; sets $learner_pid.
learner() {
  local name="$1" grpc="$2" metrics="$3"
  shift 3
  target/release/volley-learner --config configs/ppo_cartpole.toml \
    "learner.listen=127.0.0.1:$grpc" "learner.metrics_listen=127.0.0.1:$metrics" \
    "run.dir=$work/runs" "run.name=$name" learner.torch_threads=1 \
    eval.every_updates=4 eval.episodes=2 "tracking.mlflow_uri=$uri" "$@" \
    >"$work/$name.learner.log" 2>&1 &
  learner_pid=$!
  pids+=("$learner_pid")
  wait_port "$learner_pid" "$grpc" || die "the $name learner does not listen; see $work/$name.learner.log"
  target/release/volley-actor run --learner "127.0.0.1:$grpc" --actor-id "$name-actor" \
    >"$work/$name.actor.log" 2>&1 &
  pids+=("$!")
}
# wait_exit PID SECONDS WHAT
wait_exit() {
  local _
  for _ in $(seq 1 $(($2 * 10))); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$1" 2>/dev/null && die "$3 did not finish in $2 s"
  wait "$1" || die "$3 exited with an error"
}
lines() { [ -f "$1/metrics.jsonl" ] && wc -l <"$1/metrics.jsonl" || echo 0; }

# ------------------------------------------------------------------ live run
learner offline "$grpc_c" "$metrics_c" run.total_steps=10000 tracking.mlflow_uri=
offline_pid=$learner_pid
learner live "$grpc_a" "$metrics_a" run.total_steps=20000
wait_exit "$learner_pid" 90 "the live run (run.total_steps=20000)"
wait_exit "$offline_pid" 90 "the offline run (run.total_steps=10000)"
say "live run done ($(elapsed)): $(grep 'mlflow: run' "$work/live.learner.log" | sed 's/.*mlflow: //')"
"$py" tests/mlflow/check.py "$uri" "$work/runs/live" || die "the live run read back from MLflow differs from its run directory"
# Explaining a tracked run sends the explanation to its MLflow run.
target/release/volley-runs --dir "$work/runs" explain live --episodes 2 --video gif --figures 3 \
  >"$work/explain.log" 2>&1 || { cat "$work/explain.log" >&2; die "volley-runs explain live failed"; }
grep -q "^mlflow: .* files sent to run" "$work/explain.log" || { cat "$work/explain.log" >&2; die "explain did not send the explanation to MLflow"; }
"$py" - "$uri" "$work/runs/live" <<'PY' || die "the explanation is not among the MLflow run's artifacts"
import json, os, sys
from mlflow.tracking import MlflowClient
uri, run = sys.argv[1], sys.argv[2]
run_id = json.load(open(os.path.join(run, "run.json")))["mlflow_run_id"]
c = MlflowClient(tracking_uri=uri)
names = {os.path.basename(a.path) for a in c.list_artifacts(run_id, "explain/best")}
want = {"episode.gif", "steps.jsonl", "summary.json", "importance.png", "steps"}
missing = want - names
print(f"mlflow: explain/best of run {run_id} holds {sorted(names)}")
sys.exit(1 if missing else 0)
PY

# ------------------------------------------------------------------ a server that dies
total=100000
learner cut "$grpc_b" "$metrics_b" "run.total_steps=$total"
run="$work/runs/cut"
# Kill the server once MLflow holds some of the run: the learner's own counter says
# so (volley_mlflow_sent_total).
sent_total() {
  "$py" - "$metrics_b" <<'PY' 2>/dev/null || echo 0
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=2).read().decode()
print(next((int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("volley_mlflow_sent_total")), 0))
PY
}
for _ in $(seq 1 300); do
  [ "$(sent_total)" -gt 0 ] && break
  kill -0 "$learner_pid" 2>/dev/null || die "the cut run ended before MLflow had any of it"
  sleep 0.1
done
[ "$(sent_total)" -gt 0 ] || die "the learner sent nothing to MLflow in 30 s (volley_mlflow_sent_total)"
grep -q '"mlflow_run_id": "' "$run/run.json" || die "the cut run's record does not name its MLflow run"
before=$(lines "$run")
kill_server
t_kill=$(date +%s.%N)
say "killed the server at $before metrics lines"
wait_exit "$learner_pid" 120 "the cut run after the server was killed"
t_end=$(date +%s.%N)
after=$(lines "$run")
say "the learner trained on to $total env steps: $before -> $after lines in $(awk "BEGIN { printf \"%.1f\", $t_end - $t_kill }") s after the kill"
[ "$after" -gt "$before" ] || die "no metrics line was written after the kill"
steps=$("$py" -c "import json; print(json.load(open('$run/run.json'))['steps'])")
[ "$steps" -ge "$total" ] || die "the cut run stopped at $steps env steps, short of $total"
updates=$("$py" -c "import json; print(json.loads(open('$run/metrics.jsonl').read().splitlines()[-1])['update'])")
[ "$updates" = "$after" ] || die "metrics.jsonl has $after lines for $updates updates: lines were lost"
say "$("$py" - "$run/metrics.jsonl" "$before" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
k = int(sys.argv[2])
fps = lambda rs: statistics.median(r["fps"] for r in rs)
print(f"median fps {fps(rows[1:k]):.0f} with the server up, {fps(rows[k:]):.0f} after the kill")
PY
)"
grep -q 'not sent' "$work/cut.learner.log" || die "the learner did not say what it could not send"
say "$(grep 'mlflow: run' "$work/cut.learner.log" | sed 's/.*mlflow: //')"

start_server
"$py" tests/mlflow/check.py "$uri" "$run" --killed || die "what reached MLflow before the kill is not a prefix of metrics.jsonl"
# export RUN: sets $exported (the MLflow run id) and $export_said (what it said).
export_run() {
  exported=$(target/release/volley-runs --dir "$work/runs" mlflow-export "$1" --uri "$uri" 2>"$work/export.log") \
    || { cat "$work/export.log" >&2; die "volley-runs mlflow-export $1 failed"; }
  export_said="$(sed 's/^volley-runs: //' "$work/export.log")"
  say "$export_said"
}
live_id=$("$py" -c "import json; print(json.load(open('$run/run.json'))['mlflow_run_id'])")
export_run cut
[ "$exported" = "$live_id" ] || die "the export made MLflow run $exported instead of completing $live_id"
"$py" tests/mlflow/check.py "$uri" "$run" --exported "$exported" || die "the completed run differs from its run directory"
export_run cut
case "$export_said" in *"completed; 0 metric values sent"*) ;; *) die "a second export sent values again: $export_said" ;; esac
"$py" tests/mlflow/check.py "$uri" "$run" --exported "$exported" >/dev/null || die "a second export changed the MLflow run"

# ------------------------------------------------------------------ after the fact
grep -q '"mlflow_run_id": null' "$work/runs/offline/run.json" || die "the offline run names an MLflow run"
export_run offline
"$py" tests/mlflow/check.py "$uri" "$work/runs/offline" --exported "$exported" || die "the exported run differs from its run directory"
ok=1
say "all passed ($(elapsed) after the install)"
