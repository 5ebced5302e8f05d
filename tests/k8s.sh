#!/usr/bin/env bash
# Checks the cluster deployment files without a cluster: deploy/k8s (Kustomize),
# deploy/docker (Dockerfile), deploy/slurm (sbatch template). Run from anywhere:
#
#   bash tests/k8s.sh
#
# 1. Renders deploy/k8s/base, overlays/example and base + every component with
#    `kubectl kustomize`, and checks each rendering (tests/k8s/check_manifests.py):
#    strict schema validation against the Kubernetes $VOLLEY_K8S_VERSION (default
#    1.32.0) schemas of the pinned PyPI package kubernetes-validate (in a venv under
#    .deps/, installed on first use; tests/k8s/requirements.txt), then what no schema
#    sees: selectors, port names and numbers, Prometheus annotations, probes, volumes,
#    the actors' learner address, CLI flags and run-config keys. When the release
#    binaries are built (target/release), their --help gives the flags and the learner
#    is started on the rendered config to prove it accepts it.
# 2. Breaks copies of deploy/k8s on purpose (tests/k8s/mutate.py) and requires each
#    breakage to be reported with its message.
# 3. The Grafana dashboards component matches deploy/grafana/dashboards.
# 4. The Dockerfile: COPY sources, stages, entry point (tests/k8s/check_dockerfile.py),
#    and a broken copy that must fail.
# 5. bash -n on the shell scripts, and deploy/slurm/volley.sbatch run end to end
#    against stand-ins for srun, scontrol and the binaries (tests/k8s/slurm-stubs):
#    a heterogeneous job, its requeue (resume), a job without components, and a
#    finished run (not trained on again). This also exercises the container entry
#    point deploy/docker/entrypoint.sh (start, resume, finished).
#
# Needs python3 (3.11+) and kubectl 1.21+ for `kubectl kustomize` ($KUBECTL names
# another binary). Debian's own kubectl (package kubernetes-client, 1.20) is too old
# for Kustomize components; without a usable kubectl the rendering checks are skipped
# and the manifest files are schema-checked one by one. Prints one line per check and
# a summary line; exits 1 if any check failed. About 20 to 40 s (plus the validator's
# first install).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
k8s_version="${VOLLEY_K8S_VERSION:-1.32.0}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "tests/k8s.sh: needs python3 3.11 or newer (tomllib)" >&2; exit 1; }

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "PASS  $*"; }
flunk() { failed=$((failed + 1)); echo "FAIL  $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP  $*"; }
# Runs a check quietly; prints its output only when it fails.
check() {
  local name="$1"
  shift
  if "$@" >"$tmp/out" 2>&1; then
    pass "$name"
  else
    flunk "$name"
    sed 's/^/      /' "$tmp/out"
  fi
}

