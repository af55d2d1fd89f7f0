# shellcheck shell=bash
# Shared preamble of the one-shot bench scripts (compare.sh, squeeze_compare.sh); sourced.
#
#   bench_prepare NAME TOOL...   checks TOOLs and the nginx RTMP module (exit 2 if missing),
#                                builds polypush (release, $CARGO_TARGET_DIR respected), and
#                                sets: polypush (the binary), work (BENCH_DIR or a fresh
#                                /tmp/polypush-NAME.XXXXXX), keep (1 when BENCH_DIR was given).

# shellcheck disable=SC2034 # polypush, work and keep are for the sourcing script
bench_prepare() {
    local name="$1" tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing: $tool (scripts/install-deps.sh installs the dependencies)" >&2; exit 2; }
    done
    [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || { echo "missing: libnginx-mod-rtmp" >&2; exit 2; }

    echo "building polypush (release)" >&2
    cargo build --release --bin polypush >&2
    polypush="$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)/polypush"

    if [ -n "${BENCH_DIR:-}" ]; then
        work="$BENCH_DIR"; keep=1
    else
        work=$(mktemp -d "/tmp/polypush-$name.XXXXXX"); keep=0
    fi
}
