#!/usr/bin/env bash
# Tests volley's monitoring files against a live run:
#   deploy/prometheus/prometheus.yml, prometheus-k8s.yml, alerts.yml and the Grafana
#   dashboards in deploy/grafana/dashboards/.
#
#   bash tests/observability.sh
#
# 1. promtool checks the shipped configs and rules.
# 2. Short runs on loopback: a PPO learner (CartPole-v1) with two actors, a SAC learner
#    (Hopper-v5) and an MP-DQN learner (Platform) with one actor each, so that every
#    algorithm's metrics exist. The PPO learner is stopped and resumed once so its
#    actors reconnect, and the learners get chunks they must reject.
# 3. A Prometheus (own config, data dir and port) scrapes them with a copy of the
#    shipped prometheus.yml whose static targets (PPO) and file_sd files (SAC, MP-DQN,
#    as deploy/hosts.sh writes them) point at the runs;
#    a second one runs prometheus-k8s.yml's relabeling on simulated pods.
# 4. Every PromQL expression of every dashboard panel and variable, and every series
#    an alert rule compares, must return series (tests/observability/check.py).
# 5. One actor is killed; VolleyActorDown must fire for it and for no other (the
#    test copy of alerts.yml has shorter `for:` durations, the same expressions).
#
# Installs Debian's prometheus package if prometheus or promtool is missing (as root,
# without starting its service). Builds the binaries if they are missing. Every
# process it starts is stopped on exit. Takes about 1-2 minutes on two cores.
# VOLLEY_OBS_TIMEOUT: seconds to wait for every expression to have data (150).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
t_start=$(date +%s)
passed=0
say() { echo "observability: $*"; }
pass() { passed=$((passed + 1)); }
die() {
  echo "observability: FAIL: $*" >&2
  echo "observability: $passed passed, 1 failed"
  exit 1
}
elapsed() { echo "$(( $(date +%s) - t_start ))s"; }

# ------------------------------------------------------------------ prerequisites
install_prometheus() {
  [ "$(id -u)" = 0 ] || die "prometheus/promtool missing and not root: install Debian's 'prometheus' package"
  command -v apt-get >/dev/null || die "prometheus/promtool missing and no apt-get to install them"
  say "installing Debian's prometheus package"
  # Keep the package's service from starting: invoke-rc.d asks policy-rc.d first.
  local policy=/usr/sbin/policy-rc.d ours=0 before p
  before=" $( (pgrep -x prometheus 2>/dev/null || true) | tr '\n' ' ') "
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    ours=1
  fi
  local rc=0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends prometheus >/tmp/volley-obs-apt.log 2>&1 \
    || { apt-get update -q >>/tmp/volley-obs-apt.log 2>&1 \
         && apt-get install -y -q --no-install-recommends prometheus >>/tmp/volley-obs-apt.log 2>&1; } \
    || rc=$?
  [ "$ours" = 1 ] && rm -f "$policy"
  [ "$rc" = 0 ] || { tail -20 /tmp/volley-obs-apt.log >&2; die "apt-get install prometheus failed"; }
  # If a policy-rc.d of the machine let the package start its service, stop what
  # this install started (this test runs its own Prometheus).
  for p in $(pgrep -x prometheus 2>/dev/null || true); do
    case "$before" in
      *" $p "*) ;;
      *) say "stopping the prometheus service the package started (pid $p)"; kill -TERM "$p" 2>/dev/null || true ;;
    esac
  done
}
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  install_prometheus
fi
command -v python3 >/dev/null || die "python3 is needed"
if [ ! -x target/release/volley-learner ] || [ ! -x target/release/volley-actor ]; then
  say "building volley-learner and volley-actor (release)"
  deploy/setup.sh
  cargo build --release -q -p volley-learner -p volley-actor
fi
say "$(prometheus --version 2>&1 | head -1)"

# ----------------------------------------------------------------- static checks
promtool check config deploy/prometheus/prometheus.yml >/dev/null 2>&1 \
  || { promtool check config deploy/prometheus/prometheus.yml; die "promtool check config prometheus.yml"; }
pass
promtool check rules deploy/prometheus/alerts.yml >/dev/null \
  || { promtool check rules deploy/prometheus/alerts.yml; die "promtool check rules alerts.yml"; }
pass
k8s_note="promtool check config"
if ! out=$(promtool check config deploy/prometheus/prometheus-k8s.yml 2>&1); then
  if grep -q "field kubernetes_sd_configs not found" <<<"$out"; then
    # Debian builds Prometheus without Kubernetes discovery; the relabeling is still
    # checked below on simulated pods.
    k8s_note="this Prometheus has no kubernetes_sd (Debian build): checked with simulated pods only"
  else
    echo "$out" >&2
    die "promtool check config prometheus-k8s.yml"
  fi
