#!/usr/bin/env bash
# Installs volley's pinned native stack into .deps/ (git-ignored) and writes
# .cargo/config.toml so that plain `cargo build` / `cargo test` find it and the built
# binaries run without LD_LIBRARY_PATH.
#
#   torch 2.11.0   (PyPI, in a venv)  libtorch for tch =0.24.0
#   procgen 0.10.7 (PyPI wheel)       libenv.so and its assets, loaded at run time
#   mujoco 3.17.0  (PyPI wheel)       libmujoco.so for mujoco-rs =7.0.0
#   gymnasium 1.4.0 (PyPI wheel)      the MuJoCo v5 XML models
#   ale-py 0.12.1  (PyPI sdist)       ALE's C++ source and the Atari ROMs: ALE is built
#                                     here with deploy/ale/shim.cpp into
#                                     .deps/ale/libvolley_ale.so, loaded at run time
#                                     (GPL-2.0: never committed to or shipped with volley)
#   cmake, g++, make, zlib (Debian)   that build, when missing
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
# The ale-py source distribution, pinned by hash; scikit-build-core is its build
# backend, which pip runs only to read the sdist's metadata.
ALE_VERSION=0.12.1
ALE_SDIST=ale_py-0.12.1.tar.gz
ALE_SHA256=c503d574c5983e1063b451201ccb779d935919c0f6bf116fb0f4f8aa4c86d249
SCIKIT_BUILD_CORE_VERSION=0.11.6

step=""
fail() {
  echo "deploy/setup.sh: step '$step' failed: $*" >&2
  step=""
  exit 1
}
# torch downloads in the background while the other steps run (see the torch step).
torch_pid=""
trap 'rc=$?; [ -n "$torch_pid" ] && kill "$torch_pid" 2>/dev/null; [ $rc -ne 0 ] && [ -n "$step" ] && echo "deploy/setup.sh: step \"$step\" failed (exit $rc); see the output above" >&2' EXIT
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

