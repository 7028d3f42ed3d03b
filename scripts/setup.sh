#!/usr/bin/env bash
# One command to install everything: a virtual environment in .venv with pinned
# dependencies and, where there is no NVIDIA GPU, the CPU build of torch.
#   bash scripts/setup.sh            (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)' \
  || { echo "error: Python 3.11 or 3.12 is required ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing the CUDA build of torch"
  $PIP install torch==2.13.0
else
  echo "no GPU: installing the CPU build of torch"
  # A local CPU wheel (pip's find-links) if there is one, else PyTorch's CPU index. Only the
  # wheel itself here: its dependencies come from the ordinary index with the project below.
  $PIP install --no-index --no-deps torch==2.13.0 2>/dev/null \
    || $PIP install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
fi

$PIP install -c constraints.txt -e ".[dev,ray]"

# Debian packages the tests use; apt runs only when one is missing:
#   chromium, chromium-driver  the browser test drives Debian's Chromium through chromedriver
#   docker-compose             validates docker-compose.yml (`docker-compose config`; no Docker engine needed)
#   nginx-light                the token proxy (deploy/chroma-auth.conf.template) the server-mode
#                              tests run in front of `chroma run`
browser=() tools=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
command -v chromedriver >/dev/null 2>&1 || browser+=(chromium-driver)
command -v docker-compose >/dev/null 2>&1 || tools+=(docker-compose)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || tools+=(nginx-light)
if [ ${#browser[@]} -gt 0 ] || [ ${#tools[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=(${browser[@]+"${browser[@]}"} ${tools[@]+"${tools[@]}"})
    echo "installing Debian's ${missing[*]} (for the tests)"
    apt-get update -qq
    if [ ${#browser[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
    if [ ${#tools[@]} -gt 0 ]; then
      # --no-install-recommends: docker-compose would otherwise pull in the Docker engine.
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tools[@]}" >/dev/null
    fi
  else
    if [ ${#browser[@]} -gt 0 ]; then
      echo "note: chromium/chromedriver not found and not root: the browser test will be skipped" \
           "(install the chromium and chromium-driver packages to run it)"
    fi
    if [ ${#tools[@]} -gt 0 ]; then
      echo "note: ${tools[*]} not found and not root: the compose-file test will be skipped and the" \
           "server-mode tests cannot run (install the Debian packages docker-compose and nginx-light)"
    fi
  fi
fi
echo "installed: activate with 'source .venv/bin/activate'"
