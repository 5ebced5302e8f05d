#!/usr/bin/env bash
# Multi-host test on one machine, with network namespaces standing for machines.
#
#   bash tests/multihost.sh          (as root: network namespaces need CAP_NET_ADMIN)
#
# Three namespaces, "learner", "actor1" and "actor2", each with its own address on a
# private /24, are cabled through veth pairs to a bridge in a fourth ("switch")
# namespace. deploy/hosts.sh runs PPO on CartPole-v1 over them, with VOLLEY_SSH set to
# tests/multihost/netns-ssh.sh, which runs a command "on a host": in its namespace.
# The test checks
#   - hosts.sh's errors for a malformed host list, an unknown command, an unreachable host;
#   - start: training across the network, every metrics endpoint reachable from another
#     host, the Prometheus file_sd target files;
#   - a 5 s blip of actor2's cable (its switch port down): TCP rides it out;
#   - a partition: actor2's cable stays out until actor2 notices the dead link (HTTP/2
#     keepalive; at most VOLLEY_MH_CUT_MAX s). The learner trains on from actor1 meanwhile;
#     with the cable back actor2 reconnects and sends chunks again; the learner's process
#     is the same throughout and its updates strictly increase;
#   - status, stop (no process left on any host), logs.
# Builds the release binaries first if they are missing. About 75 s on two cores, most of
# it the partition (actor and learner give up on a dead link after about 40 s). Whatever
# it creates (namespaces, links, processes, files) is removed on exit, failed or not.
#
# Environment: VOLLEY_MH_CUT_MAX (default 75), VOLLEY_MH_KEEP=1 keeps the temporary folder.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

