#!/usr/bin/env bash
# Collects what one volley role needs at run time into a folder that mirrors the
# root file system, so that the Dockerfile's runtime stages take it with one COPY.
#
#   deploy/docker/stage-runtime.sh learner|actor DEST
#
# Run from the repository root after deploy/setup.sh and `cargo build --release`.
# The native libraries keep the absolute paths under .deps/ that deploy/setup.sh gave
# them: the binaries' RUNPATH points there, and libtorch finds the CUDA libraries
# through relative RUNPATHs ($ORIGIN/../../nvidia/...). The runtime image must
# therefore put this checkout at the same path as the build (the Dockerfile uses
# /opt/volley in both).
#
#   learner  volley-learner and volley-actor; all of libtorch and the CUDA libraries
#            (cuDNN and NVRTC are loaded with dlopen, so no ldd closure would do)
#   actor    volley-actor; only the libraries `ldd volley-actor` resolves under .deps/
#            (libtorch_cpu, libc10, libgomp, libcudart, libcupti: about 0.5 GB
#            instead of about 3.7 GB)
# Both take MuJoCo's library, procgen's libenv.so and assets, Gymnasium's MuJoCo
# models, and ALE's libvolley_ale.so with the ROMs (.deps/ale, built by setup.sh).
# VOLLEY_STAGE_HARDLINK=1 makes hard links instead of copies, for trying this outside
# Docker without copying gigabytes.
set -euo pipefail

role="${1:?usage: stage-runtime.sh learner|actor DEST}"
dest="${2:?usage: stage-runtime.sh learner|actor DEST}"
root="$(pwd)"
deps="$root/.deps"
bin="$root/target/release"
link=""
[ "${VOLLEY_STAGE_HARDLINK:-0}" = 1 ] && link="l"

fail() { echo "stage-runtime.sh: $*" >&2; exit 1; }
[ -d "$deps" ] || fail "no .deps/ in $root: run deploy/setup.sh first"

# Copies one file (its content, under the name given) or one folder (as it is) to
# the same absolute path under $dest.
put() {
  local src
  src="$(realpath -s "$1")"
  [ -e "$src" ] || fail "missing $src"
  mkdir -p "$dest$(dirname "$src")"
  if [ -d "$src" ]; then
    cp -a$link "$src" "$dest$(dirname "$src")/"
  elif [ ! -e "$dest$src" ]; then
    cp -L$link "$src" "$dest$src"
  fi
}

# The libraries under .deps/ that the dynamic linker resolves for a binary.
closure() {
  local out
  out="$(ldd "$1")" || fail "ldd $1 failed"
  if grep -q 'not found' <<<"$out"; then
    fail "$1 has unresolved libraries:"$'\n'"$(grep 'not found' <<<"$out")"
  fi
  awk -v d="$deps/" 'index($3, d) == 1 { print $3 }' <<<"$out"
}

case "$role" in
  learner) bins=(volley-learner volley-actor) ;;
  actor) bins=(volley-actor) ;;
  *) fail "unknown role '$role' (learner or actor)" ;;
esac

mkdir -p "$dest/usr/local/bin"
for b in "${bins[@]}"; do
  [ -x "$bin/$b" ] || fail "missing $bin/$b: build with cargo build --release first"
  cp "$bin/$b" "$dest/usr/local/bin/$b"
done

# MuJoCo's library (with its symlinks), and what is loaded at run time by path
# (common/src/deps.rs) rather than by the dynamic linker.
put "$deps/mujoco/lib"
put "$deps/procgen/libenv.so"
put "$deps/procgen/assets"
put "$deps/gymnasium/assets"
put "$deps/ale"

if [ "$role" = learner ]; then
  torch=""
  for d in "$deps"/venv/lib/python3*/site-packages/torch; do
    [ -d "$d/lib" ] && torch="$d"
  done
  [ -n "$torch" ] || fail "no torch in $deps/venv: deploy/setup.sh without VOLLEY_SKIP_TORCH"
  for f in "$torch"/lib/*.so*; do
    case "$(basename "$f")" in libtorch_python.so) continue ;; esac
    put "$f"
  done
  for d in "$torch"/../nvidia/*/lib; do
    put "$d"
  done
else
  libs="$(closure "$bin/volley-actor")"
  for lib in $libs; do
    put "$lib"
  done
fi

echo "stage-runtime.sh: staged the $role runtime into $dest ($(du -sh "$dest" | cut -f1))"
