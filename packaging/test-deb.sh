#!/usr/bin/env bash
# Tests the polypush Debian package on this machine, as root: contents, lintian, install,
# run, remove and purge, with or without a running systemd (maintainer scripts must cope).
#
#   packaging/test-deb.sh                 build it first (packaging/build-deb.sh), then test
#   packaging/test-deb.sh FILE.deb        test this package (its architecture must run here)
#
# Two install cycles:
#   1. dpkg -i; the binary, `check` on the shipped config (as root and as the service user),
#      user, directories, enablement, dpkg --verify; reinstall over itself with a locally
#      changed conffile (the upgrade path: the change is kept); dpkg -r (conffile stays,
#      unit masked); dpkg --purge (all gone, the user stays).
#   2. dpkg -i; a password and a fake recording; dpkg --purge: the password goes, the
#      recording is kept with the directory holding it, nothing else.
# Afterwards the machine is as before: what the purges keep by design (recordings, the
# polypush user) is removed here if this run created it. Exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
  echo "test-deb.sh: run as root (it installs and purges the package)" >&2
  exit 2
fi
if [ "$(dpkg-query -W -f='${db:Status-Status}' polypush 2>/dev/null || true)" = installed ] ||
  [ -e /usr/bin/polypush ]; then
  echo "test-deb.sh: polypush is installed already; dpkg --purge polypush first" >&2
  exit 2
fi