t_start=$(date +%s.%N)
elapsed() { awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%5.1f", b - a }'; }
log() { echo "[$(elapsed)s] multihost: $*"; }

passed=0
failed=0
ok() { passed=$((passed + 1)); log "ok: $*"; }
fail() {
  failed=$((failed + 1))
  log "FAIL: $*"
  exit 1
}

cut_max="${VOLLEY_MH_CUT_MAX:-75}"

# --- preconditions: loud, never a silent skip -------------------------------------

if [ "$(id -u)" != 0 ]; then
  echo "multihost: FAIL: must run as root (network namespaces need CAP_NET_ADMIN)" >&2
  echo "multihost: 0 passed, 1 failed"
  exit 1
fi
for tool in ip python3 awk timeout setsid nohup; do
  command -v "$tool" >/dev/null || {
    echo "multihost: FAIL: '$tool' is not installed" >&2
    echo "multihost: 0 passed, 1 failed"
    exit 1
  }
done

sfx="$(printf '%x' $$)$((RANDOM % 1000))"
prefix="vmh${sfx}-"
ns_sw="${prefix}switch"
ns_l="${prefix}learner"
ns_a1="${prefix}actor1"
ns_a2="${prefix}actor2"
all_ns=("$ns_l" "$ns_a1" "$ns_a2" "$ns_sw")
net="10.$((100 + RANDOM % 100)).$((RANDOM % 250))"
tmp="$(mktemp -d /tmp/volley-multihost.XXXXXX)"

export VOLLEY_NETNS_PREFIX="$prefix"
export VOLLEY_SSH="$root/tests/multihost/netns-ssh.sh"
export VOLLEY_STATE_DIR="$tmp/state"
export VOLLEY_TARGETS_DIR="$tmp/targets"
export VOLLEY_STOP_TIMEOUT=20
hosts_sh() { "$root/deploy/hosts.sh" "$@"; }

# Live (not zombie) processes of a namespace.
ns_procs() {
  local p
  for p in $(ip netns pids "$1" 2>/dev/null); do
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" = Z ] || [ ! -e "/proc/$p" ] || echo "$p"
  done
  return 0
}

cleanup() {
  local rc=$? ns p
  trap - EXIT INT TERM ERR
  set +eE
  if [ "$rc" != 0 ] && [ -d "$tmp/state" ]; then
    for f in "$tmp"/state/*/*/logs/*.log; do
      [ -f "$f" ] || continue
      echo "----- last lines of ${f#"$tmp"/state/}"
      tail -n 15 "$f"
    done
  fi
  # Processes we started live in our namespaces: end them by pid.
  for ns in "${all_ns[@]}"; do
    for p in $(ns_procs "$ns"); do kill -KILL "$p" 2>/dev/null || true; done
  done
  for ns in "${all_ns[@]}"; do
    [ -e "/run/netns/$ns" ] && ip netns del "$ns" 2>/dev/null || true
  done
  if [ "${VOLLEY_MH_KEEP:-0}" = 1 ]; then
    echo "multihost: kept $tmp"
  else
    rm -rf "$tmp"
  fi
  if [ "$rc" = 0 ] && [ "$failed" = 0 ]; then
    echo "multihost: PASS ($(elapsed) s)"
  else
    [ "$failed" != 0 ] || failed=1
    echo "multihost: FAIL ($(elapsed) s)"
  fi
  echo "multihost: $passed passed, $failed failed"
  exit "$([ "$failed" = 0 ] && [ "$rc" = 0 ] && echo 0 || echo 1)"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
# Any other failing command fails the test with its line.
set -E
trap 'fail "line $LINENO: \"$BASH_COMMAND\" failed"' ERR

# --- binaries ---------------------------------------------------------------------

if [ ! -x target/release/volley-learner ] || [ ! -x target/release/volley-actor ]; then
  log "building the release binaries"
  cargo build --release -q -p volley-learner -p volley-actor
fi

# --- the network ------------------------------------------------------------------

log "creating namespaces ${prefix}{learner,actor1,actor2,switch} on $net.0/24"
# Every step says what failed: without CAP_NET_ADMIN (and CAP_SYS_ADMIN for
# `ip netns`) this is where the test stops, loudly.
net() {
  "$@" 2>"$tmp/err" ||
    fail "network setup: '$*' failed: $(cat "$tmp/err"); this test needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN"
}
net ip netns add "$ns_sw"
net ip -n "$ns_sw" link add br0 type bridge
net ip -n "$ns_sw" link set br0 up
net ip -n "$ns_sw" link set lo up
i=0
for ns in "$ns_l" "$ns_a1" "$ns_a2"; do
  i=$((i + 1))
  net ip netns add "$ns"
  # p1..p3: the switch ports; eth0: the host's interface.
  net ip -n "$ns_sw" link add "p$i" type veth peer name eth0 netns "$ns"
  net ip -n "$ns_sw" link set "p$i" master br0 up
  net ip -n "$ns" addr add "$net.$i/24" dev eth0
  net ip -n "$ns" link set eth0 up
  net ip -n "$ns" link set lo up
done
# Reachability across the switch (nothing listens yet: "refused" means reachable).
for i in 2 3; do
  r="$(ip netns exec "$ns_l" python3 tests/multihost/probe.py reach "$net.$i" 9)"
  [ "$r" = refused ] || fail "learner cannot reach $net.$i across the bridge ($r)"
done
ok "3 hosts on $net.0/24 reach each other through the switch"

# --- hosts.sh refuses bad input clearly -------------------------------------------

printf 'learner learner %s.1\nactors actor1 two\n' "$net" >"$tmp/bad.txt"
if out="$(hosts_sh check "$tmp/bad.txt" 2>&1)"; then fail "a malformed host list was accepted"; fi
case "$out" in *"bad.txt:2:"*count*) ;; *) fail "the malformed host list error names no line: $out" ;; esac
if out="$(hosts_sh frobnicate "$tmp/bad.txt" 2>&1)"; then fail "an unknown command was accepted"; fi
case "$out" in *"unknown command"*) ;; *) fail "unknown command: unclear error: $out" ;; esac
printf 'learner learner %s.1\nactors nosuchhost 1\n' "$net" >"$tmp/unreachable.txt"
if out="$(hosts_sh start "$tmp/unreachable.txt" --config configs/ppo_cartpole.toml run.name=never 2>&1)"; then
  fail "start with an unreachable host succeeded"
fi
case "$out" in *nosuchhost*"cannot reach"*) ;; *) fail "unreachable host: unclear error: $out" ;; esac
[ -z "$(ns_procs "$ns_l")" ] || fail "a failed start left processes behind"
ok "hosts.sh names the line of a malformed host list, an unknown command and an unreachable host (nothing started)"

# --- start ------------------------------------------------------------------------

cat >"$tmp/hosts.txt" <<EOF
# The test's host list: the namespaces stand for machines.
learner  learner           $net.1
actors   actor1       1    $net.2
actors   root@actor2  1    $net.3   # USER@HOST works too
EOF
log "deploy/hosts.sh start (PPO on CartPole-v1)"
hosts_sh start "$tmp/hosts.txt" --config configs/ppo_cartpole.toml \
  "run.dir=$tmp/runs" run.name=mh run.total_steps=1000000000 run.status_every_secs=5 \
  learner.device=cpu learner.torch_threads=1 eval.every_updates=0 ||
  fail "hosts.sh start failed"
ok "hosts.sh start: learner and 2 actors up"

learner_pid="$(awk '$1 == "learner" { print $3 }' "$tmp/state/mh/learner/pids")"
[ -n "$learner_pid" ] || fail "no learner pid recorded"
[ "$(ip netns identify "$learner_pid")" = "$ns_l" ] || fail "the learner does not run in the learner's namespace"

python3 - "$tmp/targets" "$net" <<'EOF' || fail "bad Prometheus target files"
import json, sys
d, net = sys.argv[1], sys.argv[2]
l = json.load(open(f"{d}/learner.json"))
a = json.load(open(f"{d}/actors.json"))
assert [g["targets"] for g in l] == [[f"{net}.1:9100"]], l
assert l[0]["labels"]["job"] == "volley-learner", l
assert sorted(t for g in a for t in g["targets"]) == [f"{net}.2:9101", f"{net}.3:9101"], a
assert all(g["labels"]["job"] == "volley-actor" for g in a), a
EOF
ok "Prometheus file_sd targets: $net.1:9100 (volley-learner), $net.2:9101 and $net.3:9101 (volley-actor)"

metrics_jsonl="$tmp/runs/mh/metrics.jsonl"
updates() {
  if [ -f "$metrics_jsonl" ]; then grep -c '"update"' "$metrics_jsonl" || true; else echo 0; fi
}
# metric NS URL NAME...: the values (0 for a metric not there yet), space-separated;
# nothing when the endpoint does not answer. Run inside NS, as a scraper there would.
metric() {
  local ns="$1"
  shift
  ip netns exec "$ns" python3 tests/multihost/probe.py metrics "$@" 2>/dev/null | paste -sd ' ' - || true
}
learner_alive() {
  case "$(tr '\0' '\n' <"/proc/$learner_pid/cmdline" 2>/dev/null | head -n 1)" in
    *volley-learner) return 0 ;;
    *) return 1 ;;
  esac
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
before() { awk -v a="$1" -v b="$(date +%s.%N)" -v l="$2" 'BEGIN { exit !(b - a < l) }'; }
a2_log="$tmp/state/mh/actor2/logs/actor2-0.log"
a2_metrics="http://127.0.0.1:9101/metrics"
l_metrics="http://$net.1:9100/metrics"

# --- training across the network ---------------------------------------------------

for _ in $(seq 1 300); do
  [ "$(updates)" -ge 3 ] && break
  learner_alive || fail "the learner exited"
  sleep 0.3
done
[ "$(updates)" -ge 3 ] || fail "fewer than 3 updates after 90 s"
ok "training: $(updates) updates in metrics.jsonl"

# Prometheus' view: every endpoint scraped across the network from the learner's host.
read -r u c <<<"$(metric "$ns_l" "$l_metrics" volley_updates_total volley_connected_actors)"
s1="$(metric "$ns_l" "http://$net.2:9101/metrics" volley_chunks_sent_total)"
s2="$(metric "$ns_l" "http://$net.3:9101/metrics" volley_chunks_sent_total)"
[ "${u:-0}" -ge 3 ] || fail "learner metrics: volley_updates_total '$u'"
[ "${c:-0}" = 2 ] || fail "learner metrics: volley_connected_actors '$c', expected 2"
[ "${s1:-0}" -ge 1 ] || fail "actor1 metrics: volley_chunks_sent_total '$s1'"
[ "${s2:-0}" -ge 1 ] || fail "actor2 metrics: volley_chunks_sent_total '$s2'"
ok "metrics across the network: learner updates $u, connected actors $c; chunks sent: actor1 $s1, actor2 $s2"

# --- a 5 s blip: TCP rides it out ----------------------------------------------------

read -r blip_sent blip_rec <<<"$(metric "$ns_a2" "$a2_metrics" volley_chunks_sent_total volley_reconnects_total)"
log "cable of actor2 out for 5 s (its switch port down)"
ip -n "$ns_sw" link set p3 down
sleep 5
ip -n "$ns_sw" link set p3 up
t_back=$(now)
blip_resumed=""
while before "$t_back" 40; do
  read -r s r <<<"$(metric "$ns_a2" "$a2_metrics" volley_chunks_sent_total volley_reconnects_total)"
  if [ "${s:-0}" -gt "$((blip_sent + 2))" ]; then blip_resumed=$(since "$t_back"); break; fi
  sleep 0.3
done
[ -n "$blip_resumed" ] || fail "actor2 sent nothing within 40 s after a 5 s blip"
learner_alive || fail "the learner exited"
if [ "${r:-0}" = "$blip_rec" ]; then how="same connection, no reconnection"; else how="after reconnecting"; fi
ok "after a 5 s blip actor2 sends again ${blip_resumed}s after the cable is back ($how)"

# --- a partition until actor2 notices ------------------------------------------------

u_cut="$(updates)"
read -r sent_cut rec_cut <<<"$(metric "$ns_a2" "$a2_metrics" volley_chunks_sent_total volley_reconnects_total)"
[ -n "$rec_cut" ] || fail "actor2's metrics do not answer"
lines_cut="$(wc -l <"$a2_log")"
log "cable of actor2 out: a silent partition (packets vanish); waiting up to ${cut_max}s for actor2 to notice"
ip -n "$ns_sw" link set p3 down
t_cut=$(now)
noticed=""
learner_noticed=""
while before "$t_cut" "$cut_max"; do
  learner_alive || fail "the learner exited during the partition"
  if [ -z "$learner_noticed" ]; then
    c="$(metric "$ns_l" "$l_metrics" volley_connected_actors)"
    [ "${c:-2}" -ge 2 ] || learner_noticed=$(since "$t_cut")
  fi
  if tail -n +"$((lines_cut + 1))" "$a2_log" | grep -q "lost the learner"; then
    noticed=$(since "$t_cut")
    break
  fi
  sleep 0.5
done
cut_len=$(since "$t_cut")
u_during="$(updates)"
sent_during="$(metric "$ns_a2" "$a2_metrics" volley_chunks_sent_total)"
log "during the partition (${cut_len}s): learner updates $u_cut -> $u_during; actor2 chunks sent $sent_cut -> $sent_during; learner's weight streams down to 1 after ${learner_noticed:-(not seen)}s"
[ "$u_during" -ge $((u_cut + 2)) ] || fail "the learner did not train on during the partition ($u_cut -> $u_during updates)"
ok "the learner trained on from actor1 during the partition: $u_cut -> $u_during updates"
if [ -n "$noticed" ]; then
  ok "actor2 noticed the dead link after ${noticed}s ('lost the learner ... reconnecting' in its log)"
else
  log "actor2 did not notice the dead link within ${cut_max}s (HTTP/2 keepalive should end the connection)"
fi

log "cable of actor2 back in"
ip -n "$ns_sw" link set p3 up
t_back=$(now)
reconnected=""
resumed=""
while before "$t_back" 60; do
  learner_alive || fail "the learner exited after the partition"
  read -r s r <<<"$(metric "$ns_a2" "$a2_metrics" volley_chunks_sent_total volley_reconnects_total)"
  [ -n "$reconnected" ] || [ "${r:-0}" -le "$rec_cut" ] || reconnected=$(since "$t_back")
  # Chunks the learner acknowledged after the reconnection.
  [ -z "$reconnected" ] || [ -n "$resumed" ] || [ "${s:-0}" -le "$sent_during" ] || resumed=$(since "$t_back")
  [ -z "$resumed" ] || break
  sleep 0.3
done
[ -n "$reconnected" ] || fail "actor2 did not reconnect within 60 s of the cable coming back (volley_reconnects_total ${r:-?}, chunks sent ${s:-?}); the partition lasted ${cut_len}s"
[ -n "$resumed" ] || fail "actor2 reconnected but sent no chunk within 60 s (chunks sent ${s:-?})"
ok "actor2 reconnected ${reconnected}s after the cable came back (volley_reconnects_total $rec_cut -> $r) and sends again (chunks sent $sent_during -> $s)"

# Training on with both, the same learner process, updates in order.
u_after="$(updates)"
sleep 2
[ "$(updates)" -gt "$u_after" ] || fail "no update after the partition"
learner_alive || fail "the learner exited"
c="$(metric "$ns_l" "$l_metrics" volley_connected_actors)"
[ "${c:-0}" -ge 2 ] || fail "the learner counts ${c:-?} connected actors after the partition, expected 2"
python3 - "$metrics_jsonl" <<'PY' || fail "updates in metrics.jsonl are not strictly increasing"
import json, sys
u = [json.loads(l)["update"] for l in open(sys.argv[1]) if l.strip()]
assert all(b > a for a, b in zip(u, u[1:])), u
PY
ok "same learner process (pid $learner_pid) throughout, $c weight streams open; $(updates) updates, strictly increasing"

# --- status, stop, logs -------------------------------------------------------------

hosts_sh status "$tmp/hosts.txt" >"$tmp/status.out" || { cat "$tmp/status.out"; fail "hosts.sh status: not all running"; }
grep -q "3 running, 0 exited" "$tmp/status.out" || { cat "$tmp/status.out"; fail "hosts.sh status did not report 3 running"; }
ok "hosts.sh status: 3 running"

log "deploy/hosts.sh stop"
hosts_sh stop "$tmp/hosts.txt" || fail "hosts.sh stop failed"
for ns in "$ns_l" "$ns_a1" "$ns_a2"; do
  left="$(ns_procs "$ns")"
  [ -z "$left" ] || fail "processes left in ${ns#"$prefix"} after stop: $(ps -o pid=,args= -p "${left//$'\n'/,}")"
done
if hosts_sh status "$tmp/hosts.txt" >"$tmp/status.out"; then fail "hosts.sh status succeeded after stop"; fi
grep -q "0 running, 3 exited" "$tmp/status.out" || { cat "$tmp/status.out"; fail "hosts.sh status after stop"; }
grep -q '^\[\]$' "$tmp/targets/actors.json" || fail "stop left the actor targets in place"
ok "hosts.sh stop: no volley process left on any host; status says 3 exited; targets emptied"

hosts_sh logs "$tmp/hosts.txt" --to "$tmp/collected" || fail "hosts.sh logs failed"
for f in learner/logs/learner.log learner/mh/metrics.jsonl learner/mh/config.toml \
  actor1/logs/actor1-0.log actor2/logs/actor2-0.log; do
  [ -s "$tmp/collected/$f" ] || fail "hosts.sh logs: $f missing"
done
grep -q "reconnecting" "$tmp/collected/actor2/logs/actor2-0.log" || fail "actor2's log does not say it reconnected"
ok "hosts.sh logs: learner log, metrics.jsonl, config.toml and both actor logs gathered"
