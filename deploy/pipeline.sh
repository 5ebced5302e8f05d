#!/usr/bin/env bash
# Trains a config and, when training ends, plays and explains the best checkpoint of
# that same run: the video, the per-step explanations and their figures go into the
# run directory (explain/best/), and to MLflow when the run is tracked.
#
#   deploy/pipeline.sh [--actors N] [--config FILE] [key=value ...] [-- EXPLAIN OPTIONS]
#
# Everything before `--` is deploy/local.sh's (the config, overrides; --seeds is not
# taken: one run); everything after it goes to `volley-runs explain` (--episodes,
# --video gif, --saliency gradient, --channel 0, --constant 150, --sigma 2, ...).
# The run is named run.name when given, else <config name>-<yyyymmdd-hhmmss>.
# Prints where the explanation is.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

train=()
explain=()
config=configs/ppo_procgen.toml
name=""
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; explain=("$@"); break ;;
    --seeds|--seeds=*) echo "deploy/pipeline.sh: --seeds is not taken: the pipeline explains one run" >&2; exit 2 ;;
    --config) config="${2:?--config needs a file}"; train+=("$1" "$2"); shift 2 ;;
    --config=*) config="${1#*=}"; train+=("$1"); shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    run.name=*) name="${1#run.name=}"; shift ;;
    *) train+=("$1"); shift ;;
  esac
done
[ -f "$config" ] || { echo "deploy/pipeline.sh: config file '$config' not found" >&2; exit 2; }
name="${name:-$(basename "$config" .toml)-$(date +%Y%m%d-%H%M%S)}"

deploy/setup.sh
echo "pipeline: building volley in release mode"
cargo build --release -q -p volley-learner -p volley-actor

# The run's folder, as the learner resolves it from the config and the overrides.
overrides=()
for a in "${train[@]+"${train[@]}"}"; do
  case "$a" in *=*) [ "${a#--}" = "$a" ] && overrides+=("$a") ;; esac
done
resolved=$(target/release/volley-learner --config "$config" "${overrides[@]+"${overrides[@]}"}" "run.name=$name" --check 2>/dev/null) \
  || { target/release/volley-learner --config "$config" "${overrides[@]+"${overrides[@]}"}" "run.name=$name" --check >/dev/null; exit 2; }
runs_dir=$(python3 -c 'import sys, tomllib; print(tomllib.loads(sys.stdin.read())["run"]["dir"])' <<<"$resolved")

echo "pipeline: training run $name"
VOLLEY_LOCAL_BUILT=1 deploy/local.sh "${train[@]+"${train[@]}"}" "run.name=$name"

echo "pipeline: explaining the best checkpoint of $name"
target/release/volley-runs --dir "$runs_dir" explain "$name" "${explain[@]+"${explain[@]}"}"
