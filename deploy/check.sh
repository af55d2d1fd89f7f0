#!/usr/bin/env bash
# Checks the fleet kit in deploy/ with the tools it is written for:
#   - ansible-playbook --syntax-check of the example playbook and inventory,
#   - ansible-lint (production profile) over deploy/ansible,
#   - the config template rendered for every example host, validated by `polypush check`,
#   - promtool check config (prometheus.yml with its rules and targets), check rules, test rules.
# Ansible and ansible-lint come from PATH, else from a venv it creates with pip
# ($POLYPUSH_ANSIBLE_VENV, default ~/.cache/polypush-tools/ansible-venv); promtool from
# scripts/promtool.sh; polypush from $POLYPUSH_BIN or the cargo target directory. A tool that
# cannot be had is SKIPPED with the reason. Exit 1 when a check that ran failed.
set -uo pipefail

deploy="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$deploy")"
venv="${POLYPUSH_ANSIBLE_VENV:-${HOME:-/tmp}/.cache/polypush-tools/ansible-venv}"
# What the venv gets (the versions this kit was last checked with).
pip_packages=("ansible-core==2.19.14" "ansible-lint==26.10.1")

failed=0
tmp="$(mktemp -d /tmp/polypush-deploy-check.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n== %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
skip() { printf 'SKIPPED: %s\n' "$*"; }
fail() {
  printf 'FAILED: %s\n' "$*"
  failed=1
}
# Runs a command, showing its output only when it fails.
run() {
  local what="$1"
  shift
  if "$@" >"$tmp/out" 2>&1; then
    ok "$what"
  else
    cat "$tmp/out"
    fail "$what"
  fi
}

# --- Ansible ------------------------------------------------------------------------------
ansible_bin=""
if command -v ansible-playbook >/dev/null 2>&1 && command -v ansible-lint >/dev/null 2>&1; then
  ansible_bin="$(dirname "$(command -v ansible-playbook)")"
elif [ -x "$venv/bin/ansible-playbook" ] && [ -x "$venv/bin/ansible-lint" ]; then
  ansible_bin="$venv/bin"
elif command -v python3 >/dev/null 2>&1; then
  step "creating $venv (pip install ${pip_packages[*]})"
  if python3 -m venv "$venv" >"$tmp/venv.log" 2>&1 &&
    "$venv/bin/pip" install -q "${pip_packages[@]}" >>"$tmp/venv.log" 2>&1; then
    ansible_bin="$venv/bin"
  else
    tail -5 "$tmp/venv.log"
  fi
fi

step "ansible-playbook --syntax-check"
if [ -z "$ansible_bin" ]; then
  skip "no ansible-playbook on PATH and no venv could be made with python3 -m venv + pip (set POLYPUSH_ANSIBLE_VENV, or install ansible-core and ansible-lint)"
else
  export PATH="$ansible_bin:$PATH"
  export ANSIBLE_LOCAL_TEMP="$tmp/ansible-local" ANSIBLE_NOCOLOR=1
  cd "$deploy/ansible" || exit 1
  run "site.yml with inventory/hosts.yml" ansible-playbook --syntax-check -i inventory/hosts.yml site.yml
  run "render.yml with inventory/hosts.yml" ansible-playbook --syntax-check -i inventory/hosts.yml render.yml

  step "ansible-lint (profile production)"
  # ansible-lint keeps a cache in .ansible/ of the project: removed again if it was not there.
  [ -e .ansible ] && had_cache=1 || had_cache=0
  run "ansible-lint deploy/ansible" ansible-lint --nocolor --profile production .
  [ "$had_cache" = 1 ] || rm -rf .ansible

  step "the config template, rendered for every example host, through polypush check"
  bin="${POLYPUSH_BIN:-}"
  if [ -z "$bin" ]; then
    target="${CARGO_TARGET_DIR:-$repo/target}"
    # The newer of the release and debug builds.
    for candidate in "$target/release/polypush" "$target/debug/polypush"; do
      if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then
        bin="$candidate"
      fi
    done
  fi
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    skip "no polypush binary (cargo build, or set POLYPUSH_BIN)"
  else
    # Stand-ins for the vault, and the token where this machine can have it.
    token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    (umask 077 && echo "$token" >"$tmp/status-token")
    mkdir -p "$tmp/render"
    if ansible-playbook -i inventory/hosts.yml render.yml \
      -e "polypush_render_dir=$tmp/render" \
      -e "vault_polypush_channel_password=not-a-password" \
      -e "vault_polypush_status_token=$token" \
      -e "polypush_status_token_file=$tmp/status-token" >"$tmp/out" 2>&1; then
      n=0
      for f in "$tmp"/render/*.toml; do
        [ -e "$f" ] || continue
        n=$((n + 1))
        run "$(basename "$f" .toml): polypush check" "$bin" --config "$f" check
      done
      [ "$n" -gt 0 ] || fail "render.yml rendered nothing"
    else
      cat "$tmp/out"
      fail "render.yml"
    fi
  fi
  cd "$repo" || exit 1
fi

# --- Prometheus -----------------------------------------------------------------------------
step "promtool"
if ! promtool="$("$repo/scripts/promtool.sh" 2>"$tmp/promtool.err")"; then
  skip "no promtool: $(cat "$tmp/promtool.err")"
else
  rules="$deploy/prometheus/rules"
  run "promtool check rules polypush.rules.yml" "$promtool" check rules "$rules/polypush.rules.yml"
  if (cd "$rules" && "$promtool" test rules polypush.rules.test.yml) >"$tmp/out" 2>&1; then
    ok "promtool test rules polypush.rules.test.yml"
  else
    cat "$tmp/out"
    fail "promtool test rules polypush.rules.test.yml"
  fi
  # As installed: rules/ and targets/ beside prometheus.yml, and the token file it names.
  mkdir -p "$tmp/prometheus"
  cp -r "$deploy/prometheus/." "$tmp/prometheus/"
  echo "not-a-real-token" >"$tmp/prometheus/polypush-status-token"
  run "promtool check config prometheus.yml" "$promtool" check config "$tmp/prometheus/prometheus.yml"
fi

# --- Grafana --------------------------------------------------------------------------------
step "grafana/polypush-fleet.json"
if command -v python3 >/dev/null 2>&1; then
  run "valid JSON" python3 -m json.tool "$deploy/grafana/polypush-fleet.json"
else
  skip "no python3 to parse the dashboard (tests/fleet_kit.rs parses it too)"
fi

echo
if [ "$failed" = 0 ]; then
  echo "deploy/check.sh: all checks that ran passed"
else
  echo "deploy/check.sh: FAILED"
fi
exit "$failed"
