#!/usr/bin/env bash
# Runs volley on several machines from a host list, over ssh: no cluster manager.
# `deploy/hosts.sh --help` documents the host list, the commands, the ports to open
# and the environment variables; deploy/hosts.example is a host list to copy.
set -euo pipefail

prog="deploy/hosts.sh"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
deploy/hosts.sh: one volley learner and N actors per host, started over ssh.

Usage:
  deploy/hosts.sh start  HOSTLIST [--config FILE] [--device D] [--actor-args 'ARGS']
                                  [--targets-dir DIR] [key=value ...]
  deploy/hosts.sh status HOSTLIST [--name RUN]
  deploy/hosts.sh stop   HOSTLIST [--name RUN] [--timeout SECONDS] [--targets-dir DIR]
  deploy/hosts.sh logs   HOSTLIST [--name RUN] [--to DIR]
  deploy/hosts.sh check  HOSTLIST            parse the list and print the plan (no host contacted)

Host list (see deploy/hosts.example): one entry a line; '#' starts a comment.
  learner [USER@]HOST [ADDRESS]         exactly one. ADDRESS: how actors and Prometheus
                                        reach the learner (default: HOST)
  actors  [USER@]HOST COUNT [ADDRESS]   COUNT actors on HOST (one line per host).
                                        ADDRESS: how Prometheus reaches HOST (default: HOST)

