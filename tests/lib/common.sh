# Shared by the process tests (sourced, after `cd` to the repository root):
#   free_ports N          prints N free loopback ports below the ephemeral range,
#                         bound at once so they differ
#   wait_port PID PORT    waits up to 30 s until PORT accepts connections; fails if
#                         process PID exits first
#   test_venv NAME REQ    makes .deps/NAME, a venv with the pinned requirements file
#                         REQ installed (redone when REQ changes), and sets $py to its
#                         python
# The caller defines die() (message, exit 1).

free_ports() {
  # Below the kernel's ephemeral range: a port from bind(0) comes from that range
  # and may go to some outgoing connection before the child process binds it.
  python3 -c '
import os, random, socket, sys
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    low = 32768
n, top = int(sys.argv[1]), min(low, 32768)
socks = []
if top - 10000 < 1000:
    for _ in range(n):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
else:
    for port in random.Random(os.getpid()).sample(range(10000, top), top - 10000):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close(); continue
        socks.append(s)
        if len(socks) == n:
            break
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

wait_port() {
  local pid="$1" port="$2" _
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 1
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

test_venv() {
  local name="$1" req="$2" venv log stamp
  venv="$PWD/.deps/$name"
  stamp="$venv/.requirements-$(sha256sum "$req" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "installing $(grep -v '^#' "$req" | tr '\n' ' ')into .deps/$name ($req)"
    log="$(mktemp)"
    rm -rf "$venv"
    mkdir -p "$PWD/.deps"
    if ! { python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q \
      --disable-pip-version-check -r "$req"; } >"$log" 2>&1; then
      tail -20 "$log" >&2
      rm -f "$log"
      die "could not install $req into .deps/$name (python3 -m venv, then pip install -r)"
    fi
    rm -f "$log"
    touch "$stamp"
  fi
  py="$venv/bin/python"
}