else
  pass
fi
for f in deploy/grafana/dashboards/*.json; do
  python3 -m json.tool "$f" >/dev/null || die "$f is not valid JSON"
done
pass
say "promtool: prometheus.yml and alerts.yml valid; prometheus-k8s.yml: $k8s_note ($(elapsed))"

# ------------------------------------------------------------------ processes
work="$(mktemp -d "${TMPDIR:-/tmp}/volley-obs.XXXXXX")"
pids=()
ok=0
cleanup() {
  local p
  for p in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]+"${pids[@]}"}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]+"${pids[@]}"}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$ok" = 1 ]; then
    rm -rf "$work"
  else
    echo "observability: logs kept in $work" >&2
    for f in "$work"/*.log; do
      [ -f "$f" ] || continue
      echo "---- tail of $f" >&2
      tail -8 "$f" >&2
    done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports, all bound at once so they differ.
read -r ppo_grpc ppo_m a0_m a1_m sac_grpc sac_m s0_m mp_grpc mp_m m0_m prom_port k8s_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(12)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')

wait_port() {  # pid port what
  for _ in $(seq 1 300); do
    kill -0 "$1" 2>/dev/null || die "$3 exited; see $work"
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$3 does not listen on port $2"
}
metric() {  # port name: value of an unlabelled sample, empty if absent
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
try:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
except OSError:
    sys.exit(0)
for line in text.splitlines():
    if line.split(" ")[0] == sys.argv[2]:
        print(line.split(" ")[1])
PY
}
start_actor() {  # grpc-port id metrics-port
  # Niced: CartPole actors step as fast as they can and would starve Prometheus and
  # the learners on a small machine.
  nice -n 10 target/release/volley-actor run --learner "127.0.0.1:$1" --actor-id "$2" \
    --metrics-listen "127.0.0.1:$3" >"$work/$2.log" 2>&1 &
  pids+=("$!")
}

ppo_args=(learner.torch_threads=1 run.total_steps=0 eval.every_updates=2 eval.episodes=2)
target/release/volley-learner --config configs/ppo_cartpole.toml \
  "learner.listen=127.0.0.1:$ppo_grpc" "learner.metrics_listen=127.0.0.1:$ppo_m" \
  "run.dir=$work/runs" run.name=ppo "${ppo_args[@]}" >"$work/ppo-learner.log" 2>&1 &
ppo_pid=$!
pids+=("$ppo_pid")
target/release/volley-learner --config configs/sac_mujoco.toml \
  "learner.listen=127.0.0.1:$sac_grpc" "learner.metrics_listen=127.0.0.1:$sac_m" \
  "run.dir=$work/runs" run.name=sac learner.torch_threads=1 run.total_steps=0 \
  sac.learning_starts=256 sac.batch_size=64 'sac.hidden=[64, 64]' \
  eval.every_updates=100 eval.episodes=1 >"$work/sac-learner.log" 2>&1 &
sac_pid=$!
pids+=("$sac_pid")
target/release/volley-learner --config configs/mpdqn_platform.toml \
  "learner.listen=127.0.0.1:$mp_grpc" "learner.metrics_listen=127.0.0.1:$mp_m" \
  "run.dir=$work/runs" run.name=mpdqn learner.torch_threads=1 run.total_steps=0 \
  mpdqn.learning_starts=128 eval.every_updates=50 eval.episodes=2 >"$work/mpdqn-learner.log" 2>&1 &
mp_pid=$!
pids+=("$mp_pid")
wait_port "$ppo_pid" "$ppo_grpc" "the PPO learner"
wait_port "$sac_pid" "$sac_grpc" "the SAC learner"
wait_port "$mp_pid" "$mp_grpc" "the MP-DQN learner"
start_actor "$ppo_grpc" actor-0 "$a0_m"
start_actor "$ppo_grpc" actor-1 "$a1_m"
a1_pid=${pids[-1]}
start_actor "$sac_grpc" sac-actor-0 "$s0_m"
start_actor "$mp_grpc" mpdqn-actor-0 "$m0_m"
say "started 3 learners and 4 actors ($(elapsed))"

# Prometheus with the shipped config: static targets = the PPO run, file_sd = SAC
# and MP-DQN.
prom="http://127.0.0.1:$prom_port"
python3 tests/observability/check.py config --shipped deploy/prometheus --out "$work/prom" \
  --learner-static "127.0.0.1:$ppo_m" --actor-static "127.0.0.1:$a0_m,127.0.0.1:$a1_m" \
  --learner-sd "127.0.0.1:$sac_m,127.0.0.1:$mp_m" --actor-sd "127.0.0.1:$s0_m,127.0.0.1:$m0_m" \
  || die "test copy of prometheus.yml"
promtool check config "$work/prom/prometheus.yml" >/dev/null || die "the test copy of prometheus.yml is invalid"
prometheus --config.file="$work/prom/prometheus.yml" --storage.tsdb.path="$work/prom/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=("$!")
python3 tests/observability/check.py k8s-config --shipped deploy/prometheus --out "$work/k8s" \
  --learner-grpc "$ppo_grpc" --learner-metrics "$ppo_m" --actor-metrics "$a0_m,$s0_m" \
  || die "test copy of prometheus-k8s.yml"
prometheus --config.file="$work/k8s/prometheus.yml" --storage.tsdb.path="$work/k8s/data" \
  --web.listen-address="127.0.0.1:$k8s_port" >"$work/prometheus-k8s.log" 2>&1 &
k8s_prom_pid=$!
pids+=("$k8s_prom_pid")

# Stop the PPO learner once it has trained, and resume it on the same ports: its
# actors reconnect (volley_reconnects_total).
for _ in $(seq 1 600); do
  v=$(metric "$ppo_m" volley_updates_total)
  [ -n "$v" ] && [ "${v%.*}" -ge 2 ] && break
  kill -0 "$ppo_pid" 2>/dev/null || die "the PPO learner exited; see $work/ppo-learner.log"
  sleep 0.1
done
[ -n "$v" ] || die "the PPO learner made no update in 60 s"
kill -TERM "$ppo_pid"
for _ in $(seq 1 300); do kill -0 "$ppo_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$ppo_pid" 2>/dev/null && die "the PPO learner did not stop on SIGTERM"
wait "$ppo_pid" || die "the PPO learner exited with an error on SIGTERM; see $work/ppo-learner.log"
target/release/volley-learner --resume "$work/runs/ppo" \
  "learner.listen=127.0.0.1:$ppo_grpc" "learner.metrics_listen=127.0.0.1:$ppo_m" \
  >>"$work/ppo-learner.log" 2>&1 &
ppo_pid=$!
pids+=("$ppo_pid")
wait_port "$ppo_pid" "$ppo_grpc" "the resumed PPO learner"
say "PPO learner stopped after $v updates and resumed ($(elapsed))"

# Chunks the learners must reject (volley_chunks_rejected_total{reason=...}).
python3 tests/observability/bad_chunks.py "127.0.0.1:$ppo_grpc" || die "bad chunks to the PPO learner"
python3 tests/observability/bad_chunks.py "127.0.0.1:$sac_grpc" || die "bad chunks to the SAC learner"
for port in "$ppo_m" "$sac_m"; do
  for reason in protocol_version unknown_actor; do
    v=$(metric "$port" "volley_chunks_rejected_total{reason=\"$reason\"}")
    [ "${v:-0}" -ge 1 ] 2>/dev/null || die "learner on :$port did not count the $reason rejection"
  done
done
pass

# ------------------------------------------------------------------ live checks
python3 tests/observability/check.py targets --prom "$prom" --what "prometheus.yml targets" \
  --expect volley-learner=3 volley-actor=4 --timeout 30 || die "prometheus.yml targets"
pass
python3 tests/observability/check.py targets --prom "http://127.0.0.1:$k8s_port" \
  --what "prometheus-k8s.yml targets (simulated pods)" --expect-file "$work/k8s/expect.json" --timeout 30 || die "prometheus-k8s.yml targets"
pass
kill -TERM "$k8s_prom_pid"

python3 tests/observability/check.py exprs --prom "$prom" --dashboards deploy/grafana/dashboards \
  --timeout "${VOLLEY_OBS_TIMEOUT:-150}" --count-file "$work/exprs.count" || die "dashboard and alert expressions"
n_exprs=$(cat "$work/exprs.count")
passed=$((passed + n_exprs))
say "expressions checked ($(elapsed))"

python3 tests/observability/check.py alert --prom "$prom" --name VolleyActorDown --expect-none \
  || die "VolleyActorDown before the kill"
pass
t_kill=$(date +%s.%N)
{ kill -KILL "$a1_pid"; wait "$a1_pid"; } 2>/dev/null || true
python3 tests/observability/check.py alert --prom "$prom" --name VolleyActorDown \
  --instance "127.0.0.1:$a1_m" --since "$t_kill" --timeout 60 || die "VolleyActorDown for the killed actor"
pass

say "alert checked ($(elapsed))"
ok=1
say "summary: $n_exprs expressions checked, all returned series; VolleyActorDown fired for the killed actor; took $(elapsed)"
echo "observability: $passed passed, 0 failed"