if [ $# -ge 1 ]; then
  deb=$(realpath "$1")
else
  echo "== packaging/build-deb.sh"
  deb=$("$ROOT/packaging/build-deb.sh" | tail -n 1)
fi
[ -f "$deb" ] || { echo "test-deb.sh: no package at '$deb'" >&2; exit 2; }

pass=0
failures=()
ok() { echo "  ok    $*"; pass=$((pass + 1)); }
bad() { echo "  FAIL  $*"; failures+=("$*"); }
# check DESCRIPTION COMMAND...: passes when the command succeeds (its output is hidden).
check() {
  local desc=$1
  shift
  if "$@" >/dev/null 2>&1; then ok "$desc"; else bad "$desc"; fi
}
# expect DESCRIPTION EXPECTED ACTUAL
expect() {
  if [ "$2" = "$3" ]; then ok "$1 ($3)"; else bad "$1: expected '$2', got '$3'"; fi
}
in_group() { id -nG polypush 2>/dev/null | tr ' ' '\n' | grep -qx "$1"; }
man_finds_page() { man -w polypush 2>/dev/null | grep -q 'man1/polypush\.1\.gz$'; }
bash_completion_loads() {
  bash -c '. /usr/share/bash-completion/completions/polypush && complete -p polypush'
}
gone() { [ ! -e "$1" ] && [ ! -L "$1" ]; }
owner_mode() { stat -c '%U:%G %a' "$1" 2>/dev/null || echo missing; }
pkg_status() { dpkg-query -W -f='${db:Status-Status}' polypush 2>/dev/null || echo not-installed; }

version=$(dpkg-deb -f "$deb" Version)
upstream_version=${version%-*}
arch=$(dpkg-deb -f "$deb" Architecture)
unit=/usr/lib/systemd/system/polypush.service
wants=/etc/systemd/system/multi-user.target.wants/polypush.service
user_existed=0
getent passwd polypush >/dev/null && user_existed=1
state_existed=0
[ -e /var/lib/polypush ] && state_existed=1
if [ -d /run/systemd/system ]; then systemd_state="systemd running"; else systemd_state="systemd not running"; fi
echo "package: $deb ($version, $arch); $systemd_state"

echo
echo "== dpkg-deb -I"
dpkg-deb -I "$deb"
echo
echo "== dpkg-deb -c"
contents=$(dpkg-deb -c "$deb")
echo "$contents"
echo
echo "== contents"
for path in \
  usr/bin/polypush \
  usr/lib/systemd/system/polypush.service \
  etc/polypush/polypush.toml \
  usr/lib/sysusers.d/polypush.conf \
  usr/lib/tmpfiles.d/polypush.conf \
  usr/share/man/man1/polypush.1.gz \
  usr/share/bash-completion/completions/polypush \
  usr/share/zsh/vendor-completions/_polypush \
  usr/share/fish/vendor_completions.d/polypush.fish \
  usr/share/doc/polypush/changelog.Debian.gz \
  usr/share/doc/polypush/copyright \
  usr/share/lintian/overrides/polypush; do
  check "in the package: /$path" grep -qE " \./$path\$" <<<"$contents"
done
check "nothing but /usr/bin/polypush is executable" \
  test "$(awk '$1 ~ /^-..x/ {print $6}' <<<"$contents")" = ./usr/bin/polypush
ctrl=$(mktemp -d)
on_exit() {
  local rc=$?
  rm -rf "$ctrl"
  if [ "$rc" != 0 ] && [ "$(pkg_status)" != not-installed ]; then
    echo "test-deb.sh: stopped with polypush still installed ($(pkg_status)), for inspection;" \
      "dpkg --purge polypush cleans up" >&2
  fi
}
trap on_exit EXIT
dpkg-deb -e "$deb" "$ctrl"
expect "conffiles" "/etc/polypush/polypush.toml" "$(cat "$ctrl/conffiles" 2>/dev/null)"
for script in postinst prerm postrm md5sums; do
  check "control archive has $script" test -s "$ctrl/$script"
done
depends=$(dpkg-deb -f "$deb" Depends)
check "Depends resolved from the binary (\$auto: libavcodec, libc6)" \
  grep -qE 'libavcodec[0-9]+ .*libc6 ' <<<"$depends"
check "Depends has systemd-sysusers and systemd-tmpfiles" \
  grep -qE 'sysusers.*tmpfiles' <<<"$depends"
expect "Section" video "$(dpkg-deb -f "$deb" Section)"
expect "Priority" optional "$(dpkg-deb -f "$deb" Priority)"
changelog_top=$(dpkg-deb --fsys-tarfile "$deb" |
  tar -xOf - ./usr/share/doc/polypush/changelog.Debian.gz | gzip -dc | head -n 1)
expect "changelog's newest entry" "polypush ($version)" "$(cut -d' ' -f1-2 <<<"$changelog_top")"
copyright_top=$(dpkg-deb --fsys-tarfile "$deb" |
  tar -xOf - ./usr/share/doc/polypush/copyright | head -n 1)
expect "copyright is machine-readable (DEP-5)" \
  "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" "$copyright_top"
for script in postinst prerm postrm; do
  check "$script: sh -n" sh -n "$ctrl/$script"
done

echo
echo "== lintian (errors and warnings fail; overrides shown with their reasons)"
if command -v lintian >/dev/null 2>&1; then
  # As nobody: lintian unpacks untrusted archives and says root is not recommended.
  lint_copy=$(mktemp /tmp/polypush-lintian.XXXXXX.deb)
  cp "$deb" "$lint_copy"
  chmod 0644 "$lint_copy"
  lint() { (cd /tmp && runuser -u nobody -- env HOME=/tmp lintian "$@" "$lint_copy"); }
  # Shown in full, overrides with their reasons; then the verdict from a second run, since
  # with --show-overrides lintian's exit status counts the overridden tags too.
  lint --display-info --show-overrides || true
  set +e
  lint --fail-on error,warning >/dev/null 2>&1
  lint_rc=$?
  set -e
  rm -f "$lint_copy"
  case "$lint_rc" in
    0) ok "lintian: no error or warning without an override" ;;
    2) bad "lintian: errors or warnings without an override (above)" ;;
    *) bad "lintian did not run (exit $lint_rc)" ;;
  esac
else
  bad "lintian is not installed (apt-get install lintian)"
fi

# Installs $deb; with missing dependencies dpkg leaves it unconfigured, and apt installs them.
install_deb() {
  echo "# dpkg -i $(basename "$deb")"
  if ! dpkg -i "$deb"; then
    echo "# dpkg -i failed; installing the dependencies: apt-get install -y $deb"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb"
  fi
}

echo
echo "== cycle 1: install"
install_deb
expect "dpkg status" installed "$(pkg_status)"
expect "polypush --version" "polypush $upstream_version" "$(/usr/bin/polypush --version 2>&1)"
echo "# polypush --config /etc/polypush/polypush.toml check"
set +e
check_out=$(/usr/bin/polypush --config /etc/polypush/polypush.toml check 2>&1)
check_rc=$?
set -e
sed -n '1,3p' <<<"$check_out" | sed 's/^/    /'
expect "check on the shipped config, as root: exit code" 0 "$check_rc"
# The way the unit's ExecStartPre runs it: as the service user, reading through the group.
check "check on the shipped config, as the polypush user" \
  runuser -u polypush -- /usr/bin/polypush --config /etc/polypush/polypush.toml check
