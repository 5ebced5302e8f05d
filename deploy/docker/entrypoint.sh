#!/usr/bin/env bash
# volley's container entry point (also used by deploy/slurm/volley.sbatch).
#
#   entrypoint.sh learner [volley-learner flags and key=value overrides...]
#   entrypoint.sh actor   [volley-actor run flags...]
#   entrypoint.sh COMMAND [ARGS...]          anything else runs as it is
#
# learner starts a run or continues it: the run lives in $VOLLEY_RUN_DIR/$VOLLEY_RUN_NAME.
# When that folder holds a checkpoint (checkpoints/latest) the learner resumes it
# (`volley-learner --resume`: the run's own config.toml, the overrides given here on
# top); otherwise it starts the run from $VOLLEY_CONFIG. A run folder without any
# checkpoint (the learner died before its first one) cannot be resumed: it is moved
# aside to <name>.incomplete-<time> and the run starts over. So a restarted pod or a
# requeued job carries on where its last checkpoint left it. A run whose newest
# checkpoint has reached run.total_steps is not resumed (that would train one more
# update per restart): the learner role exits 0 with a message instead.
#
# Environment:
#   VOLLEY_RUN_DIR     parent folder of run directories (default /runs)
#   VOLLEY_RUN_NAME    the run's name; keep it fixed across restarts (default volley)
#   VOLLEY_CONFIG      run config for a new run (default /etc/volley/run.toml)
#   VOLLEY_AUTH_TOKEN  shared token; the learner and the actor read it from the
#                      environment (learner.auth_token, volley-actor --auth-token)
#   VOLLEY_BIN_DIR     where the binaries are (default: found on PATH)
set -euo pipefail

bin() {
  if [ -n "${VOLLEY_BIN_DIR:-}" ]; then
    echo "$VOLLEY_BIN_DIR/$1"
  else
    echo "$1"
  fi
}

# True when the newest checkpoint of run $1 has reached run.total_steps (that of the
# run's config.toml, or a run.total_steps=N among the remaining arguments).
finished() {
  local run="$1" total steps latest a
  shift
  total="$(sed -n 's/^total_steps *= *\([0-9_]*\).*/\1/p' "$run/config.toml" 2>/dev/null | head -n 1 | tr -d _)"
  for a in "$@"; do
    case "$a" in run.total_steps=*) total="${a#run.total_steps=}" ;; esac
  done
  latest="$(tr -d '[:space:]' <"$run/checkpoints/latest")"
  steps="$(grep -o '"steps": *[0-9]*' "$run/checkpoints/$latest/training.json" 2>/dev/null | grep -o '[0-9]*$' | head -n 1)"
  case "$total$steps" in '' | *[!0-9]*) return 1 ;; esac
  [ -n "$total" ] && [ -n "$steps" ] && [ "$total" -gt 0 ] && [ "$steps" -ge "$total" ]
}

role="${1:-}"
case "$role" in
  learner)
    shift
    run_dir="${VOLLEY_RUN_DIR:-/runs}"
    run_name="${VOLLEY_RUN_NAME:-volley}"
    config="${VOLLEY_CONFIG:-/etc/volley/run.toml}"
    run="$run_dir/$run_name"
    # VOLLEY_AUTH_TOKEN reaches the learner through its environment, not its
    # command line (where ps would show it).
    if [ -f "$run/checkpoints/latest" ]; then
      if finished "$run" "$@"; then
        # Resuming would train one more update on every restart after the end.
        echo "entrypoint: run $run has reached run.total_steps: nothing to train. Start a" \
          "new run (another VOLLEY_RUN_NAME) or pass a higher run.total_steps=N" >&2
        exit 0
      fi
      echo "entrypoint: resuming $run from its newest checkpoint" >&2
      exec "$(bin volley-learner)" --resume "$run" "$@"
    fi
    if [ -e "$run" ]; then
      aside="$run.incomplete-$(date -u +%Y%m%dT%H%M%SZ)"
      echo "entrypoint: $run has no checkpoint to resume from; moving it to $aside and starting over" >&2
      mv "$run" "$aside"
    fi
    [ -f "$config" ] || { echo "entrypoint: run config $config not found (VOLLEY_CONFIG)" >&2; exit 2; }
    mkdir -p "$run_dir"
    echo "entrypoint: starting run $run from $config" >&2
    exec "$(bin volley-learner)" --config "$config" "run.dir=$run_dir" "run.name=$run_name" \
      "$@"
    ;;
  actor)
    shift
    exec "$(bin volley-actor)" run "$@"
    ;;
  "")
    echo "usage: entrypoint.sh learner|actor [ARGS...], or any command" >&2
    exit 2
    ;;
  *)
    exec "$@"
    ;;
esac