start   Starts the learner on its host (--config FILE, default configs/ppo_procgen.toml,
        key=value overrides passed through, learner.listen=0.0.0.0:50051 and
        learner.metrics_listen=0.0.0.0:9100 unless overridden), waits until its gRPC
        port accepts connections, then starts COUNT actors on each actor host:
        `volley-actor run --learner ADDRESS:50051 --actor-id HOST-i
        --metrics-listen 0.0.0.0:(9101+i)`, i = 0..COUNT-1. Processes run detached
        (nohup setsid) and outlive the ssh session. The run is named by run.name=...
        (default CONFIG-YYYYmmdd-HHMMSS). Each host keeps STATE/RUN/HOST/pids
        ("role id pid" lines) and STATE/RUN/HOST/logs/*.log in the checkout. Hosts are
        checked first (reachable, binaries built, config present); if anything fails
        after the learner started, what started is stopped again.
        Writes Prometheus file_sd targets TARGETS/learner.json (job volley-learner) and
        TARGETS/actors.json (job volley-actor), with labels run and host.
status  Lists each recorded process per host as running or exited; exit status 0 only
        when all are running.
stop    Actors first, then the learner: SIGTERM, wait (--timeout, default 30 s), then
        SIGKILL for stragglers; only the recorded PIDs, and only while they still are
        volley processes. Empties the target files if they describe this run.
logs    Copies every host's logs (and the learner's metrics.jsonl and config.toml) to
        DIR/HOST/ (default STATE/RUN/collected on this machine).
RUN defaults to the run last started from this checkout (STATE/last).

Ports to open (TCP):
  50051          learner gRPC, from every actor host            (VOLLEY_PORT)
  9100           learner metrics, from Prometheus               (VOLLEY_METRICS_PORT)
  9101..9100+N   actor metrics on each actor host, from Prometheus (VOLLEY_METRICS_PORT+1+i)

Environment:
  VOLLEY_SSH          remote runner, invoked as `$VOLLEY_SSH HOST 'COMMAND'` (split on
                      blanks; COMMAND is a `bash -c '...'` string; exit status 255 means
                      "host unreachable"). Default: ssh -o BatchMode=yes -o ConnectTimeout=10
  VOLLEY_REMOTE_DIR   the volley checkout (built binaries) on every host; default: this
                      checkout's path, which must then be the same on every host
  VOLLEY_BIN_DIR      binaries, relative to VOLLEY_REMOTE_DIR (default target/release)
  VOLLEY_STATE_DIR    STATE: pid files and logs, relative to VOLLEY_REMOTE_DIR on each host
                      and to this checkout here (default runs/hosts)
  VOLLEY_TARGETS_DIR  TARGETS, or --targets-dir (default deploy/prometheus/targets)
  VOLLEY_PORT         learner gRPC port (default 50051)
  VOLLEY_METRICS_PORT learner metrics port (default 9100; actor i on a host: +1+i)
  VOLLEY_START_TIMEOUT seconds to wait for the learner's port (default 180)
  VOLLEY_STOP_TIMEOUT  seconds between SIGTERM and SIGKILL (default 30; or --timeout)
  VOLLEY_AUTH_TOKEN   passed to the actors (learner.auth_token=... also sets it)
EOF
}

die() { echo "$prog: $*" >&2; exit 2; }
say() { echo "hosts: $*"; }

# ---------------------------------------------------------------------------------
# Arguments

[ $# -ge 1 ] || { usage >&2; exit 2; }
case "$1" in -h|--help|help) usage; exit 0 ;; esac
cmd="$1"; shift
case "$cmd" in
  start|stop|status|logs|check) ;;
  *) die "unknown command '$cmd' (start, stop, status, logs, check; see --help)" ;;
esac
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ $# -ge 1 ] || die "$cmd needs a host list file (see --help)"
hostlist="$1"; shift
[ -f "$hostlist" ] || die "host list '$hostlist' not found"

config="configs/ppo_procgen.toml"
device=""
actor_args=""
name=""
stop_timeout="${VOLLEY_STOP_TIMEOUT:-30}"
collect_to=""
targets_dir="${VOLLEY_TARGETS_DIR:-deploy/prometheus/targets}"
overrides=()
need() { [ -n "${2:-}" ] || die "$1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --config) need "$1" "${2:-}"; config="$2"; shift 2 ;;
    --config=*) config="${1#*=}"; shift ;;
    --device) need "$1" "${2:-}"; device="$2"; shift 2 ;;
    --device=*) device="${1#*=}"; shift ;;
    --actor-args) need "$1" "${2:-}"; actor_args="$2"; shift 2 ;;
    --actor-args=*) actor_args="${1#*=}"; shift ;;
    --name) need "$1" "${2:-}"; name="$2"; shift 2 ;;
    --name=*) name="${1#*=}"; shift ;;
    --timeout) need "$1" "${2:-}"; stop_timeout="$2"; shift 2 ;;
    --timeout=*) stop_timeout="${1#*=}"; shift ;;
    --to) need "$1" "${2:-}"; collect_to="$2"; shift 2 ;;
    --to=*) collect_to="${1#*=}"; shift ;;
    --targets-dir) need "$1" "${2:-}"; targets_dir="$2"; shift 2 ;;
    --targets-dir=*) targets_dir="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *=*) [ "$cmd" = start ] || die "$cmd takes no config overrides ('$1')"; overrides+=("$1"); shift ;;
    *) die "unknown argument '$1' for $cmd (see --help)" ;;
  esac
done
case "$stop_timeout" in ''|*[!0-9]*) die "--timeout must be a whole number of seconds, got '$stop_timeout'" ;; esac

port="${VOLLEY_PORT:-50051}"
metrics_port="${VOLLEY_METRICS_PORT:-9100}"
start_timeout="${VOLLEY_START_TIMEOUT:-180}"
for v in port metrics_port start_timeout; do
  case "${!v}" in ''|*[!0-9]*) die "$v must be a number, got '${!v}'" ;; esac
done
read -r -a ssh_cmd <<<"${VOLLEY_SSH:-ssh -o BatchMode=yes -o ConnectTimeout=10}"
[ ${#ssh_cmd[@]} -gt 0 ] || die "VOLLEY_SSH is empty"
remote_dir="${VOLLEY_REMOTE_DIR:-$root}"
bin_dir="${VOLLEY_BIN_DIR:-target/release}"
state_dir="${VOLLEY_STATE_DIR:-runs/hosts}"
# The same state directory seen from this machine.
case "$state_dir" in /*) local_state="$state_dir" ;; *) local_state="$root/$state_dir" ;; esac

# ---------------------------------------------------------------------------------
# The host list

L_HOST=""; L_KEY=""; L_ADDR=""; L_LINE=0
A_HOST=(); A_KEY=(); A_COUNT=(); A_ADDR=(); A_LINE=()

host_re='^([A-Za-z0-9._-]+@)?[A-Za-z0-9._:%-]+$'
addr_re='^[A-Za-z0-9._:%-]+$'

parse_hosts() {
  local file="$1" n=0 line kind host count addr extra i
  local where
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line="${line%$'\r'}"
    line="${line%%#*}"
    read -r kind host count addr extra <<<"$line" || true
    [ -n "${kind:-}" ] || continue
    where="$file:$n"
    case "$kind" in
      learner)
        [ -n "${host:-}" ] || die "$where: 'learner' needs a host: learner [USER@]HOST [ADDRESS]"
        [ -z "${addr:-}" ] || die "$where: too many fields: learner [USER@]HOST [ADDRESS]"
        [ -z "$L_HOST" ] || die "$where: a second learner line (the first is on line $L_LINE); a run has one learner"
        [[ "$host" =~ $host_re ]] || die "$where: '$host' is not a host name ([USER@]HOST)"
        addr="${count:-}"
        [ -z "$addr" ] || [[ "$addr" =~ $addr_re ]] || die "$where: '$addr' is not an address"
        L_HOST="$host"; L_KEY="${host#*@}"; L_ADDR="${addr:-${host#*@}}"; L_LINE=$n
        ;;
      actors)
        [ -n "${host:-}" ] && [ -n "${count:-}" ] || die "$where: 'actors' needs a host and a count: actors [USER@]HOST COUNT [ADDRESS]"
        [ -z "${extra:-}" ] || die "$where: too many fields: actors [USER@]HOST COUNT [ADDRESS]"
        [[ "$host" =~ $host_re ]] || die "$where: '$host' is not a host name ([USER@]HOST)"
        case "$count" in
          ''|*[!0-9]*) die "$where: the actor count must be a whole number, got '$count'" ;;
        esac
        [ "$((10#$count))" -ge 1 ] || die "$where: the actor count must be at least 1"
        [ -z "${addr:-}" ] || [[ "$addr" =~ $addr_re ]] || die "$where: '$addr' is not an address"
        for i in "${!A_KEY[@]}"; do
          [ "${A_KEY[$i]}" != "${host#*@}" ] || die "$where: host '${host#*@}' already has an actors line (line ${A_LINE[$i]}); give it one line with the total count"
        done
        A_HOST+=("$host"); A_KEY+=("${host#*@}"); A_COUNT+=("$((10#$count))")
        A_ADDR+=("${addr:-${host#*@}}"); A_LINE+=("$n")
        ;;
      *) die "$where: unknown entry '$kind' (expected 'learner' or 'actors')" ;;
    esac
  done <"$file"
  [ -n "$L_HOST" ] || die "$file: no 'learner HOST' line"
  [ ${#A_HOST[@]} -gt 0 ] || die "$file: no 'actors HOST COUNT' line"
}
parse_hosts "$hostlist"

# Every host once (the learner's host may run actors too), by key (HOST without USER@).
H_HOST=("$L_HOST"); H_KEY=("$L_KEY")
for i in "${!A_HOST[@]}"; do
  seen=0
  for k in "${H_KEY[@]}"; do [ "$k" = "${A_KEY[$i]}" ] && seen=1; done
  [ "$seen" = 1 ] || { H_HOST+=("${A_HOST[$i]}"); H_KEY+=("${A_KEY[$i]}"); }
done

hostport() { case "$1" in *:*) echo "[$1]:$2" ;; *) echo "$1:$2" ;; esac; }

# ---------------------------------------------------------------------------------
# Remote side: these functions run on the hosts (shipped with `declare -f`, see
# remote()), in VOLLEY_REMOTE_DIR, with the variables that remote() declares.

r_prelude() {
  set -u
  die() { echo "error: $*" >&2; exit 1; }
  cd "$RDIR" 2>/dev/null || die "no directory $RDIR on this host: the volley checkout must be at the same path on every host (or set VOLLEY_REMOTE_DIR)"
  st="$STATE/$NAME/$HOSTKEY"
  case "$st" in /*) ;; *) st="$RDIR/$st" ;; esac
}

# A recorded pid that still is a volley process (not a zombie, not a reused pid).
r_alive() {
  local exe
  kill -0 "$1" 2>/dev/null || return 1
  exe="$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 1)"
  case "$exe" in *volley-learner|*volley-actor) return 0 ;; *) return 1 ;; esac
}

r_pid_of() {
  [ -f "$st/pids" ] || return 0
  awk -v id="$1" '$2 == id { p = $3 } END { if (p != "") print p }' "$st/pids"
}

# Starts "$@" detached (own session, no terminal, SIGHUP ignored); the process records
# "role id pid" itself before it becomes the program, so the pid is the program's.
r_launch() {
  local role="$1" id="$2" log="$3"
  shift 3
  nohup setsid bash -c 'echo "$1 $2 $$" >>"$3"; shift 3; exec "$@"' volley-launch \
    "$role" "$id" "$st/pids" "$@" </dev/null >"$log" 2>&1 &
}

r_wait_pid() {
  local id="$1" pid="" k
  for k in $(seq 1 100); do
    pid="$(r_pid_of "$id")"
    [ -n "$pid" ] && break
    sleep 0.05
  done
  echo "$pid"
}

r_preflight() {
  r_prelude
  if [ "$ROLES" != actors ]; then
    [ -x "$BIN/volley-learner" ] || die "$RDIR/$BIN/volley-learner is missing: build it on this host (cargo build --release -p volley-learner)"
    [ -f "$CONFIG" ] || die "config $CONFIG not found in $RDIR"
  fi
  if [ "$ROLES" != learner ]; then
    [ -x "$BIN/volley-actor" ] || die "$RDIR/$BIN/volley-actor is missing: build it on this host (cargo build --release -p volley-actor)"
  fi
  [ ! -e "$st/pids" ] || die "run $NAME was started on this host before ($st/pids exists): pick another run.name"
  command -v setsid >/dev/null || die "setsid not found (util-linux)"
  command -v nohup >/dev/null || die "nohup not found (coreutils)"
  mkdir -p "$st/logs" || die "cannot create $st/logs"
  echo "ok: $(uname -n), $(nproc 2>/dev/null || echo '?') cores"
}

r_start_learner() {
  r_prelude
  local log="$st/logs/learner.log" pid="" t0=$SECONDS rundir
  mkdir -p "$st/logs"
  r_launch learner learner "$log" "$BIN/volley-learner" "${LEARNER_ARGS[@]}"
  pid="$(r_wait_pid learner)"
  [ -n "$pid" ] || die "the learner did not start; see $log"
  while :; do
    if ! r_alive "$pid"; then
      echo "error: the learner exited; the end of $log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$CHECK_ADDR" "$PORT" 2>/dev/null && break
    [ $((SECONDS - t0)) -lt "$TIMEOUT" ] ||
      die "the learner (pid $pid) did not open port $PORT within ${TIMEOUT}s; see $log"
    sleep 0.2
  done
  rundir="$(sed -n 's/^volley-learner: run .* in \(.*\) | .* | device .*$/\1/p' "$log" | head -n 1)"
  [ -z "$rundir" ] || echo "$rundir" >"$st/rundir"
  echo "learner pid $pid accepts connections on port $PORT after $((SECONDS - t0))s; log $log${rundir:+; run directory $rundir}"
}

r_start_actors() {
  r_prelude
  local i id pid bad=0 pids=() ids=()
  mkdir -p "$st/logs"
  if ! timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$LADDR" "$PORT" 2>/dev/null; then
    echo "warning: cannot reach the learner at $LADDR:$PORT from this host: check the learner's ADDRESS in the host list and that port $PORT is open to this host (the actors keep retrying)" >&2
  fi
  for ((i = 0; i < COUNT; i++)); do
    id="$HOSTKEY-$i"
    r_launch actor "$id" "$st/logs/$id.log" "$BIN/volley-actor" run --learner "$LEARNER" \
      --actor-id "$id" --metrics-listen "$MLISTEN:$((AMPORT + i))" \
      "${ACTOR_ARGS[@]+"${ACTOR_ARGS[@]}"}"
  done
  for ((i = 0; i < COUNT; i++)); do
    id="$HOSTKEY-$i"
    pid="$(r_wait_pid "$id")"
    [ -n "$pid" ] || die "actor $id did not start; see $st/logs/$id.log"
    pids+=("$pid"); ids+=("$id")
  done
  # Bad flags or a metrics port in use end an actor within a moment.
  sleep 1
  for i in "${!pids[@]}"; do
    if ! r_alive "${pids[$i]}"; then
      echo "error: actor ${ids[$i]} exited at once; the end of $st/logs/${ids[$i]}.log:" >&2
      tail -n 10 "$st/logs/${ids[$i]}.log" >&2
      bad=1
    fi
  done
  [ "$bad" = 0 ] || exit 1
  echo "$COUNT actors (pids ${pids[*]}), metrics port$([ "$COUNT" = 1 ] && echo " $AMPORT" || echo "s $AMPORT..$((AMPORT + COUNT - 1))"); logs $st/logs/"
}

r_status() {
  r_prelude
  local role id pid
  [ -f "$st/pids" ] || { echo "none: no processes recorded for run $NAME"; return 0; }
  while read -r role id pid; do
    [ -n "${pid:-}" ] || continue
    if r_alive "$pid"; then echo "running: $role $id pid $pid"; else echo "exited: $role $id pid $pid"; fi
  done <"$st/pids"
}

r_stop() {
  r_prelude
  local role id pid p left k pids=() ids=() killed=()
  [ -f "$st/pids" ] || { echo "none: no processes recorded for run $NAME"; return 0; }
  while read -r role id pid; do
    [ "$role" = "$ROLE" ] && [ -n "${pid:-}" ] || continue
    r_alive "$pid" && { pids+=("$pid"); ids+=("$id"); }
  done <"$st/pids"
  [ ${#pids[@]} -gt 0 ] || { echo "no live $ROLE process"; return 0; }
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((k = 0; k < TIMEOUT * 5; k++)); do
    left=0
    for p in "${pids[@]}"; do r_alive "$p" && left=1; done
    [ "$left" = 1 ] || break
    sleep 0.2
  done
  for k in "${!pids[@]}"; do
    if r_alive "${pids[$k]}"; then
      kill -KILL "${pids[$k]}" 2>/dev/null || true
      killed+=("${ids[$k]}")
    fi
  done
  if [ ${#killed[@]} -gt 0 ]; then
    echo "stopped ${#pids[@]} $ROLE process(es) (${ids[*]}); SIGKILL after ${TIMEOUT}s: ${killed[*]}"
  else
    echo "stopped ${#pids[@]} $ROLE process(es) (${ids[*]})"
  fi
}

r_logs() {
  r_prelude
  local rd parts=()
  [ -d "$st/logs" ] || die "no logs of run $NAME here ($st/logs)"
  rd=""
  [ ! -f "$st/rundir" ] || rd="$(cat "$st/rundir")"
  if [ -n "$rd" ] && [ -d "$rd" ]; then
    for f in metrics.jsonl config.toml; do
      [ ! -f "$rd/$f" ] || parts+=("$(basename "$rd")/$f")
    done
  fi
  if [ ${#parts[@]} -gt 0 ]; then
    tar -cf - -C "$st" logs -C "$(dirname "$rd")" "${parts[@]}"
  else
    tar -cf - -C "$st" logs
  fi
}

# ---------------------------------------------------------------------------------
# Running the remote side

# A string as one single-quoted word for the remote login shell (sh, bash, zsh, dash).
squote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Runs remote function $2 on host $1; variables of the script come from the caller's
# RDIR STATE NAME ... (declared with declare -p).
remote() {
  local host="$1" fn="$2" script
  script="$(declare -p RDIR STATE NAME BIN HOSTKEY PORT TIMEOUT ROLES ROLE CONFIG CHECK_ADDR \
    LADDR LEARNER MLISTEN AMPORT COUNT LEARNER_ARGS ACTOR_ARGS 2>/dev/null)
$(declare -f r_prelude r_alive r_pid_of r_launch r_wait_pid "$fn")
${AUTH:+export VOLLEY_AUTH_TOKEN=$(printf '%q' "$AUTH")}
$fn"
  "${ssh_cmd[@]}" "$host" "bash -c $(squote "$script")"
}

# Prints a remote result, each line marked with the host; says what exit 255 means.
report() {
  local key="$1" rc="$2" out="$3"
  if [ -s "$out" ]; then sed "s/^/  $key: /" "$out"; fi
  if [ "$rc" = 255 ]; then
    echo "  $key: error: cannot reach this host with '${ssh_cmd[*]}' (exit 255): check the name, the network and ssh keys" >&2
  elif [ "$rc" != 0 ] && ! grep -q '^error:' "$out" 2>/dev/null; then
    echo "  $key: error: the remote command failed (exit $rc)" >&2
  fi
}

# Runs remote function $1 on every host of H_HOST at once; per-host variables come from
# set_host_vars. Returns the number of hosts that failed.
tmpdir="$(mktemp -d)"
trap 'rm -rf "$tmpdir"' EXIT
on_all_hosts() {
  local fn="$1" i rc failed=0
  for i in "${!H_HOST[@]}"; do
    (
      set_host_vars "$i"
      set +e
      remote "${H_HOST[$i]}" "$fn" >"$tmpdir/$fn.$i" 2>&1
      echo $? >"$tmpdir/$fn.$i.rc"
    ) &
  done
  wait
  for i in "${!H_HOST[@]}"; do
    rc="$(cat "$tmpdir/$fn.$i.rc")"
    report "${H_KEY[$i]}" "$rc" "$tmpdir/$fn.$i"
    [ "$rc" = 0 ] || failed=$((failed + 1))
  done
  return "$failed"
}

set_host_vars() {
  local i="$1" j learner=0 actors=0
  HOSTKEY="${H_KEY[$i]}"
  [ "$HOSTKEY" != "$L_KEY" ] || learner=1
  for j in "${!A_KEY[@]}"; do
    [ "${A_KEY[$j]}" != "$HOSTKEY" ] || actors=1
  done
  case "$learner$actors" in
    11) ROLES=both ;;
    10) ROLES=learner ;;
    *) ROLES=actors ;;
  esac
}

RDIR="$remote_dir"; STATE="$state_dir"; BIN="$bin_dir"; PORT="$port"; NAME=""
TIMEOUT="$stop_timeout"; ROLES=""; ROLE=""; CONFIG="$config"; CHECK_ADDR=""; LADDR=""
LEARNER=""; MLISTEN="0.0.0.0"; AMPORT="$((metrics_port + 1))"; COUNT=0; HOSTKEY=""
LEARNER_ARGS=(); ACTOR_ARGS=(); AUTH="${VOLLEY_AUTH_TOKEN:-}"

resolve_name() {
  if [ -z "$name" ]; then
    [ -f "$local_state/last" ] || die "no --name given and no run was started from this checkout ($local_state/last is missing)"
    name="$(cat "$local_state/last")"
  fi
  case "$name" in ''|*/*|.*) die "bad run name '$name'" ;; esac
  NAME="$name"
}