check "user polypush exists" getent passwd polypush
expect "polypush's home and shell" "/var/lib/polypush:/usr/sbin/nologin" \
  "$(getent passwd polypush | cut -d: -f6-7)"
check "polypush is in group video" in_group video
check "polypush is in group audio" in_group audio
expect "/var/lib/polypush" "polypush:polypush 750" "$(owner_mode /var/lib/polypush)"
expect "/var/lib/polypush/recordings" "polypush:polypush 750" "$(owner_mode /var/lib/polypush/recordings)"
expect "/etc/polypush" "root:polypush 750" "$(owner_mode /etc/polypush)"
expect "/etc/polypush/polypush.toml" "root:polypush 640" "$(owner_mode /etc/polypush/polypush.toml)"
check "unit installed: $unit" test -f "$unit"
check "unit enabled (symlink $wants)" test -L "$wants"
check "dpkg --verify polypush: no changed file" test -z "$(dpkg --verify polypush)"
check "man -w polypush finds the man page" man_finds_page
check "bash completion registers polypush" bash_completion_loads

echo
echo "== cycle 1: reinstall over itself with a locally changed conffile (the upgrade path)"
echo "# local change" >>/etc/polypush/polypush.toml
install_deb
expect "dpkg status" installed "$(pkg_status)"
check "the local change to the conffile is kept" grep -qx "# local change" /etc/polypush/polypush.toml
check "unit still enabled" test -L "$wants"
expect "/etc/polypush/polypush.toml after the upgrade" "root:polypush 640" \
  "$(owner_mode /etc/polypush/polypush.toml)"

echo
echo "== cycle 1: dpkg -r (remove, keep configuration)"
dpkg -r polypush
expect "dpkg status" config-files "$(pkg_status)"
check "binary removed" test ! -e /usr/bin/polypush
check "unit file removed" test ! -e "$unit"
check "conffile kept" test -f /etc/polypush/polypush.toml
expect "unit masked while removed (deb-systemd-helper mask)" /dev/null \
  "$(readlink /etc/systemd/system/polypush.service || true)"

echo
echo "== cycle 1: dpkg --purge"
dpkg --purge polypush
expect "dpkg status" not-installed "$(pkg_status)"
for path in /usr/bin/polypush "$unit" /etc/polypush /usr/lib/sysusers.d/polypush.conf \
  /usr/lib/tmpfiles.d/polypush.conf /usr/share/man/man1/polypush.1.gz \
  /usr/share/doc/polypush /var/lib/polypush "$wants" /etc/systemd/system/polypush.service; do
  check "gone: $path" gone "$path"
done
check "no deb-systemd-helper state left" \
  test -z "$(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
    -name '*polypush*' 2>/dev/null)"
check "user polypush kept (Debian keeps system users)" getent passwd polypush

echo
echo "== cycle 2: install, add a password and a recording, purge"
install_deb
expect "dpkg status" installed "$(pkg_status)"
(umask 077 && echo "not-a-password" >/etc/polypush/password)
runuser -u polypush -- sh -c 'echo flv > /var/lib/polypush/recordings/test-segment.flv'
runuser -u polypush -- sh -c 'echo other > /var/lib/polypush/other-state'
dpkg --purge polypush
expect "dpkg status" not-installed "$(pkg_status)"
check "gone: /etc/polypush (password included)" test ! -e /etc/polypush
check "kept: the recording /var/lib/polypush/recordings/test-segment.flv" \
  test -f /var/lib/polypush/recordings/test-segment.flv
check "gone: other state (/var/lib/polypush/other-state)" test ! -e /var/lib/polypush/other-state
check "gone: /usr/bin/polypush" test ! -e /usr/bin/polypush

echo
echo "== cleaning up what the purges keep by design"
if [ "$state_existed" = 0 ]; then
  rm -rf /var/lib/polypush
  echo "removed /var/lib/polypush (kept recordings)"
fi
if [ "$user_existed" = 0 ] && getent passwd polypush >/dev/null; then
  userdel polypush
  getent group polypush >/dev/null && groupdel polypush
  echo "removed the user and group polypush (this run created them)"
fi

echo
echo "== summary: $pass passed, ${#failures[@]} failed ($(basename "$deb"), $systemd_state)"
if [ "${#failures[@]}" -gt 0 ]; then
  printf '  FAIL  %s\n' "${failures[@]}"
  exit 1
fi
echo "PASS"
