#!/usr/bin/env bash
# Trains on this machine: one learner and N actors (none for a learner that trains
# alone, like behaviour cloning from a dataset).
#
#   deploy/local.sh [--actors N] [--config FILE] [--seeds K] [key=value ...]
#
# Defaults: 2 actors, configs/ppo_procgen.toml (PPO on procgen:starpilot, easy).
# key=value pairs override the config (ppo.lr=3e-4 env.id=procgen:bigfish ...).
# --seeds K trains the same config K times, one after the other, on run.seed 1..K,
# as runs NAME-seed1 .. NAME-seedK of the group NAME (run.group), to compare with
# `volley-runs compare NAME`.
# Installs the native stack if missing, builds in release, starts everything, prints
# the run directory and the metrics addresses, and on Ctrl-C or SIGTERM stops every
# process it started. Environment: VOLLEY_PORT (gRPC, default 50051) and
# VOLLEY_METRICS_PORT (learner metrics, default 9100; actor i uses that + 1 + i).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

actors=2
config=configs/ppo_procgen.toml
seeds=""
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --actors) actors="${2:?--actors needs a number}"; shift 2 ;;
    --actors=*) actors="${1#*=}"; shift ;;
    --seeds) seeds="${2:?--seeds needs a number}"; shift 2 ;;
    --seeds=*) seeds="${1#*=}"; shift ;;
    --config) config="${2:?--config needs a file}"; shift 2 ;;
    --config=*) config="${1#*=}"; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *=*) overrides+=("$1"); shift ;;
    *) echo "deploy/local.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$actors" in ''|*[!0-9]*) echo "deploy/local.sh: --actors must be a number, got '$actors'" >&2; exit 2 ;; esac
[ -f "$config" ] || { echo "deploy/local.sh: config file '$config' not found" >&2; exit 2; }

port="${VOLLEY_PORT:-50051}"
metrics_port="${VOLLEY_METRICS_PORT:-9100}"

if [ -z "${VOLLEY_LOCAL_BUILT:-}" ]; then
  deploy/setup.sh
  echo "local: building volley in release mode"
  cargo build --release -q -p volley-learner -p volley-actor
fi

run_name=""
for o in "${overrides[@]+"${overrides[@]}"}"; do
  case "$o" in run.name=*) run_name="${o#run.name=}" ;; esac
done
if [ -n "$seeds" ]; then
  case "$seeds" in ''|*[!0-9]*|0) echo "deploy/local.sh: --seeds must be a number of at least 1, got '$seeds'" >&2; exit 2 ;; esac
  group="${run_name:-$(basename "$config" .toml)-$(date +%Y%m%d-%H%M%S)}"
  rest=()
  for o in "${overrides[@]+"${overrides[@]}"}"; do
    case "$o" in run.name=*|run.seed=*|run.group=*) ;; *) rest+=("$o") ;; esac
  done
  trap 'echo; echo "local: stopped the seed group $group"; exit 130' INT TERM
  for s in $(seq 1 "$seeds"); do
    echo "local: seed $s of $seeds: run $group-seed$s (group $group)"
    VOLLEY_LOCAL_BUILT=1 "$0" --actors "$actors" --config "$config" "${rest[@]+"${rest[@]}"}" \
      "run.seed=$s" "run.name=$group-seed$s" "run.group=$group" || exit $?
  done
  echo "local: group $group done: $seeds runs; compare them with: target/release/volley-runs compare $group"
  exit 0
fi
if [ -z "$run_name" ]; then
  run_name="$(basename "$config" .toml)-$(date +%Y%m%d-%H%M%S)"
  overrides+=("run.name=$run_name")
fi
run_parent="runs"
for o in "${overrides[@]}"; do
  case "$o" in run.dir=*) run_parent="${o#run.dir=}" ;; esac
done
run_dir="$run_parent/$run_name"

# A config whose learner trains alone (behaviour cloning from a dataset) gets no
# actors; the learner says so itself (a config it cannot read answers nothing here,
# and the learner below names the problem).
if [ "$actors" -gt 0 ] && [ "$(target/release/volley-learner --config "$config" \
    "${overrides[@]}" --takes-actors 2>/dev/null)" = no ]; then
  echo "local: $config trains on the learner alone: no actors"
  actors=0
fi

pids=()
stopping=0
stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  echo
  echo "local: stopping ${#pids[@]} processes"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # Actors stop within seconds; the learner may be writing a final checkpoint with a
  # replay buffer of gigabytes, so it gets a minute before SIGKILL.
  local waited=0
  for _ in $(seq 1 600); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    if [ "$waited" = 100 ]; then
      for p in "${pids[@]}"; do [ "$p" = "${learner:-}" ] || kill -KILL "$p" 2>/dev/null || true; done
      kill -0 "${learner:-0}" 2>/dev/null && echo "local: waiting for the learner's final checkpoint"
    fi
    waited=$((waited + 1))
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

target/release/volley-learner --config "$config" \
  "learner.listen=127.0.0.1:$port" "learner.metrics_listen=127.0.0.1:$metrics_port" \
  "${overrides[@]}" &
learner=$!
pids+=("$learner")

# Wait until the learner accepts connections and has made its run directory (or
# died). On a busy machine loading libtorch can take a minute. The learner binds its
# port just before it makes the directory, so the port alone does not say the
# directory is there; the actors' logs go into it only once the learner has written
# its config.toml, so a learner never finds its directory taken.
listening=0
for _ in $(seq 1 3000); do
  kill -0 "$learner" 2>/dev/null || { echo "local: the learner exited; see its output above" >&2; exit 1; }
  [ -e "$run_dir/config.toml" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
    && { listening=1; break; }
  sleep 0.1
done
if [ "$listening" = 0 ]; then
  echo "local: the learner did not listen on 127.0.0.1:$port within 300 s; see its output above" >&2
  exit 1
fi

mkdir -p "$run_dir/logs"
for i in $(seq 0 $((actors - 1))); do
  target/release/volley-actor run --learner "127.0.0.1:$port" --actor-id "actor-$i" \
    --metrics-listen "127.0.0.1:$((metrics_port + 1 + i))" >"$run_dir/logs/actor-$i.log" 2>&1 &
  pids+=("$!")
done

echo "local: run directory $run_dir (config.toml, metrics.jsonl, checkpoints/, logs/)"
echo "local: learner metrics http://127.0.0.1:$metrics_port/metrics"
for i in $(seq 0 $((actors - 1))); do
  echo "local: actor-$i metrics http://127.0.0.1:$((metrics_port + 1 + i))/metrics (log $run_dir/logs/actor-$i.log)"
done
echo "local: Ctrl-C stops everything"

# The run ends when the learner does (step budget reached) or on a signal.
set +e
wait "$learner"
rc=$?
set -e
pids=("${pids[@]:1}")
stop_all
exit "$rc"
