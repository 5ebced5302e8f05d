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
# The process tests start the built binaries.
cargo build --workspace --release --bins
cargo test --workspace --release "$@"

failed=()
for t in tests/observability.sh tests/tensorboard.sh tests/mlflow.sh tests/explain.sh tests/multihost.sh tests/k8s.sh; do
  echo "test.sh: running $t"
  bash "$t" || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "test.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "test.sh: all tests passed"
