#!/usr/bin/env bash
# Regenerates the figures the README shows, from real runs on this machine:
#
#   bash docs/figures/make.sh
#
# Trains PPO on CartPole-v1 (configs/ppo_cartpole.toml, 100k env steps) on seeds 1 to
# 3 with deploy/local.sh --seeds 3, then draws seed 1's learning curve
# (volley-runs plot) and the comparison of the three seeds (volley-runs compare), and
# copies the PNGs here: learning_curve.png, seeds.png. About a minute on two cores.
# The runs are kept in a temporary folder, printed at the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
runs="$(mktemp -d "${TMPDIR:-/tmp}/volley-figures.XXXXXX")"
deploy/local.sh --config configs/ppo_cartpole.toml --seeds 3 \
  "run.dir=$runs" run.name=ppo-cartpole run.total_steps=100000
target/release/volley-runs --dir "$runs" plot ppo-cartpole-seed1 --out "$runs/plots" >/dev/null
target/release/volley-runs --dir "$runs" compare ppo-cartpole --out "$runs/seeds.png" >/dev/null
cp "$runs/plots/learning_curve.png" docs/figures/learning_curve.png
cp "$runs/seeds.png" docs/figures/seeds.png
target/release/volley-runs --dir "$runs" list
echo "docs/figures: learning_curve.png, seeds.png written (runs in $runs)"