write_targets() {
  local dir="$1" i j targets tmp
  mkdir -p "$dir" || die "cannot create the targets directory $dir"
  tmp="$dir/.learner.json.tmp"
  printf '[\n  {"targets": ["%s"], "labels": {"job": "volley-learner", "run": "%s", "host": "%s"}}\n]\n' \
    "$(hostport "$L_ADDR" "$learner_metrics_port")" "$NAME" "$L_KEY" >"$tmp"
  mv -f "$tmp" "$dir/learner.json"
  tmp="$dir/.actors.json.tmp"
  {
    echo "["
    for i in "${!A_HOST[@]}"; do
      targets=""
      for ((j = 0; j < A_COUNT[i]; j++)); do
        targets+="${targets:+, }\"$(hostport "${A_ADDR[$i]}" $((metrics_port + 1 + j)))\""
      done
      printf '  {"targets": [%s], "labels": {"job": "volley-actor", "run": "%s", "host": "%s"}}%s\n' \
        "$targets" "$NAME" "${A_KEY[$i]}" "$([ "$i" -lt $((${#A_HOST[@]} - 1)) ] && echo ,)"
    done
    echo "]"
  } >"$tmp"
  mv -f "$tmp" "$dir/actors.json"
}

case "$targets_dir" in /*) targets_path="$targets_dir" ;; *) targets_path="$root/$targets_dir" ;; esac

# ---------------------------------------------------------------------------------
# Commands

learner_metrics_port="$metrics_port"

cmd_check() {
  local i
  say "learner on $L_HOST, reached at $(hostport "$L_ADDR" "$port") (gRPC) and $(hostport "$L_ADDR" "$metrics_port") (metrics)"
  for i in "${!A_HOST[@]}"; do
    say "${A_COUNT[$i]} actors on ${A_HOST[$i]}: ids ${A_KEY[$i]}-0..${A_KEY[$i]}-$((A_COUNT[i] - 1)), metrics $(hostport "${A_ADDR[$i]}" $((metrics_port + 1)))..$((metrics_port + A_COUNT[i]))"
  done
  say "remote checkout $remote_dir, runner: ${ssh_cmd[*]}"
}

cmd_start() {
  local i o listen="" mlisten="" total=0
  [ -f "$root/$config" ] || [ -f "$config" ] || say "note: $config is not in this checkout; it must exist in $remote_dir on $L_KEY"
  case "$config" in /*) ;; *) [ -f "$config" ] && [ ! -f "$root/$config" ] && config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")" ;; esac
  CONFIG="$config"
  for o in "${overrides[@]+"${overrides[@]}"}"; do
    case "$o" in
      run.name=*) name="${o#run.name=}" ;;
      learner.listen=*) listen="${o#learner.listen=}" ;;
      learner.metrics_listen=*) mlisten="${o#learner.metrics_listen=}" ;;
      learner.auth_token=*) AUTH="${o#learner.auth_token=}" ;;
    esac
  done
  if [ -z "$name" ]; then
    name="$(basename "$config" .toml)-$(date +%Y%m%d-%H%M%S)"
    overrides+=("run.name=$name")
  fi
  NAME="$name"
  case "$name" in */*|.*) die "run.name '$name' must be a plain name" ;; esac
  # The learner's ports follow its listen overrides, if any.
  [ -z "$listen" ] || PORT="${listen##*:}"
  [ -z "$mlisten" ] || learner_metrics_port="${mlisten##*:}"
  CHECK_ADDR=127.0.0.1
  case "${listen%:*}" in ''|0.0.0.0|'[::]'|'::') ;; *) CHECK_ADDR="${listen%:*}"; CHECK_ADDR="${CHECK_ADDR#[}"; CHECK_ADDR="${CHECK_ADDR%]}" ;; esac
  LEARNER_ARGS=(--config "$CONFIG")
  [ -z "$device" ] || LEARNER_ARGS+=(--device "$device")
  LEARNER_ARGS+=("learner.listen=0.0.0.0:$PORT" "learner.metrics_listen=0.0.0.0:$learner_metrics_port")
  LEARNER_ARGS+=("${overrides[@]}")
  read -r -a ACTOR_ARGS <<<"$actor_args"
  LEARNER="$(hostport "$L_ADDR" "$PORT")"
  LADDR="$L_ADDR"
  for i in "${!A_COUNT[@]}"; do total=$((total + A_COUNT[i])); done

  say "run $NAME: learner on $L_KEY, $total actors on ${#A_HOST[@]} host(s); checking hosts"
  if ! on_all_hosts r_preflight; then
    die "start aborted before anything started (see the errors above)"
  fi
  mkdir -p "$local_state" && echo "$NAME" >"$local_state/last"

  say "starting the learner on $L_KEY"
  local rc=0
  HOSTKEY="$L_KEY"; TIMEOUT="$start_timeout"
  set +e
  remote "$L_HOST" r_start_learner >"$tmpdir/learner" 2>&1
  rc=$?
  set -e
  report "$L_KEY" "$rc" "$tmpdir/learner"
  TIMEOUT="$stop_timeout"
  if [ "$rc" != 0 ]; then
    stop_everything
    die "the learner did not start (see above); anything started was stopped"
  fi

  say "starting actors, learner address $LEARNER"
  local failed=0
  for i in "${!A_HOST[@]}"; do
    (
      HOSTKEY="${A_KEY[$i]}"; COUNT="${A_COUNT[$i]}"
      set +e
      remote "${A_HOST[$i]}" r_start_actors >"$tmpdir/actors.$i" 2>&1
      echo $? >"$tmpdir/actors.$i.rc"
    ) &
  done
  wait
  for i in "${!A_HOST[@]}"; do
    rc="$(cat "$tmpdir/actors.$i.rc")"
    report "${A_KEY[$i]}" "$rc" "$tmpdir/actors.$i"
    [ "$rc" = 0 ] || failed=$((failed + 1))
  done
  if [ "$failed" != 0 ]; then
    stop_everything
    die "actors failed to start on $failed host(s) (see above); everything started was stopped"
  fi

  write_targets "$targets_path"
  say "Prometheus targets: $targets_path/learner.json, $targets_path/actors.json"
  say "learner metrics http://$(hostport "$L_ADDR" "$learner_metrics_port")/metrics"
  say "running; '$prog status $hostlist' shows the processes, '$prog stop $hostlist' stops them"
}

