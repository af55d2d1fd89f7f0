#!/usr/bin/env bash
# Installs what polypush needs to build and test on Debian 12 (as root, or with sudo).
# Idempotent: does nothing when everything is already there.
set -euo pipefail

PKGS=(
  pkg-config clang
  libavcodec-dev libavformat-dev libavdevice-dev libavfilter-dev libavutil-dev
  libswscale-dev libswresample-dev
  nginx libnginx-mod-rtmp ffmpeg
  # RTMPS tests: nginx's stream module terminates TLS in front of nginx-rtmp; openssl makes
  # each test's CA and certificate.
  libnginx-mod-stream openssl
  iproute2 procps curl ca-certificates
  systemd
  # The status page's browser tests (tests/status_page.rs): headless Chromium, its WebDriver,
  # and a CJK font so the Chinese page renders (and its screenshot shows) real characters.
  chromium chromium-driver fonts-wqy-microhei
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  # nginx must not start a system daemon on port 80 just because it was installed.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi

# promtool (tests check /metrics and the fleet's alert rules with it): Debian's prometheus
# package, downloaded and unpacked into a cache, never installed (no daemon starts).
if ! "$(dirname "$0")/promtool.sh" >/dev/null; then
  echo "warning: promtool unavailable; the promtool checks in the tests will be skipped" >&2
fi
