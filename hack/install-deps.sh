#!/usr/bin/env bash
# Installs the Debian packages converge's scripts and tests use, when missing:
# openssl/curl/iproute2/util-linux for the control plane, python3-venv for the
# kubectl wheel, git for Git sources and the test Git server (git http-backend),
# openssh-server/-client for the SSH source tests, gcc + pkg-config + libssl-dev
# to build git2 (libgit2 and libssh2 are compiled from source), chromium and
# chromium-driver (chromedriver, version-matched to chromium by Debian) with
# fonts-liberation for the web page's browser tests (tests/it/web.rs drives it
# over WebDriver; no browser download). Then
# markdown-it-py (PyPI) in its own venv, the parser tests/it/preview.rs checks
# `diff -o markdown` with: $CONVERGE_MARKDOWN_VENV (default
# ~/.cache/converge/markdown-it-$MARKDOWN_IT_VERSION).
set -euo pipefail

MARKDOWN_IT_VERSION=4.0.0
MARKDOWN_VENV=${CONVERGE_MARKDOWN_VENV:-$HOME/.cache/converge/markdown-it-$MARKDOWN_IT_VERSION}

log() { printf 'install-deps: %s\n' "$*" >&2; }

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need openssl openssl
need curl curl
need ss iproute2
need setsid util-linux
need git git
need pkg-config pkg-config
need ssh-keygen openssh-client
need cc gcc
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
[[ -e /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
[[ -x /usr/lib/git-core/git-http-backend ]] || missing+=(git)
need chromium chromium
need chromedriver chromium-driver
[[ -d /usr/share/fonts/truetype/liberation ]] || missing+=(fonts-liberation)

install_debian() {
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || { log "missing: ${missing[*]}; install them with your package manager"; exit 1; }
  local sudo=
  [[ $(id -u) == 0 ]] || sudo=sudo
  log "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_markdown_it() {
  "$MARKDOWN_VENV/bin/python" -c 'import markdown_it' 2>/dev/null && return 0
  log "installing markdown-it-py $MARKDOWN_IT_VERSION into $MARKDOWN_VENV"
  python3 -m venv "$MARKDOWN_VENV"
  "$MARKDOWN_VENV/bin/pip" install -q "markdown-it-py==$MARKDOWN_IT_VERSION" \
    || { rm -rf "$MARKDOWN_VENV"; log "pip could not install markdown-it-py==$MARKDOWN_IT_VERSION"; exit 1; }
}

install_debian
install_markdown_it