stop_everything() {
  local failed=0
  TIMEOUT="$stop_timeout"
  ROLE=actor
  on_all_hosts r_stop || failed=$?
  ROLE=learner
  local i
  for i in "${!H_KEY[@]}"; do
    [ "${H_KEY[$i]}" = "$L_KEY" ] || continue
    set +e
    ( set_host_vars "$i"; remote "${H_HOST[$i]}" r_stop ) >"$tmpdir/stop-learner" 2>&1
    local rc=$?
    set -e
    report "$L_KEY" "$rc" "$tmpdir/stop-learner"
    [ "$rc" = 0 ] || failed=$((failed + 1))
  done
  return "$failed"
}

cmd_stop() {
  resolve_name
  say "stopping run $NAME: actors, then the learner (SIGTERM, SIGKILL after ${stop_timeout}s)"
  local failed=0
  stop_everything || failed=$?
  # Prometheus stops scraping: the target files of this run become empty lists.
  local f
  for f in learner.json actors.json; do
    if [ -f "$targets_path/$f" ] && grep -q "\"run\": \"$NAME\"" "$targets_path/$f"; then
      echo "[]" >"$targets_path/.$f.tmp" && mv -f "$targets_path/.$f.tmp" "$targets_path/$f"
    fi
  done
  [ "$failed" = 0 ] || die "could not stop everything on $failed host(s) (see above)"
  say "stopped"
}

