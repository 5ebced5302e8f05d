#!/usr/bin/env bash
# Regenerates the README's imitation figures on Hopper-v5 from real runs on this
# machine, with the CI expert in tests/imitation/expert (SAC, 100k steps):
#
#   bash docs/figures/imitation.sh
#
# Records 1, 5 and 10 of the expert's greedy episodes (volley-runs play --record,
# seed 1001), clones each (configs/bc_mujoco.toml, group bc), runs DAgger
# (configs/dagger_mujoco.toml, 10 iterations of 1000 steps), SAC seeded by imitation
# on the 10 episodes and SAC from scratch (20k env steps each), then draws
# imitation_labels.png (evaluation return against expert labels: DAgger's
# iterations, each clone's final evaluation) and imitation_steps.png (against env
# steps, with the expert, the 10-episode clone and CS285's Hopper expert as lines).
# About an hour on two cores. The runs are kept in a temporary folder, printed at the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
work="$(mktemp -d "${TMPDIR:-/tmp}/volley-imitation.XXXXXX")"
runs="$work/runs"
expert="$work/expert"
cp -a tests/imitation/expert "$expert"
cargo build --release -p volley-learner -p volley-actor --bins
runs_bin=target/release/volley-runs
for k in 1 5 10; do
  "$runs_bin" play "$expert" --json --episodes "$k" --seed 1001 \
    --record "$work/demos$k.safetensors" >/dev/null
  deploy/local.sh --config configs/bc_mujoco.toml "run.dir=$runs" "run.name=bc-$k" \
    run.group=bc "imitation.dataset=$work/demos$k.safetensors" "imitation.expert=$expert"
done
deploy/local.sh --actors 1 --config configs/dagger_mujoco.toml "run.dir=$runs" \
  run.name=dagger "imitation.expert=$expert"
deploy/local.sh --actors 1 --config configs/sac_imitation_mujoco.toml "run.dir=$runs" \
  run.name=sac-seeded run.total_steps=20000 eval.every_updates=100 \
  "imitation.dataset=$work/demos10.safetensors" "imitation.expert=$expert"
deploy/local.sh --actors 1 --config configs/sac_mujoco.toml "run.dir=$runs" \
  run.name=sac run.total_steps=20000 eval.every_updates=100
expert_return=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["return_mean"]))' \
  "$runs/dagger/expert.json")
bc10=$(python3 -c 'import json,sys
v=[json.loads(l).get("eval_return_mean") for l in open(sys.argv[1])]
print(round([x for x in v if x is not None][-1]))' "$runs/bc-10/metrics.jsonl")
"$runs_bin" --dir "$runs" compare dagger bc --x labels --out "$work/labels.png" \
  --reference "expert=$expert_return" \
  --reference "90% of the expert=$((expert_return * 9 / 10))" >/dev/null
"$runs_bin" --dir "$runs" compare dagger sac-seeded sac --out "$work/steps.png" \
  --reference "expert=$expert_return" --reference "BC, 10 expert episodes, final=$bc10" \
  --reference "CS285 Hopper expert (about)=3700" >/dev/null
cp "$work/labels.png" docs/figures/imitation_labels.png
cp "$work/steps.png" docs/figures/imitation_steps.png
"$runs_bin" --dir "$runs" list
echo "docs/figures: imitation_labels.png, imitation_steps.png written (runs in $work)"
