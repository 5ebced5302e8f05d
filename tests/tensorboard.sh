#!/usr/bin/env bash
# Tests the learner's TensorBoard event files with TensorBoard itself:
#
#   bash tests/tensorboard.sh
#
# 1. Installs PyPI's tensorboard (tests/tensorboard/requirements.txt) into
#    .deps/tb-venv if it is missing.
# 2. A short PPO run on loopback: volley-learner with configs/ppo_cartpole.toml and
#    run.total_steps=20000 (an evaluation every 4 versions), one volley-actor.
# 3. tests/tensorboard/check.py reads the run's event files with TensorBoard's
#    EventAccumulator: the scalar tags must be those the mapping of
#    learner/src/tensorboard.rs gives metrics.jsonl's keys, and every tag
#    (charts/episodic_return, charts/SPS, losses/value_loss, losses/policy_loss and
#    eval/episodic_return among them) must have metrics.jsonl's steps and values, to
#    float32 precision.
#
# Builds the binaries if they are missing. Every process it starts is stopped on
# exit. Takes about 20 s on two cores after the install.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t_start=$(date +%s)
say() { echo "tensorboard: $*"; }
die() {
  echo "tensorboard: FAIL: $*" >&2
  echo "tensorboard: 0 passed, 1 failed"
  exit 1
}
elapsed() { echo "$(( $(date +%s) - t_start ))s"; }

# ------------------------------------------------------------------ prerequisites
# shellcheck source=tests/lib/common.sh
. tests/lib/common.sh
test_venv tb-venv tests/tensorboard/requirements.txt
tb_version="$("$py" -c 'import tensorboard; print(tensorboard.__version__)')"
if [ ! -x target/release/volley-learner ] || [ ! -x target/release/volley-actor ]; then
  say "building volley-learner and volley-actor (release)"
  deploy/setup.sh
  cargo build --release -q -p volley-learner -p volley-actor
fi
say "tensorboard $tb_version ready ($(elapsed))"
t_start=$(date +%s)

# ------------------------------------------------------------------ processes
work="$(mktemp -d "${TMPDIR:-/tmp}/volley-tb.XXXXXX")"
pids=()
ok=0
cleanup() {
  local p
  for p in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]+"${pids[@]}"}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]+"${pids[@]}"}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$ok" = 1 ]; then
    rm -rf "$work"
  else
    echo "tensorboard: logs and the run kept in $work" >&2
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

read -r grpc_port metrics_port < <(free_ports 2)

target/release/volley-learner --config configs/ppo_cartpole.toml \
  "learner.listen=127.0.0.1:$grpc_port" "learner.metrics_listen=127.0.0.1:$metrics_port" \
  "run.dir=$work/runs" run.name=ppo run.total_steps=20000 learner.torch_threads=1 \
  eval.every_updates=4 eval.episodes=2 >"$work/learner.log" 2>&1 &
learner_pid=$!
pids+=("$learner_pid")
wait_port "$learner_pid" "$grpc_port" || die "the learner does not listen on port $grpc_port; see $work/learner.log"
target/release/volley-actor run --learner "127.0.0.1:$grpc_port" --actor-id actor-0 \
  >"$work/actor.log" 2>&1 &
pids+=("$!")
say "learner and actor started ($(elapsed))"

# The learner stops by itself at run.total_steps.
for _ in $(seq 1 600); do
  kill -0 "$learner_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$learner_pid" 2>/dev/null && die "the learner did not reach run.total_steps=20000 in 60 s"
wait "$learner_pid" || die "the learner exited with an error; see $work/learner.log"
say "the run reached 20000 env steps ($(elapsed))"

# ------------------------------------------------------------------ checks
# check.py prints each check and the closing "N passed, N failed" line.
if ! "$py" tests/tensorboard/check.py "$work/runs/ppo"; then
  echo "tensorboard: FAIL: the event files do not match metrics.jsonl (see above)" >&2
  exit 1
fi
ok=1
say "took $(elapsed) after the install"
