#!/usr/bin/env bash
# The offline profile's defaults, chosen on validation articles only (never the test split):
#   bash scripts/choose-defaults.sh        (about 30 min on 2 cores; reports land in reports/choose/)
# English: SQuAD part A articles 10-11 (150 seeded questions). Korean: KorQuAD 1.0 dev articles 90-99.
# Each run changes one setting of config.offline.toml through its RAG_* override; guides/evaluation.md
# "What reranking buys" lists the results and what was picked.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=config.offline.toml
S=../shared/data/squad/squad-v1.1-dev-part-a.json
K=../shared/data/korquad/KorQuAD_v1.0_dev.json
EN=(squad $S --articles 10:12 --limit 150 --config $C)
mkdir -p reports/choose

# English first stage, each with and without the shipped reranker
$PY -m lab.evaluate "${EN[@]}" --modes dense,bm25,hybrid --out reports/choose/en-modes.json
# how many candidates the reranker sees (top_k), and how much of each it reads (max_length)
for k in 10 30; do
  RAG_RETRIEVAL__TOP_K=$k $PY -m lab.evaluate "${EN[@]}" --modes auto --out reports/choose/en-top-k-$k.json
done
RAG_RERANKER__MAX_LENGTH=256 $PY -m lab.evaluate "${EN[@]}" --modes auto --out reports/choose/en-max-length-256.json
# what is read of a paragraph longer than max_length (the English model was trained reading the head)
RAG_RERANKER__LONG_PASSAGES=best-window $PY -m lab.evaluate "${EN[@]}" --modes auto \
    --out reports/choose/en-long-passages-best-window.json
# the ONNX Runtime backend (fp32: the same ranking, faster; int8: faster, other scores)
for b in onnx onnx-int8; do
  RAG_RERANKER__BACKEND=$b $PY -m lab.evaluate "${EN[@]}" --modes auto --out reports/choose/en-backend-$b.json
done
# Korean first stage
$PY -m lab.evaluate squad $K --articles 90:100 --modes dense,bm25,hybrid --no-rerank --config $C \
    --out reports/choose/ko-modes.json
