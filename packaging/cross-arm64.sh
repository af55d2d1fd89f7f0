#!/usr/bin/env bash
# Cross-builds polypush for 64-bit ARM (Raspberry Pi OS / Debian arm64) on a Debian 12 x86_64
# machine, with Debian multiarch: the aarch64 cross gcc as linker, FFmpeg's arm64 -dev packages
# found through pkg-config, and bindgen generating the FFmpeg bindings for arm64.
#
#   packaging/cross-arm64.sh            check the arm64 toolchain; build if present, else print
#                                       what is missing and exit 0 with "SKIPPED"
#   packaging/cross-arm64.sh --install  install the toolchain first (root or sudo; about
#                                       300 packages, 265 MB here), then build
#   packaging/cross-arm64.sh --deb      also build the .deb (packaging/build-deb.sh, if present)
#   packaging/cross-arm64.sh --check    only check the toolchain, do not build
#
# The binary goes to ${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/release/polypush;
# packaging/smoke-arm64.sh runs it under qemu. See docs/cross-arm64.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=aarch64-unknown-linux-gnu
GNU_TRIPLE=aarch64-linux-gnu

# Debian packages, as "name" (host) or "name:arm64" (target, through multiarch). The FFmpeg
# -dev packages bring the arm64 runtime libraries and libc6:arm64 (the loader
# /lib/ld-linux-aarch64.so.1) with them, which is what qemu needs to run the binary.
BUILD_PKGS=(
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  libavcodec-dev:arm64 libavformat-dev:arm64 libavdevice-dev:arm64 libavfilter-dev:arm64
  libavutil-dev:arm64 libswscale-dev:arm64 libswresample-dev:arm64
  pkg-config clang file
)
# Only for packaging/smoke-arm64.sh (nginx-rtmp and ffmpeg come from scripts/install-deps.sh).
SMOKE_PKGS=(qemu-user-static)

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

install=0 deb=0 build=1
for arg in "$@"; do
  case "$arg" in
    --install) install=1 ;;
    --deb) deb=1 ;;
    --check) build=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cross-arm64.sh: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

rust_target_installed() {
  local sysroot
  sysroot=$(rustc --print sysroot 2>/dev/null) || return 1
  [ -d "$sysroot/lib/rustlib/$TARGET/lib" ]
}

# Prints one line per missing piece; nothing when all is there.
missing_pieces() {
  if ! dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64; then
    echo "dpkg architecture arm64 (dpkg --add-architecture arm64)"
  fi
  local p
  for p in "${BUILD_PKGS[@]}"; do
    pkg_installed "$p" || echo "Debian package $p"
  done
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo (install Rust with rustup)"
  elif ! rust_target_installed; then
    echo "Rust standard library for $TARGET (rustup target add $TARGET)"
  fi
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

do_install() {
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "cross-arm64.sh --install: run as root (or install sudo)" >&2
    exit 1
  fi
  echo "== installing the arm64 cross toolchain (dpkg multiarch + rustup target)"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    as_root dpkg --add-architecture arm64
  fi
  # Wait for another apt/dpkg run instead of failing at once; never remove a package to make
  # room (multiarch needs the amd64 and arm64 copies of a library at the same version, so apt
  # may upgrade amd64 libraries, but it must not take anything away).
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
  as_root "${apt[@]}" update -qq
  as_root env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q \
    --no-install-recommends --no-remove "${BUILD_PKGS[@]}" "${SMOKE_PKGS[@]}"
  if command -v rustup >/dev/null 2>&1; then
    rustup target add "$TARGET"
  elif ! rust_target_installed; then
    echo "rustup not found: install the Rust standard library for $TARGET by hand" >&2
    exit 1
  fi
}

[ "$install" = 1 ] && do_install

missing=$(missing_pieces)
if [ -n "$missing" ]; then
  echo "The arm64 cross toolchain is not installed here. Missing:"
  while IFS= read -r line; do echo "  - $line"; done <<<"$missing"
  echo "Install it with (root; a large download):  packaging/cross-arm64.sh --install"
  echo "SKIPPED: arm64 cross-build (toolchain absent)"
  exit 0
fi
for p in "${SMOKE_PKGS[@]}"; do
  pkg_installed "$p" || echo "note: $p is not installed; packaging/smoke-arm64.sh needs it (--install)"
done
echo "arm64 cross toolchain: present ($(${GNU_TRIPLE}-gcc -dumpfullversion), rustc $(rustc --version | cut -d' ' -f2), $TARGET std)"
[ "$build" = 1 ] || exit 0

# The cross environment. Everything target-specific is keyed by the target triple, so build
# scripts and proc macros (compiled for the host) are untouched.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${GNU_TRIPLE}-gcc
export CC_aarch64_unknown_linux_gnu=${GNU_TRIPLE}-gcc
export AR_aarch64_unknown_linux_gnu=${GNU_TRIPLE}-ar
# pkg-config (the host's) reads only the arm64 .pc files; the paths in them are the real
# multiarch paths (/usr/include/aarch64-linux-gnu, /usr/lib/aarch64-linux-gnu), no sysroot.
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR=/usr/lib/${GNU_TRIPLE}/pkgconfig:/usr/share/pkgconfig
unset PKG_CONFIG_PATH PKG_CONFIG_SYSROOT_DIR
# bindgen (ffmpeg-sys-next) needs nothing extra: it passes clang --target=aarch64-unknown-
# linux-gnu from $TARGET and the -I paths from pkg-config, and clang finds the arm64 C library
# headers (/usr/aarch64-linux-gnu/include, libc6-dev-arm64-cross) through the installed cross
# gcc. The bindings come out for arm64 (va_list is aarch64's 32-byte struct, not x86_64's).
# BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu, if set by the caller, is passed on.

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
bin=$target_dir/$TARGET/release/polypush

echo "== cargo build --release --target $TARGET --bin polypush  (CARGO_TARGET_DIR=$target_dir)"
start=$(date +%s)
(cd "$ROOT" && cargo build --release --target "$TARGET" --bin polypush)
end=$(date +%s)

echo "== built in $((end - start)) s"
echo "binary: $bin"
file "$bin"
ls -l "$bin"

if [ "$deb" = 1 ]; then
  if [ -x "$ROOT/packaging/build-deb.sh" ]; then
    echo "== packaging/build-deb.sh --target $TARGET"
    "$ROOT/packaging/build-deb.sh" --target "$TARGET"
  elif [ -f "$ROOT/packaging/build-deb.sh" ]; then
    echo "== bash packaging/build-deb.sh --target $TARGET"
    bash "$ROOT/packaging/build-deb.sh" --target "$TARGET"
  else
    echo "--deb: packaging/build-deb.sh does not exist (yet); no .deb built"
  fi
fi
echo "next: packaging/smoke-arm64.sh  (runs this binary under qemu-aarch64-static)"