# --- tools ------------------------------------------------------------------------
kubectl="${KUBECTL:-kubectl}"
kubectl_ok() {
  command -v "$kubectl" >/dev/null 2>&1 || return 1
  local minor
  minor="$("$kubectl" version --client -o json 2>/dev/null \
    | python3 -c 'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["clientVersion"]["minor"] if c.isdigit())))' 2>/dev/null)" \
    || return 1
  [ "$minor" -ge 21 ]
}
if ! kubectl_ok && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Where an apt source offers a current kubectl (the Kubernetes project's own
  # repository), take it; Debian's archive has none that is recent enough.
  if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null 2>&1 || true
  fi
fi
have_kubectl=0
kubectl_ok && have_kubectl=1

die() { echo "tests/k8s.sh: $*" >&2; exit 1; }
# shellcheck source=tests/lib/common.sh
. tests/lib/common.sh
test_venv k8s-venv tests/k8s/requirements.txt

bins=()
if [ -x target/release/volley-learner ] && [ -x target/release/volley-actor ]; then
  bins=(--learner-bin target/release/volley-learner --actor-bin target/release/volley-actor)
fi

render() { # kustomization-dir output
  "$kubectl" kustomize "$1" >"$2"
}

# --- 1. the manifests as shipped --------------------------------------------------
# A kustomization with the base and every component, so that the optional parts are
# checked too.
mkdir -p "$tmp/all"
cp -r deploy/k8s "$tmp/all/k8s"
mkdir -p "$tmp/all/k8s/overlays/all"
cat >"$tmp/all/k8s/overlays/all/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
components:
  - ../../components/grafana-dashboards
  - ../../components/prometheus-operator
EOF

if [ "$have_kubectl" = 1 ]; then
  for target in deploy/k8s/base deploy/k8s/overlays/example "$tmp/all/k8s/overlays/all"; do
    name="${target#"$tmp/all/"}"
    name="${name#deploy/}"
    out="$tmp/rendered-$(echo "$name" | tr / -).yaml"
    use=("${bins[@]+"${bins[@]}"}")
    # base + components trains on the base's config: one learner --check for it is enough.
    [ "$name" = k8s/overlays/all ] && [ ${#use[@]} -gt 0 ] && use=("${use[@]:2}")
    if render "$target" "$out" 2>"$tmp/out"; then
      check "manifests $name (kustomize, schemas $k8s_version, consistency${use[*]:+, binaries})" \
        "$py" tests/k8s/check_manifests.py --repo "$root" --k8s-version "$k8s_version" \
        "${use[@]+"${use[@]}"}" "$out"
    else
      flunk "render $name"
      sed 's/^/      /' "$tmp/out"
    fi
  done
  if [ ${#bins[@]} -eq 0 ]; then
    skip "volley-learner --check on the rendered config (no target/release binaries; flags read from the sources)"
  fi
else
  skip "kustomize rendering (no kubectl 1.21+; Debian's kubernetes-client is 1.20)"
  # Without kustomize: each plain manifest file against the schemas.
  files=(deploy/k8s/base/*.yaml deploy/k8s/components/prometheus-operator/monitors.yaml)
  check "manifest files, schemas $k8s_version (unrendered)" "$py" -c '
import sys, yaml, kubernetes_validate as kv
bad = 0
for f in sys.argv[2:]:
    for d in yaml.safe_load_all(open(f)):
        if not d or d.get("kind") in ("Kustomization", "Component") or "coreos" in d.get("apiVersion", ""):
            continue
        try:
            kv.validate(d, sys.argv[1], strict=True)
        except kv.ValidationError as e:
            bad = 1
            print(f, d["kind"], ".".join(map(str, e.path)), e.message)
sys.exit(bad)' "$k8s_version" "${files[@]}"
fi

# --- 2. broken copies must fail ---------------------------------------------------
if [ "$have_kubectl" = 1 ]; then
  while IFS=$'\t' read -r mutation message; do
    work="$tmp/mut-$mutation"
    cp -r "$tmp/all/k8s" "$work"
    "$py" tests/k8s/mutate.py "$mutation" "$work"
    if ! render "$work/overlays/all" "$work/rendered.yaml" 2>"$tmp/out"; then
      flunk "broken copy '$mutation': kustomize itself refused it"
      sed 's/^/      /' "$tmp/out"
      continue
    fi
    if "$py" tests/k8s/check_manifests.py --repo "$root" --k8s-version "$k8s_version" \
      "$work/rendered.yaml" >"$tmp/out" 2>&1; then
      flunk "broken copy '$mutation' passed the checks"
    elif grep -qF -- "$message" "$tmp/out"; then
      pass "broken copy '$mutation' is reported: $message"
    else
      flunk "broken copy '$mutation' failed without the expected message '$message'"
      grep '^FAIL' "$tmp/out" | sed 's/^/      /'
    fi
  done < <("$py" tests/k8s/mutate.py --list)
  # What only the learner itself can judge: an env id it does not know.
  if [ ${#bins[@]} -gt 0 ]; then
    work="$tmp/mut-env-id"
    cp -r "$tmp/all/k8s" "$work"
    sed -i 's/^id = "procgen:starpilot?/id = "procgen:starpilots?/' "$work/base/run.toml"
    render "$work/base" "$work/rendered.yaml"
    if "$py" tests/k8s/check_manifests.py --repo "$root" --k8s-version "$k8s_version" "${bins[@]}" \
      "$work/rendered.yaml" >"$tmp/out" 2>&1; then
      flunk "broken copy 'env-id' passed volley-learner --check"
    elif grep -q "learner: volley-learner --check refused" "$tmp/out" && grep -q "starpilots" "$tmp/out"; then
      pass "broken copy 'env-id' is reported: volley-learner --check refuses it"
    else
      flunk "broken copy 'env-id' failed without the expected message"
      grep -A8 '^FAIL' "$tmp/out" | sed 's/^/      /'
    fi
  fi
else
  skip "broken copies (they need kustomize)"
fi

# --- 3. dashboards and run config -------------------------------------------------
check "grafana dashboards component in sync with deploy/grafana/dashboards" \
  deploy/k8s/components/grafana-dashboards/sync.sh --check
if ! "$py" - <<'EOF' >"$tmp/out" 2>&1; then
import tomllib
a = tomllib.load(open("deploy/k8s/base/run.toml", "rb"))
b = tomllib.load(open("configs/ppo_procgen.toml", "rb"))
raise SystemExit(0 if a == b else 1)
EOF
  echo "WARN  deploy/k8s/base/run.toml differs from configs/ppo_procgen.toml"
fi

# --- 4. the Dockerfile --------------------------------------------------------------
check "Dockerfile: stages, COPY sources, ignore file, entry point" \
  "$py" tests/k8s/check_dockerfile.py "$root"
sed 's#COPY deploy/setup.sh deploy/setup.sh#COPY deploy/setup-missing.sh deploy/setup.sh#' \
  deploy/docker/Dockerfile >"$tmp/Dockerfile"
cp deploy/docker/Dockerfile.dockerignore "$tmp/Dockerfile.dockerignore"
if "$py" tests/k8s/check_dockerfile.py "$root" "$tmp/Dockerfile" >"$tmp/out" 2>&1; then
  flunk "Dockerfile with a missing COPY source passed the check"
elif grep -q 'deploy/setup-missing.sh does not exist' "$tmp/out"; then
  pass "Dockerfile with a missing COPY source is reported"
else
  flunk "Dockerfile with a missing COPY source failed without the expected message"
  sed 's/^/      /' "$tmp/out"
fi

# --- 5. shell scripts and the Slurm template ----------------------------------------
for f in deploy/slurm/volley.sbatch deploy/docker/entrypoint.sh deploy/docker/stage-runtime.sh \
  deploy/k8s/components/grafana-dashboards/sync.sh tests/k8s/slurm-stubs/srun; do
  check "bash -n $f" bash -n "$f"
done

# Runs the sbatch template with the stand-ins; $1 names the case, the rest is env.
slurm_run() {
  local case="$1"
  shift
  : >"$tmp/slurm-$case.log"
  env PATH="$root/tests/k8s/slurm-stubs:$PATH" FAKE_SLURM_LOG="$tmp/slurm-$case.log" \
    SLURM_SUBMIT_DIR="$root" VOLLEY_BIN_DIR="$root/tests/k8s/slurm-stubs" \
    VOLLEY_RUN_DIR="$tmp/slurm-runs" VOLLEY_CONFIG=configs/ppo_cartpole.toml \
    VOLLEY_PORT="$slurm_port" FAKE_LEARNER_SECONDS=2 "$@" \
    timeout 60 bash deploy/slurm/volley.sbatch ppo.lr=1e-4 >"$tmp/slurm-$case.out" 2>&1
}
slurm_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
slurm_check() { # case expected-actors expected-learner-mode(config|resume)
  "$py" - "$tmp/slurm-$1.log" "$2" "$3" "$tmp/slurm-runs" "$slurm_port" <<'EOF'
import json, sys
log, n, mode, runs, port = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
lines = open(log).read().splitlines()
learners = [json.loads(l[len("learner "):]) for l in lines if l.startswith("learner {")]
actors = [l.split()[2:] for l in lines if l.startswith("actor run ")]
stopped = [l for l in lines if l.startswith("actor stopped")]
errors = []
if len(learners) != 1:
    errors.append(f"{len(learners)} learners started")
else:
    a = learners[0]["args"]
    if not learners[0]["token"]:
        errors.append("the learner got no VOLLEY_AUTH_TOKEN")
    if mode == "config" and not (a[:2] == ["--config", "configs/ppo_cartpole.toml"] and f"run.dir={runs}" in a):
        errors.append(f"learner not started from the config: {a}")
    if mode == "resume" and (a[:1] != ["--resume"] or "--config" in a):
        errors.append(f"learner did not resume: {a}")
    for want in (f"learner.listen=0.0.0.0:{port}", "learner.metrics_listen=0.0.0.0:9100", "ppo.lr=1e-4"):
        if want not in a:
            errors.append(f"learner args lack {want}: {a}")
if "learner done" not in lines:
    errors.append("the learner did not run to its end")
ids = [a[a.index("--actor-id") + 1] for a in actors]
addrs = {a[a.index("--learner") + 1] for a in actors}
ports = sorted(a[a.index("--metrics-listen") + 1] for a in actors)
if len(actors) != n or len(set(ids)) != n:
    errors.append(f"expected {n} actors with distinct ids, got {ids}")
if addrs != {f"localhost:{port}"}:
    errors.append(f"actors dial {addrs}, not the learner node localhost:{port}")
if len(stopped) != n:
    errors.append(f"{len(stopped)} of {n} actors were stopped when the learner ended")
if not all(p.startswith("0.0.0.0:91") for p in ports):
    errors.append(f"actor metrics ports {ports}")
print("\n".join(errors) or f"{n} actors, learner {mode}")
sys.exit(1 if errors else 0)
EOF
}
slurm_case() { # name actors mode env...
  local name="$1" n="$2" mode="$3"
  shift 3
  if ! slurm_run "$name" "$@"; then
    flunk "slurm template, $name: the job script failed"
    sed 's/^/      /' "$tmp/slurm-$name.out"
    return
  fi
  check "slurm template, $name ($n actors, learner $mode)" slurm_check "$name" "$n" "$mode"
}
het=(SLURM_JOB_ID=4242 SLURM_HET_SIZE=2 SLURM_JOB_NODELIST_HET_GROUP_0=gpu01
  SLURM_JOB_NODELIST_HET_GROUP_1='cpu[01-02]' FAKE_HET1_NODES=2 FAKE_HET1_TASKS_PER_NODE=3)
slurm_case "heterogeneous job" 6 config "${het[@]}"
# Requeued: the run has a checkpoint now, so the learner resumes it.
mkdir -p "$tmp/slurm-runs/slurm-4242/checkpoints"
echo update-000000000010 >"$tmp/slurm-runs/slurm-4242/checkpoints/latest"
slurm_case "requeued job" 6 resume "${het[@]}"
slurm_case "job without components" 4 config SLURM_JOB_ID=4343 SLURM_JOB_NUM_NODES=3 \
  SLURM_JOB_NODELIST='node[1-3]' SLURM_NTASKS_PER_NODE=2
# A finished run (its checkpoint has run.total_steps) is not trained on again.
done_run="$tmp/slurm-runs/slurm-4545"
mkdir -p "$done_run/checkpoints/update-000000000100"
printf '[run]\ntotal_steps = 1_000\n' >"$done_run/config.toml"
echo update-000000000100 >"$done_run/checkpoints/latest"
echo '{"format": 2, "algorithm": "ppo", "counters": {"updates": 100, "steps": 1024, "version": 100, "episodes": 7}}' >"$done_run/checkpoints/update-000000000100/training.json"
if slurm_run finished SLURM_JOB_ID=4545 "${het[@]:1}" \
  && grep -q "has reached run.total_steps" "$tmp/slurm-finished.out" \
  && ! grep -q '^learner {' "$tmp/slurm-finished.log" && ! grep -q '^actor run' "$tmp/slurm-finished.log"; then
  pass "slurm template, finished run: not resumed, job ends with status 0"
else
  flunk "slurm template, finished run"
  sed 's/^/      /' "$tmp/slurm-finished.out" "$tmp/slurm-finished.log"
fi
if [ -f "$tmp/slurm-runs/slurm-4242/logs/actor-0.log" ]; then
  pass "slurm template: actor logs in <run>/logs/actor-<task>.log"
else
  flunk "slurm template: no actor logs in the run directory"
fi

echo
echo "k8s: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
