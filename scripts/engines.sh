#!/usr/bin/env bash
# The real inference servers the tests run on 127.0.0.1, each in its own virtual environment (as a
# container would be), built once and kept in $ENGINES_HOME (default ~/.cache/rag-rerank/engines):
#   infinity   Infinity (infinity-emb): OpenAI-style /embeddings and Cohere-style /rerank
# A venv is rebuilt only when its pinned requirements (deploy/engines/NAME.txt) change.
#   bash scripts/engines.sh            (all)      bash scripts/engines.sh infinity
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
HOME_DIR=${ENGINES_HOME:-$HOME/.cache/rag-rerank/engines}
mkdir -p "$HOME_DIR"

build() {
  local name=$1 req="deploy/engines/$1.txt" venv="$HOME_DIR/$1"
  local stamp
  stamp=$(sha256sum "$req" | cut -c1-16)
  if [ -f "$venv/.built" ] && [ "$(cat "$venv/.built")" = "$stamp" ]; then
    echo "engine $name: ready in $venv"
    return
  fi
  local started=$SECONDS
  echo "engine $name: building $venv"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  local pip="$venv/bin/python -m pip"
  case $name in
    infinity)
      # torch's CPU wheel, as scripts/setup.sh installs it (a local wheel, else PyTorch's CPU index)
      $pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null \
        || $pip install -q --no-deps torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
      ;;
  esac
  $pip install -q --no-deps -r "$req"
  echo "$stamp" > "$venv/.built"
  echo "engine $name: built in $((SECONDS - started)) s"
}

for name in ${@:-infinity}; do
  build "$name"
done
