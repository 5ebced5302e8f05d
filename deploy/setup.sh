#!/usr/bin/env bash
# Installs volley's pinned native stack into .deps/ (git-ignored) and writes
# .cargo/config.toml so that plain `cargo build` / `cargo test` find it and the built
# binaries run without LD_LIBRARY_PATH.
#
#   torch 2.11.0   (PyPI, in a venv)  libtorch for tch =0.24.0
#   procgen 0.10.7 (PyPI wheel)       libenv.so and its assets, loaded at run time
#   mujoco 3.17.0  (PyPI wheel)       libmujoco.so for mujoco-rs =7.0.0
#   gymnasium 1.4.0 (PyPI wheel)      the MuJoCo v5 XML models
#   system libraries (Debian packages) that libenv.so needs, and EGL with Mesa's
#                                     OpenGL for drawing MuJoCo frames without a display
#   fonts-dejavu-core (Debian)        the plots' font, unless a DejaVuSans.ttf is here
#   ffmpeg (Debian)                   MP4 videos, and ffprobe for their tests, unless on PATH
#
# Idempotent: each step leaves a stamp and is skipped when it is there.
# Environment: VOLLEY_SKIP_TORCH=1 skips torch (the env layer does not need it).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.deps"
mkdir -p "$deps/wheels"

TORCH_VERSION=2.11.0
PROCGEN_VERSION=0.10.7
MUJOCO_VERSION=3.17.0
GYMNASIUM_VERSION=1.4.0
# Wheels this script unpacks itself, pinned by hash.
PROCGEN_WHEEL=procgen-0.10.7-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
PROCGEN_SHA256=4b594d14e42f0f2166e59a9e294477b906eb99c90c3343b570b7124cbc865f53
MUJOCO_WHEEL=mujoco-3.17.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
MUJOCO_SHA256=d66928d86a2d1b601bbaa4dc11db50214d17d5301bb8afd84721313b67ff0874
GYMNASIUM_WHEEL=gymnasium-1.4.0-py3-none-any.whl
GYMNASIUM_SHA256=1cb947c59e7c72d8eabb2c2274c00cd20948e69f8452a9ef4092223be24fdf0e

step=""
fail() {
  echo "deploy/setup.sh: step '$step' failed: $*" >&2
  step=""
  exit 1
}
trap 'rc=$?; [ $rc -ne 0 ] && [ -n "$step" ] && echo "deploy/setup.sh: step \"$step\" failed (exit $rc); see the output above" >&2' EXIT
say() { echo "setup: $*"; }

find_python() {
  for p in python3.11 python3.12 python3.10 python3; do
    if command -v "$p" >/dev/null 2>&1; then echo "$p"; return 0; fi
  done
  return 1
}

# Downloads a pinned wheel (if absent) and checks its hash.
fetch_wheel() { # name version file sha256 [pip download args...]
  local name=$1 version=$2 file=$3 sha=$4
  shift 4
  if [ ! -f "$deps/wheels/$file" ]; then
    say "downloading $name==$version"
    "$PY" -m pip download -q --no-deps --only-binary=:all: "$@" -d "$deps/wheels" "$name==$version" \
      || fail "pip could not download $name==$version (is the package registry reachable?)"
  fi
  [ -f "$deps/wheels/$file" ] || fail "expected wheel $file after downloading $name==$version"
  local got
  got=$(sha256sum "$deps/wheels/$file" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    rm -f "$deps/wheels/$file"
    fail "hash mismatch for $file: expected $sha, got $got (file removed; run again)"
  fi
}

# Unpacks members of a wheel (a zip) into a folder with Python, which is always here.
unzip_members() { # wheel dest prefix...
  "$PY" - "$@" <<'EOF'
import sys, zipfile, os
wheel, dest, prefixes = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        if any(m.startswith(p) for p in prefixes):
            z.extract(m, dest)
EOF
}

step="python"
PY=$(find_python) || fail "no python3 found: install python3 (Debian package python3) and run again"

step="system libraries"
need_pkgs=()
# (grep -q on a pipe would make ldconfig die of SIGPIPE, a failure under pipefail.)
ldconfig_cache=$(ldconfig -p 2>/dev/null || true)
have_lib() { grep -qF "$1" <<<"$ldconfig_cache"; }
have_lib 'libglib-2.0.so.0' || need_pkgs+=(libglib2.0-0)
have_lib 'libgthread-2.0.so.0' || need_pkgs+=(libglib2.0-0)
have_lib 'libz.so.1' || need_pkgs+=(zlib1g)
have_lib 'libstdc++.so.6' || need_pkgs+=(libstdc++6)
# MuJoCo frames are drawn headless on EGL (common/src/env/mujoco/egl.rs loads libEGL.so.1
# at run time): libglvnd's libEGL, Mesa's EGL vendor library and its OpenGL drivers
# (llvmpipe renders on the CPU where there is no GPU).
have_lib 'libEGL.so.1' || need_pkgs+=(libegl1)
have_lib 'libEGL_mesa.so.0' || need_pkgs+=(libegl-mesa0)
have_dri() { [ -n "$(find /usr/lib /usr/lib64 -name swrast_dri.so -print -quit 2>/dev/null)" ]; }
have_dri || need_pkgs+=(libgl1-mesa-dri)
"$PY" -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
# The plots draw their text with a TrueType font found at run time (learner/src/plot/font.rs).
have_font() {
  local d
  for d in /usr/share/fonts /usr/local/share/fonts; do
    [ -d "$d" ] && [ -n "$(find "$d" -name DejaVuSans.ttf -print -quit 2>/dev/null)" ] && return 0
  done
  return 1
}
have_font || need_pkgs+=(fonts-dejavu-core)
# MP4 videos are encoded by the ffmpeg program (learner/src/video/mp4.rs); the video
# tests decode them with ffprobe, of the same package.
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || need_pkgs+=(ffmpeg)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}" \
    || fail "apt-get install ${need_pkgs[*]} failed"
