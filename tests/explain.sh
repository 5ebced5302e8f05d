#!/usr/bin/env bash
# Tests the play-and-explain path end to end with the real programs:
#
#   bash tests/explain.sh
#
# 1. deploy/pipeline.sh trains configs/ppo_cartpole.toml (30k steps) and
#    configs/mpdqn_platform.toml (8k steps) and explains each run's best checkpoint
#    into its run directory; --record keeps the played transitions.
# 2. A short Procgen PPO run (starpilot, 2048 steps) explained with perturbation
#    saliency over procgen's 512x512 frames (the first 40 steps).
# 3. A short SAC Hopper-v5 run whose latest checkpoint is explained: MuJoCo's own
#    renderer on a headless EGL context (Mesa's llvmpipe without a GPU).
# tests/explain/check.py then checks each folder: summary.json, one steps.jsonl line
# per step of the watched episode, per-step figures or saliency frames, importances
# that sum to 1, an H.264 video with one frame per step of the right size (ffprobe),
# and the transitions file's fields and returns.
#
# Builds the binaries if they are missing. Takes about 3 minutes on two cores.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t_start=$(date +%s)
say() { echo "explain: $*"; }
die() {
  echo "explain: FAIL: $*" >&2
  echo "explain: 0 passed, 1 failed"
  exit 1
}
elapsed() { echo "$(( $(date +%s) - t_start ))s"; }

# shellcheck source=tests/lib/common.sh
. tests/lib/common.sh
command -v ffprobe >/dev/null || die "ffprobe is not on PATH: run deploy/setup.sh (it installs Debian's ffmpeg)"
if [ ! -x target/release/volley-learner ] || [ ! -x target/release/volley-actor ] || [ ! -x target/release/volley-runs ]; then
  say "building volley (release)"
  deploy/setup.sh
  cargo build --release -q -p volley-learner -p volley-actor
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/volley-explain.XXXXXX")"
ok=0
cleanup() {
  if [ "$ok" = 1 ]; then
    rm -rf "$work"
  else
    echo "explain: logs and runs kept in $work" >&2
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "---- tail of $f" >&2
      tail -12 "$f" >&2
    done
  fi
}
trap cleanup EXIT

read -r grpc_port metrics_port < <(free_ports 2)
export VOLLEY_PORT="$grpc_port" VOLLEY_METRICS_PORT="$metrics_port"
runs="$work/runs"
passed=0
checked() {
  local n
  n=$(grep -c "^explain check: ok" "$1")
  passed=$((passed + n))
}

say "pipeline: PPO on CartPole"
deploy/pipeline.sh --config configs/ppo_cartpole.toml "run.dir=$runs" run.name=cp \
  run.total_steps=30000 eval.every_updates=4 learner.torch_threads=1 \
  -- --episodes 4 --record "$work/cp.safetensors" >"$work/cp.log" 2>&1 || die "the CartPole pipeline (see $work/cp.log)"
grep -q "explained cp (id " "$work/cp.log" || die "the pipeline did not say where the explanation is"
python3 tests/explain/check.py "$runs/cp/explain/best" --kind vector --transitions "$work/cp.safetensors" >"$work/cp-check.log" \
  || { cat "$work/cp-check.log"; die "the CartPole explanation"; }
checked "$work/cp-check.log"
say "CartPole explained ($(elapsed))"

say "pipeline: MP-DQN on Platform"
deploy/pipeline.sh --actors 1 --config configs/mpdqn_platform.toml "run.dir=$runs" run.name=mp \
  run.total_steps=8000 eval.every_updates=250 learner.torch_threads=1 \
  -- --episodes 20 >"$work/mp.log" 2>&1 || die "the Platform pipeline (see $work/mp.log)"
python3 tests/explain/check.py "$runs/mp/explain/best" --kind vector >"$work/mp-check.log" \
  || { cat "$work/mp-check.log"; die "the Platform explanation"; }
checked "$work/mp-check.log"
grep -q '"player x"' "$runs/mp/explain/best/steps.jsonl" || die "Platform's features are not named"
say "Platform explained ($(elapsed))"

say "a short Procgen run, explained with saliency"
VOLLEY_LOCAL_BUILT=1 deploy/local.sh --actors 1 --config configs/ppo_procgen.toml "run.dir=$runs" run.name=pg \
  run.total_steps=2048 env.num_envs=8 ppo.batch_steps=1024 ppo.minibatches=2 ppo.epochs=1 \
  eval.every_updates=1 eval.episodes=2 eval.max_steps=100 eval.saliency_every=1 \
  learner.torch_threads=1 >"$work/pg.log" 2>&1 || die "the Procgen run"
[ -s "$runs/pg/saliency/latest.png" ] || die "the evaluator wrote no saliency frame into $runs/pg/saliency"
passed=$((passed + 1))
target/release/volley-runs --dir "$runs" explain pg --episodes 1 --max-steps 40 --figures 40 \
  >"$work/pg-explain.log" 2>&1 || die "explaining the Procgen run"
python3 tests/explain/check.py "$runs/pg/explain/best" --kind image >"$work/pg-check.log" \
  || { cat "$work/pg-check.log"; die "the Procgen explanation"; }
checked "$work/pg-check.log"
python3 - "$runs/pg/explain/best/summary.json" <<'PY' || die "the Procgen video is not procgen's 512x512 render"
import json, sys
v = json.load(open(sys.argv[1]))["video"]
sys.exit(0 if (v["width"], v["height"]) == (512, 512) else 1)
PY
passed=$((passed + 1))
say "Procgen explained ($(elapsed))"

say "a short SAC Hopper run, rendered headless"
VOLLEY_LOCAL_BUILT=1 deploy/local.sh --actors 1 --config configs/sac_mujoco.toml "run.dir=$runs" run.name=hop \
  run.total_steps=1500 sac.learning_starts=1000 learner.torch_threads=1 >"$work/hop.log" 2>&1 || die "the Hopper run"
target/release/volley-runs --dir "$runs" explain hop --checkpoint latest --episodes 2 --max-steps 30 \
  >"$work/hop-explain.log" 2>&1 || die "explaining the Hopper run"
python3 tests/explain/check.py "$runs/hop/explain/$(ls "$runs/hop/explain")" --kind vector >"$work/hop-check.log" \
  || { cat "$work/hop-check.log"; die "the Hopper explanation"; }
checked "$work/hop-check.log"
say "Hopper explained ($(elapsed))"

ok=1
say "$passed passed, 0 failed ($(elapsed))"
