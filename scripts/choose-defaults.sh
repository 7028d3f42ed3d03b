#!/usr/bin/env bash
# The offline profile's defaults, chosen on validation articles only (never the test split):
#   bash scripts/choose-defaults.sh        (about 60 min on 2 cores; reports land in reports/choose/)
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

# Settings compared on articles 8-11 with a model that has not seen 8-9 (`bash scripts/train-rerankers.sh
# en-fold` first): articles 10-11 alone are too easy to tell settings apart. The runs above were made
# before BM25 stemmed English words (retrieval.stemming); these compare stems with words as written.
FOLD=runs/en-fold/minilm-lora/checkpoints/checkpoint-160
for st in english none; do
  if [ -d $FOLD ]; then
    RAG_RETRIEVAL__STEMMING=$st RAG_RERANKER__MODEL=$FOLD $PY -m lab.evaluate squad $S --articles 8:12 --modes hybrid,bm25 \
        --retrieval-weights 0,0.5,1,2 --config $C --out reports/choose/en-fold-stemming-$st.json
  fi
  RAG_RETRIEVAL__STEMMING=$st $PY -m lab.evaluate squad $S --articles 10:12 --modes auto,bm25,hybrid \
      --retrieval-weights 0,0.5,1,2 --config $C --out reports/choose/en-stemming-$st-validation.json
  RAG_RETRIEVAL__STEMMING=$st $PY -m lab.evaluate squad $S --articles 0:10 --modes bm25,hybrid --no-rerank \
      --config $C --out reports/choose/en-stemming-$st-train-articles-first-stage.json
  RAG_RETRIEVAL__STEMMING=$st $PY -m lab.evaluate squad $K --articles 90:100 --modes bm25 --no-rerank \
      --config $C --out reports/choose/ko-stemming-$st-validation.json
done
