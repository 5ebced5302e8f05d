#!/usr/bin/env bash
# volley's test command: installs the native stack if missing, then runs every test of
# the workspace (unit, integration, conformance and process tests) and the deployment
# tests with real programs:
#   tests/observability.sh  Debian's prometheus scrapes live runs; every dashboard and
#                           alert expression must return series; an alert fires
#   tests/mlflow.sh         a real mlflow server gets runs live; one killed mid-run
#                           costs the run nothing; after-the-fact export completes it
#   tests/tensorboard.sh    TensorBoard reads a short run's event files back; every
#                           tag's steps and values must equal metrics.jsonl's
#   tests/explain.sh        deploy/pipeline.sh trains and explains CartPole and Platform
#                           runs; a Procgen run's saliency video, a headless MuJoCo
#                           render; every file checked (ffprobe for the videos)
#   tests/multihost.sh      learner and actors in separate network namespaces, started
#                           by deploy/hosts.sh; a cut link, a reconnect (needs root)
#   tests/k8s.sh            Kustomize output validated against Kubernetes schemas, the
#                           Dockerfile and the Slurm template checked
#
#   deploy/test.sh [extra cargo test arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
deploy/setup.sh
# The deployment tests' Python tools (MLflow, TensorBoard, the Kubernetes schema
# validator; each test's own test_venv call stays the one that counts, this only
# installs ahead of it) go into .deps/ while cargo
# builds: pip mostly waits on the network, cargo on the CPU. The installer has a
# process group of its own, so an early exit stops pip with it.
venvs_log=.deps/test-venvs.log
setsid bash -c '. tests/lib/common.sh
  die() { echo "$*" >&2; exit 1; }
  test_venv mlflow-venv tests/mlflow/requirements.txt
  test_venv tb-venv tests/tensorboard/requirements.txt
  test_venv k8s-venv tests/k8s/requirements.txt' >"$venvs_log" 2>&1 &
venvs_pid=$!
side_pid=""
# Background jobs lead process groups of their own (setsid): a stop takes their
# children (pip, the test binaries' learners and actors) with them.
stop_background() {
  local p
  for p in "$venvs_pid" "$side_pid"; do
    [ -n "$p" ] && kill -- "-$p" 2>/dev/null
  done
  return 0
}
trap stop_background EXIT
took() { echo "test.sh: $1 done at ${SECONDS}s"; }
took "setup"
# The process tests start the built binaries.
cargo build --workspace --release --bins
took "building the binaries"
if [ $# -gt 0 ]; then
  cargo test --workspace --release "$@"
else
  # Most of the cargo tests' time is two long training runs on one core each:
  # learning.rs's SAC on Hopper and imitation.rs's seeded SAC, each the last test of
  # its binary to finish. cargo runs binaries one after another, so imitation.rs runs
  # beside all the others (its output is shown when it ends) and the two overlap.
  cargo test --workspace --release --no-run
  mkdir -p target/test-logs
  side_log=target/test-logs/imitation.log
  took "building the tests"
  setsid cargo test --release -p volley-learner --test imitation >"$side_log" 2>&1 &
  side_pid=$!
  learner_targets=(--lib --bins)
  for f in learner/tests/*.rs; do
    name="$(basename "$f" .rs)"
    [ "$name" = imitation ] || learner_targets+=(--test "$name")
  done
  rc=0
  cargo test --workspace --release --exclude volley-learner || rc=1
  cargo test --release -p volley-learner "${learner_targets[@]}" || rc=1
  side_rc=0
  wait "$side_pid" || side_rc=$?
  side_pid=""
  echo "test.sh: learner/tests/imitation.rs, run beside the others (exit $side_rc):"
  cat "$side_log"
  if [ "$rc" != 0 ] || [ "$side_rc" != 0 ]; then
    echo "test.sh: cargo tests failed; see above" >&2
    exit 1
  fi
fi
took "cargo tests"
if ! wait "$venvs_pid"; then
  # Each test below installs its tool again and fails with the reason if it cannot.
  echo "test.sh: installing the deployment tests' Python tools failed:" >&2
  tail -n 20 "$venvs_log" >&2
fi
venvs_pid=""

failed=()
for t in tests/observability.sh tests/tensorboard.sh tests/mlflow.sh tests/explain.sh tests/multihost.sh tests/k8s.sh; do
  echo "test.sh: running $t"
  bash "$t" || failed+=("$t")
  took "$t"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all tests passed"
