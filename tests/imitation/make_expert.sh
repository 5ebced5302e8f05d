#!/usr/bin/env bash
# Makes the Hopper-v5 expert the imitation tests learn from: SAC with
# configs/sac_mujoco.toml for STEPS env steps through deploy/local.sh (one actor),
# then keeps of its run directory what playing its best checkpoint needs
# (config.toml, run.json, agent.json, checkpoints/best) in tests/imitation/expert/.
#
#   tests/imitation/make_expert.sh [STEPS]     (default 100000: about an hour on 2 cores)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
steps="${1:-100000}"
case "$steps" in ''|*[!0-9]*) echo "make_expert.sh: STEPS must be a number, got '$steps'" >&2; exit 2 ;; esac
work="target/imitation-expert"
rm -rf "$work"
deploy/local.sh --actors 1 --config configs/sac_mujoco.toml \
  "run.total_steps=$steps" run.name=hopper-expert "run.dir=$work" run.seed=1
run="$work/hopper-expert"
[ -e "$run/checkpoints/best/weights.bin" ] || { echo "make_expert.sh: the run has no best checkpoint" >&2; exit 1; }
out="tests/imitation/expert"
rm -rf "$out"
mkdir -p "$out/checkpoints"
cp "$run/config.toml" "$run/run.json" "$run/agent.json" "$out/"
best="$(readlink "$run/checkpoints/best")"
cp -r "$run/checkpoints/$best" "$out/checkpoints/"
ln -s "$best" "$out/checkpoints/best"
echo "make_expert.sh: expert in $out ($(du -sh "$out" | cut -f1)); its best evaluation:"
grep -E '"eval_return_mean"|"steps"' "$out/checkpoints/best/eval.json"