# Downloads a pinned source distribution (if absent) and checks its hash. pip reads
# an sdist's metadata with its build backend before saving it; the backend (and
# nothing else of the sdist's build requirements) is installed into a scratch folder
# for that.
fetch_sdist() { # name version file sha256 backend-requirement
  local name=$1 version=$2 file=$3 sha=$4 backend=$5
  if [ ! -f "$deps/wheels/$file" ]; then
    say "downloading the $name==$version source distribution"
    local tools="$deps/wheels/.backend-$name"
    rm -rf "$tools"
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install -q --disable-pip-version-check --only-binary=:all: \
      --target "$tools" "$backend" \
      || fail "pip could not install $backend to read the $name sdist (is the package registry reachable?)"
    PYTHONPATH="$tools" "$PY" -m pip download -q --disable-pip-version-check --no-deps \
      --no-binary "$name" --no-build-isolation -d "$deps/wheels" "$name==$version" \
      || { rm -rf "$tools"; fail "pip could not download the $name==$version sdist (is the package registry reachable?)"; }
    rm -rf "$tools"
  fi
  [ -f "$deps/wheels/$file" ] || fail "expected $file after downloading $name==$version"
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
# ALE is compiled here (the ale step below): CMake, a C++17 compiler, make, zlib's headers.
command -v cmake >/dev/null 2>&1 || need_pkgs+=(cmake)
{ command -v g++ && command -v make; } >/dev/null 2>&1 || need_pkgs+=(g++ make)
[ -f /usr/include/zlib.h ] || need_pkgs+=(zlib1g-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_pkgs[@]}" \
    || fail "apt-get install ${need_pkgs[*]} failed"
fi

# The download is the network's work and ALE's build below the CPU's, so pip runs in
# the background while the other steps go on; the cargo config step waits for it.
step="torch $TORCH_VERSION"
torch_log="$deps/torch-install.log"
if [ "${VOLLEY_SKIP_TORCH:-0}" != 1 ]; then
  if ! compgen -G "$deps/venv/lib/python3*/site-packages/torch-$TORCH_VERSION*.dist-info" >/dev/null; then
    say "installing torch==$TORCH_VERSION into .deps/venv (about 4.6 GB, a few minutes; the other steps go on meanwhile)"
    [ -x "$deps/venv/bin/python" ] || "$PY" -m venv "$deps/venv" || fail "could not create the venv"
    "$deps/venv/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" \
      >"$torch_log" 2>&1 &
    torch_pid=$!
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

step="ale $ALE_VERSION"
# The stamp names the shim's sources too, so that editing deploy/ale/ rebuilds.
[ -f "$root/deploy/ale/shim.cpp" ] || fail "deploy/ale/ (ALE's shim) is missing from this checkout"
ale_shim_id=$(cat "$root"/deploy/ale/shim.cpp "$root"/deploy/ale/CMakeLists.txt "$root"/deploy/ale/exports.map \
  "$root"/deploy/ale/pgo_train.cpp | sha256sum | cut -c1-12)
if [ ! -f "$deps/ale/.installed-$ALE_VERSION-$ale_shim_id" ]; then
  fetch_sdist ale-py "$ALE_VERSION" "$ALE_SDIST" "$ALE_SHA256" "scikit-build-core==$SCIKIT_BUILD_CORE_VERSION"
  ale_build="$deps/ale-build"
  ale_src="$ale_build/ale_py-$ALE_VERSION"
  ale_log="$ale_build/build.log"
  # The unpacked sources and CMake's build folder are kept, so that a change of the
  # shim recompiles only the shim.
  mkdir -p "$ale_build"
  if [ ! -f "$ale_src/version.txt" ]; then
    rm -rf "$ale_src"
    tar -xzf "$deps/wheels/$ALE_SDIST" -C "$ale_build" \
      "ale_py-$ALE_VERSION/CMakeLists.txt" "ale_py-$ALE_VERSION/version.txt" \
      "ale_py-$ALE_VERSION/LICENSE.md" "ale_py-$ALE_VERSION/cmake" "ale_py-$ALE_VERSION/src" \
      || fail "could not unpack $ALE_SDIST"
  fi
  say "building ALE $ALE_VERSION and volley's shim, profile-guided (a few minutes; log in .deps/ale-build/build.log)"
  # Two passes in one build folder: an instrumented build plays four ROMs for a
  # profile, then the optimised build uses it (the emulator steps about 12% faster: the
  # median of 10 paired runs on a 2-core machine).
  # CMAKE_DISABLE_FIND_PACKAGE_Git: ALE asks git for its commit, which here would be
  # volley's; the sdist's version.txt names the release instead.
  ale_cmake() {
    cmake -S "$root/deploy/ale" -B "$ale_build/cmake" -DCMAKE_BUILD_TYPE=Release \
      -DVOLLEY_ALE_SRC="$ale_src" -DBUILD_PYTHON_LIB=OFF -DSDL_SUPPORT=OFF \
      -DCMAKE_DISABLE_FIND_PACKAGE_Git=TRUE -DVOLLEY_ALE_PGO="$1" \
      -DVOLLEY_ALE_PGO_DIR="$ale_build/pgo" >>"$ale_log" 2>&1 \
      || { tail -n 30 "$ale_log" >&2; fail "cmake could not configure ALE (log: $ale_log)"; }
    shift
    cmake --build "$ale_build/cmake" --target "$@" -j "$(nproc 2>/dev/null || echo 2)" >>"$ale_log" 2>&1 \
      || { tail -n 30 "$ale_log" >&2; fail "ALE or the shim did not compile (log: $ale_log)"; }
  }
  : >"$ale_log"
  rm -rf "$ale_build/pgo"
  ale_cmake GENERATE volley_ale volley_ale_pgo_train
  roms="$ale_src/src/ale/python/roms"
  "$ale_build/cmake/volley_ale_pgo_train" 20000 "$roms/ms_pacman.bin" "$roms/pong.bin" \
    "$roms/breakout.bin" "$roms/space_invaders.bin" >>"$ale_log" 2>&1 \
    || { tail -n 30 "$ale_log" >&2; fail "ALE's profiling run failed (log: $ale_log)"; }
  ale_cmake USE volley_ale
  rm -rf "$deps/ale" "$deps/ale.tmp"
  mkdir -p "$deps/ale.tmp/roms"
  cp "$ale_build/cmake/libvolley_ale.so" "$deps/ale.tmp/"
  cp "$ale_src"/src/ale/python/roms/*.bin "$ale_src/src/ale/python/roms/md5.json" "$deps/ale.tmp/roms/"
  cp "$ale_src/LICENSE.md" "$deps/ale.tmp/LICENSE.md"
  mv "$deps/ale.tmp" "$deps/ale"
  touch "$deps/ale/.installed-$ALE_VERSION-$ale_shim_id"
fi

step="torch $TORCH_VERSION"
if [ -n "$torch_pid" ]; then
  say "waiting for the torch install to finish"
  if ! wait "$torch_pid"; then
    torch_pid=""
    tail -n 30 "$torch_log" >&2
    fail "pip install torch==$TORCH_VERSION failed (log: .deps/torch-install.log)"
  fi
  torch_pid=""
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
say "native stack ready in .deps/ ($torch_note, procgen $PROCGEN_VERSION, mujoco $MUJOCO_VERSION, gymnasium $GYMNASIUM_VERSION models, ALE $ALE_VERSION)"