cmd_status() {
  resolve_name
  local failed=0 i
  on_all_hosts r_status || failed=$?
  local running=0 exited=0
  for i in "${!H_HOST[@]}"; do
    running=$((running + $(grep -c '^running:' "$tmpdir/r_status.$i" || true)))
    exited=$((exited + $(grep -c '^exited:' "$tmpdir/r_status.$i" || true)))
  done
  if [ "$failed" = 0 ]; then
    say "run $NAME: $running running, $exited exited"
  else
    say "run $NAME: $running running, $exited exited, $failed host(s) did not answer"
  fi
  [ "$failed" = 0 ] && [ "$exited" = 0 ] && [ "$running" -gt 0 ]
}

cmd_logs() {
  resolve_name
  local dest="${collect_to:-$local_state/$NAME/collected}" i rc failed=0
  mkdir -p "$dest" || die "cannot create $dest"
  for i in "${!H_HOST[@]}"; do
    mkdir -p "$dest/${H_KEY[$i]}"
    HOSTKEY="${H_KEY[$i]}"
    set +e
    remote "${H_HOST[$i]}" r_logs 2>"$tmpdir/logs.$i" | tar -xf - -C "$dest/${H_KEY[$i]}" 2>>"$tmpdir/logs.$i"
    rc=("${PIPESTATUS[@]}")
    set -e
    if [ "${rc[0]}" = 0 ] && [ "${rc[1]}" = 0 ]; then
      echo "  ${H_KEY[$i]}: $(find "$dest/${H_KEY[$i]}" -type f | wc -l) files"
    else
      report "${H_KEY[$i]}" "${rc[0]/#0/1}" "$tmpdir/logs.$i"
      failed=$((failed + 1))
    fi
  done
  say "logs of run $NAME in $dest"
  [ "$failed" = 0 ] || die "could not gather the logs of $failed host(s)"
}

case "$cmd" in
  check) cmd_check ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  logs) cmd_logs ;;
esac
