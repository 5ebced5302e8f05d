#!/usr/bin/env bash
# The VOLLEY_SSH of tests/multihost.sh: `netns-ssh.sh HOST COMMAND` runs COMMAND in the
# network namespace that stands for HOST (VOLLEY_NETNS_PREFIX + HOST without USER@), the
# way ssh runs it on a real machine. Exit status 255, like ssh, when there is no such
# host.
set -u
host="${1:?usage: netns-ssh.sh HOST COMMAND}"
command="${2:?usage: netns-ssh.sh HOST COMMAND}"
ns="${VOLLEY_NETNS_PREFIX:?VOLLEY_NETNS_PREFIX is not set}${host#*@}"
if [ ! -e "/run/netns/$ns" ]; then
  echo "netns-ssh: $host: no such host (network namespace $ns)" >&2
  exit 255
fi
exec ip netns exec "$ns" bash -c "$command"
