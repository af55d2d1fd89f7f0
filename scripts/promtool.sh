#!/usr/bin/env bash
# Prints the path of a `promtool` binary (for `promtool check metrics` in tests/status_server.rs).
#
# Uses `promtool` from PATH when there is one. Otherwise it fetches Debian's `prometheus`
# package WITHOUT installing it (installing would start a Prometheus server): `apt-get download`
# into a cache directory, `dpkg-deb -x` there, and prints `<cache>/root/usr/bin/promtool`.
# A second run reuses the cached binary. Exits non-zero with a message on stderr when it cannot.
#
#   POLYPUSH_TOOLS   cache directory (default: $HOME/.cache/polypush-tools)
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi

cache="${POLYPUSH_TOOLS:-${HOME:-/tmp}/.cache/polypush-tools}"
bin="$cache/prometheus/root/usr/bin/promtool"

if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

fail() {
  echo "promtool.sh: $*" >&2
  exit 1
}

for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 ||
    fail "$tool not found: install promtool yourself (Debian package 'prometheus') or put it on PATH"
done

work="$cache/prometheus"
mkdir -p "$work" || fail "cannot create $work: set POLYPUSH_TOOLS to a writable directory"
tmp="$(mktemp -d "$work/dl.XXXXXX")" || fail "cannot create a temporary directory in $work"
trap 'rm -rf "$tmp"' EXIT

# apt-get download writes into the current directory and needs no root, only package lists.
download() { (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); }
if ! download; then
  # The package lists may be missing or stale (a fresh machine): refresh them when we can.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null 2>&1 || true
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n apt-get update -qq >/dev/null 2>&1 || true
  fi
  download || fail "apt-get download prometheus failed (no package lists or no network): run 'apt-get update' or install promtool yourself"
fi

debs=("$tmp"/prometheus_*.deb)
[ -f "${debs[0]}" ] || fail "apt-get download prometheus produced no .deb in $tmp"

# Extract beside the cache and move into place, so a concurrent run never sees half a tree.
dpkg-deb -x "${debs[0]}" "$tmp/root" || fail "dpkg-deb -x ${debs[0]} failed"
[ -x "$tmp/root/usr/bin/promtool" ] || fail "the prometheus package has no usr/bin/promtool"
"$tmp/root/usr/bin/promtool" --version >/dev/null 2>&1 || fail "promtool from the prometheus package does not run on this machine"
rm -rf "$work/root"
mv "$tmp/root" "$work/root" 2>/dev/null || [ -x "$bin" ] || fail "cannot move promtool into $work/root"
echo "$bin"
