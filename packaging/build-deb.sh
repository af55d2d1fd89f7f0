#!/usr/bin/env bash
# Builds the polypush Debian package with cargo-deb (`cargo install cargo-deb --version 3.8.0`).
#
#   packaging/build-deb.sh                         amd64 (the host): target/debian/polypush_*_amd64.deb
#   packaging/build-deb.sh --target aarch64-unknown-linux-gnu
#                                                  arm64, cross-compiled: run it through
#                                                  packaging/cross-arm64.sh --deb, which sets up
#                                                  the cross linker and pkg-config first
#   packaging/build-deb.sh --no-build [...]        package the binaries already built
#   packaging/build-deb.sh --output DIR [...]      write the .deb to DIR (default: <target dir>/debian)
#
# Steps: cargo build --release (respects CARGO_TARGET_DIR and cargo's build.target-dir); the
# man page and the bash, zsh and fish completions generated from the host's polypush binary
# (they do not depend on the architecture) into <target dir>[/TRIPLE]/release/deb-assets;
# then `cargo deb --no-build`. The last line printed is the path of the .deb.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

target="" build=1 output=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) [ $# -ge 2 ] || { echo "build-deb.sh: --target needs a value" >&2; exit 2; }
      target=$2; shift ;;
    --target=*) target=${1#--target=} ;;
    --output) [ $# -ge 2 ] || { echo "build-deb.sh: --output needs a value" >&2; exit 2; }
      output=$2; shift ;;
    --output=*) output=${1#--output=} ;;
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-deb.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

cd "$ROOT"

if ! cargo deb --version >/dev/null 2>&1; then
  echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --version 3.8.0" >&2
  exit 1
fi
# dpkg-dev: dpkg-shlibdeps (the $auto dependencies) and dpkg-parsechangelog.
if ! command -v dpkg-shlibdeps >/dev/null 2>&1 || ! command -v dpkg-parsechangelog >/dev/null 2>&1; then
  echo "build-deb.sh: dpkg-dev is missing: apt-get install dpkg-dev" >&2
  exit 1
fi

host=$(rustc -vV | sed -n 's/^host: //p')
[ "$target" = "$host" ] && target=""

# The package version must be the changelog's newest entry (cargo-deb names the package
# VERSION-1 from Cargo.toml; the changelog must say the same).
pkg_version=$(cargo pkgid | sed 's/.*[@#]//')
deb_version="$pkg_version-1"
changelog_version=$(dpkg-parsechangelog -l packaging/deb/changelog -S Version)
if [ "$changelog_version" != "$deb_version" ]; then
  echo "build-deb.sh: packaging/deb/changelog's newest entry is $changelog_version, but the" \
    "package is $deb_version (Cargo.toml version $pkg_version): add a changelog entry" >&2
  exit 1
fi

# The real target directory (CARGO_TARGET_DIR, build.target-dir, or ./target).
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "build-deb.sh: cannot find the target directory" >&2; exit 1; }
host_bin=$target_dir/release/polypush
if [ -n "$target" ]; then
  release_dir=$target_dir/$target/release
else
  release_dir=$target_dir/release
fi

# The host binary. When cross-building, without the cross environment a caller may have
# exported for the target (pkg-config would hand the host build the target's libraries).
build_host() {
  echo "== cargo build --release --bin polypush" >&2
  if [ -n "$target" ]; then
    env -u PKG_CONFIG_LIBDIR -u PKG_CONFIG_SYSROOT_DIR -u PKG_CONFIG_ALLOW_CROSS \
      cargo build --release --bin polypush >&2
  else
    cargo build --release --bin polypush >&2
  fi
}

if [ "$build" = 1 ]; then
  if [ -n "$target" ]; then
    echo "== cargo build --release --target $target --bin polypush" >&2
    if ! cargo build --release --target "$target" --bin polypush >&2; then
      echo "build-deb.sh: the cross build failed; for arm64 use packaging/cross-arm64.sh --deb" \
        "(it sets the cross linker, pkg-config and bindgen up, then calls this script)" >&2
      exit 1
    fi
  fi
  build_host
fi

for bin in "$host_bin" "$release_dir/polypush"; do
  [ -x "$bin" ] || { echo "build-deb.sh: $bin is missing (run without --no-build)" >&2; exit 1; }
done
host_version=$("$host_bin" --version)
if [ "$host_version" != "polypush $pkg_version" ]; then
  echo "build-deb.sh: $host_bin is '$host_version', expected 'polypush $pkg_version'" >&2
  exit 1
fi

# Man page and completions, from the host binary.
assets=$release_dir/deb-assets
echo "== generating the man page and completions into $assets" >&2
rm -rf "$assets"
mkdir -p "$assets"
"$host_bin" man | gzip -9n >"$assets/polypush.1.gz"
"$host_bin" completions bash >"$assets/polypush.bash"
"$host_bin" completions zsh >"$assets/_polypush"
"$host_bin" completions fish >"$assets/polypush.fish"
for f in polypush.1.gz polypush.bash _polypush polypush.fish; do
  [ -s "$assets/$f" ] || { echo "build-deb.sh: generated $assets/$f is empty" >&2; exit 1; }
done

deb_args=(--no-build)
env_args=()
if [ -n "$target" ]; then
  deb_args+=(--target "$target")
  # cargo-deb strips with `strip` unless told otherwise; the host's binutils cannot strip
  # another architecture, the cross binutils (aarch64-linux-gnu-strip) can.
  debian_triple=${target/-unknown-/-}
  for tool in strip objcopy; do
    if command -v "$debian_triple-$tool" >/dev/null 2>&1; then
      env_args+=("${tool^^}_${debian_triple}=$debian_triple-$tool")
    fi
  done
fi
[ -n "$output" ] && deb_args+=(--output "$output")

echo "== cargo deb ${deb_args[*]}" >&2
deb=$(env "${env_args[@]}" cargo deb "${deb_args[@]}" | tail -n 1)
if [ ! -f "$deb" ]; then
  echo "build-deb.sh: cargo deb did not report a package (got '$deb')" >&2
  exit 1
fi

# cargo-deb writes no DEBIAN/md5sums; add it (as dh_md5sums does: every file but the
# conffiles, whose checksums dpkg keeps itself), so that `dpkg --verify polypush` and debsums
# can tell a corrupted or modified file on a box. Repacked with dpkg-deb, root-owned, file
# times clamped to the changelog's date.
echo "== adding DEBIAN/md5sums" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$deb" "$work/root"
(
  cd "$work/root"
  find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
    grep -vxF -f <(sed 's|^/||' DEBIAN/conffiles 2>/dev/null || true) |
    tr '\n' '\0' | xargs -0 md5sum >DEBIAN/md5sums
)
chmod 0644 "$work/root/DEBIAN/md5sums"
SOURCE_DATE_EPOCH=$(date -d "$(dpkg-parsechangelog -l packaging/deb/changelog -S Date)" +%s) \
  dpkg-deb --root-owner-group -Zxz --build "$work/root" "$deb" >/dev/null
echo "$deb"
