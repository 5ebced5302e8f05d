"""Network probes for tests/multihost.sh, run inside a namespace with `ip netns exec`.

    probe.py metrics URL NAME...   prints the values of the unlabelled metrics NAME...,
                                   one a line, 0 for one not there yet (a counter shows
                                   up at its first increment); exit 1 when the endpoint
                                   does not answer
    probe.py reach HOST PORT       prints open, refused or unreachable
"""

import socket
import sys
import urllib.request


def metrics(url, names):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            text = r.read().decode()
    except OSError as e:
        print(f"probe: {url}: {e}", file=sys.stderr)
        return 1
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, _, value = line.rpartition(" ")
        values[key.strip()] = value
    for n in names:
        print(int(float(values.get(n, "0"))))
    return 0


def reach(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        print("open")
    except ConnectionRefusedError:
        print("refused")
    except OSError:
        print("unreachable")
    return 0


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    sys.exit(metrics(args[0], args[1:]) if cmd == "metrics" else reach(*args))