fi

step="torch $TORCH_VERSION"
if [ "${VOLLEY_SKIP_TORCH:-0}" != 1 ]; then
  if ! compgen -G "$deps/venv/lib/python3*/site-packages/torch-$TORCH_VERSION*.dist-info" >/dev/null; then
    say "installing torch==$TORCH_VERSION into .deps/venv (about 4.6 GB, a few minutes)"
    [ -x "$deps/venv/bin/python" ] || "$PY" -m venv "$deps/venv" || fail "could not create the venv"
    "$deps/venv/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" \
      || fail "pip install torch==$TORCH_VERSION failed"
  fi
fi

step="procgen $PROCGEN_VERSION"
if [ ! -f "$deps/procgen/.installed-$PROCGEN_VERSION" ]; then
  fetch_wheel procgen "$PROCGEN_VERSION" "$PROCGEN_WHEEL" "$PROCGEN_SHA256" \
    --python-version 3.10 --platform manylinux2014_x86_64
  rm -rf "$deps/procgen" "$deps/procgen.tmp"
  unzip_members "$deps/wheels/$PROCGEN_WHEEL" "$deps/procgen.tmp" procgen/data/ || fail "unzip failed"
  mkdir -p "$deps/procgen"
  mv "$deps/procgen.tmp/procgen/data/prebuilt/libenv.so" "$deps/procgen/libenv.so"
  mv "$deps/procgen.tmp/procgen/data/assets" "$deps/procgen/assets"
  rm -rf "$deps/procgen.tmp"
  touch "$deps/procgen/.installed-$PROCGEN_VERSION"
fi

step="mujoco $MUJOCO_VERSION"
if [ ! -f "$deps/mujoco/.installed-$MUJOCO_VERSION" ]; then
  fetch_wheel mujoco "$MUJOCO_VERSION" "$MUJOCO_WHEEL" "$MUJOCO_SHA256" \
    --python-version 3.11 --platform manylinux_2_28_x86_64
  rm -rf "$deps/mujoco" "$deps/mujoco.tmp"
  unzip_members "$deps/wheels/$MUJOCO_WHEEL" "$deps/mujoco.tmp" mujoco/libmujoco mujoco/include/ \
    || fail "unzip failed"
  mkdir -p "$deps/mujoco/lib"
  mv "$deps/mujoco.tmp/mujoco/libmujoco.so.$MUJOCO_VERSION" "$deps/mujoco/lib/"
  mv "$deps/mujoco.tmp/mujoco/include" "$deps/mujoco/include"
  ln -sf "libmujoco.so.$MUJOCO_VERSION" "$deps/mujoco/lib/libmujoco.so"
  ln -sf "libmujoco.so.$MUJOCO_VERSION" "$deps/mujoco/lib/libmujoco.so.3"
  rm -rf "$deps/mujoco.tmp"
  touch "$deps/mujoco/.installed-$MUJOCO_VERSION"
fi

step="gymnasium $GYMNASIUM_VERSION models"
if [ ! -f "$deps/gymnasium/.installed-$GYMNASIUM_VERSION" ]; then
  fetch_wheel gymnasium "$GYMNASIUM_VERSION" "$GYMNASIUM_WHEEL" "$GYMNASIUM_SHA256"
  rm -rf "$deps/gymnasium" "$deps/gymnasium.tmp"
  unzip_members "$deps/wheels/$GYMNASIUM_WHEEL" "$deps/gymnasium.tmp" gymnasium/envs/mujoco/assets/ \
    || fail "unzip failed"
  mkdir -p "$deps/gymnasium"
  mv "$deps/gymnasium.tmp/gymnasium/envs/mujoco/assets" "$deps/gymnasium/assets"
  rm -rf "$deps/gymnasium.tmp"
  touch "$deps/gymnasium/.installed-$GYMNASIUM_VERSION"
fi

step="cargo config"
torch_dir=""
for d in "$deps"/venv/lib/python3*/site-packages/torch; do
  [ -d "$d/lib" ] && torch_dir="$d"
done
mkdir -p "$root/.cargo"
config="$root/.cargo/config.toml"
tmp="$config.tmp"
{
  echo "# Written by deploy/setup.sh for this checkout; not committed."
  echo "[env]"
  echo "VOLLEY_DEPS_DIR = \"$deps\""
  echo "MUJOCO_DYNAMIC_LINK_DIR = \"$deps/mujoco/lib\""
  if [ -n "$torch_dir" ]; then
    echo "LIBTORCH = \"$torch_dir\""
    echo "LIBTORCH_INCLUDE = \"$torch_dir\""
    echo "LIBTORCH_LIB = \"$torch_dir\""
    echo "LIBTORCH_CXX11_ABI = \"1\""
  fi
  echo
  echo "[target.x86_64-unknown-linux-gnu]"
  printf 'rustflags = ["-C", "link-arg=-Wl,-rpath,%s/mujoco/lib"' "$deps"
  [ -n "$torch_dir" ] && printf ', "-C", "link-arg=-Wl,-rpath,%s/lib"' "$torch_dir"
  echo "]"
} >"$tmp"
if ! cmp -s "$tmp" "$config"; then mv "$tmp" "$config"; else rm -f "$tmp"; fi

step=""
torch_note="torch $TORCH_VERSION"
[ -n "$torch_dir" ] || torch_note="torch skipped"
say "native stack ready in .deps/ ($torch_note, procgen $PROCGEN_VERSION, mujoco $MUJOCO_VERSION, gymnasium $GYMNASIUM_VERSION models)"
