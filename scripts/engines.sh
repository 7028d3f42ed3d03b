#!/usr/bin/env bash
# The real inference servers the tests run on 127.0.0.1, each in its own virtual environment (as a
# container would be), built once and kept in $ENGINES_HOME (default ~/.cache/rag-rerank/engines):
#   infinity   Infinity (infinity-emb): OpenAI-style /embeddings and Cohere-style /rerank
#   llama      llama.cpp's server (llama-cpp-python[server]): OpenAI-style /v1/chat/completions,
#              compiled here from source (about 4-7 minutes on 2 cores)
# A venv is rebuilt only when its pinned requirements (deploy/engines/NAME.txt) change.
#   bash scripts/engines.sh            (all)      bash scripts/engines.sh infinity
# LLAMA_CMAKE_ARGS: the llama.cpp build's CMake flags. The default is a portable x86-64 build (AVX2,
# FMA, F16C), not -march=native: a cache built on one CPU must not die with SIGILL on another.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
HOME_DIR=${ENGINES_HOME:-$HOME/.cache/rag-rerank/engines}
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF}
mkdir -p "$HOME_DIR"

build() {
  local name=$1 req="deploy/engines/$1.txt" venv="$HOME_DIR/$1"
  # One build of an engine at a time: a second caller (the tests' background build, a bench)
  # waits for it, then finds the venv ready. The lock goes with the next engine's or at exit.
  exec 9>"$HOME_DIR/.$name.lock"
  flock 9
  local stamp
  if [ "$name" = llama ]; then
    stamp=$({ cat "$req"; echo "$LLAMA_CMAKE_ARGS"; } | sha256sum | cut -c1-16)
  else
    stamp=$(sha256sum "$req" | cut -c1-16)
  fi
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
  if [ "$name" = llama ]; then
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS, and could hand back a -march=native build
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      $pip install -q --no-cache-dir --no-deps --no-binary llama-cpp-python -r "$req"
  else
    $pip install -q --no-deps -r "$req"
  fi
  echo "$stamp" > "$venv/.built"
  echo "engine $name: built in $((SECONDS - started)) s"
}

for name in ${@:-infinity llama}; do
  build "$name"
done
