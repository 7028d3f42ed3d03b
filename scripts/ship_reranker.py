"""Copy a trained LoRA reranker into rag/shipped/NAME with its model card.

    .venv/bin/python scripts/ship_reranker.py runs/en/minilm-lora minilm-en \\
        --card scripts/cards/minilm-en.md --checkpoint checkpoint-160

Only the adapter (adapter_config.json, adapter_model.safetensors) and reading.json (how the model
read its inputs in training: rag.rerankers.reading) are shipped: the adapter loads on top of
its base (named in adapter_config.json, a pkg: model the install already has). The card is the
text of --card with the run's own facts appended (steps, CPU time, validation before/after,
settings), read from the run's finetune.json, so they cannot drift from what was trained.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from rag.rerankers.reading import write_reading  # noqa: E402

FILES = ("adapter_config.json", "adapter_model.safetensors")
LIMIT = 20 * 2**20  # each shipped file at most 20 MB


def facts(run: Path, checkpoint: Path) -> str:
    """The run's settings (finetune.json) and the checkpoint's own log (trainer_state.json)."""
    report = json.loads((run / "finetune.json").read_text(encoding="utf-8"))
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    r = report["run"]
    shown = ("mrr@10", "hit@1", "hit@3", "ndcg@10")
    before = "  ".join(f"{k} {report['before'][k]:.3f}" for k in shown)
    checks = [e for e in state["log_history"] if "eval_mrr@10" in e]
    losses = [f"{e['loss']:.2f}" for e in state["log_history"] if "loss" in e]
    lines = [
        "## The run (from its finetune.json and the checkpoint's trainer_state.json)",
        "",
        f"- base: `{r['base']}`, kind `{r.get('kind', 'cross-encoder')}`, "
        f"LoRA rank {r.get('lora')}",
        f"- training groups: {r['train_groups']} ({r['data']}), validation groups: "
        f"{r['val_groups']} ({r['val']})",
        f"- group size {r['group_size']} (1 positive + {r['group_size'] - 1} mined negatives), "
        f"max_len {r['max_len']}, "
        f"lr {r['lr']}, {r['batch_size']} queries a step, seed {r['seed']}, long passages read as "
        f"{r.get('long_passages', 'head')}",
        f"- shipped: `{checkpoint.name}`, step {state['global_step']} of {state['max_steps']} "
        f"(epoch {state['epoch']:.2f})",
        f"- validation before training: {before}",
        *(
            f"- validation at step {e['step']}: "
            + "  ".join(f"{k} {e['eval_' + k]:.3f}" for k in shown)
            for e in checks
        ),
        f"- training loss every {state['logging_steps']} steps: {' '.join(losses)} (chance: ln "
        f"{r['group_size']} "
        f"= {math.log(r['group_size']):.2f})",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="the run directory of lab.finetune train")
    parser.add_argument("name", help="the shipped: name")
    parser.add_argument(
        "--card", type=Path, required=True, help="the model card's hand-written part (Markdown)"
    )
    parser.add_argument(
        "--checkpoint", required=True, help="the checkpoint folder under RUN/checkpoints to ship"
    )
    args = parser.parse_args()
    source = args.run / "checkpoints" / args.checkpoint
    target = REPO / "rag" / "shipped" / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        size = (source / name).stat().st_size
        if size > LIMIT:
            raise SystemExit(f"{source / name} is {size / 2**20:.1f} MB; the limit is 20 MB")
        shutil.copyfile(source / name, target / name)
    # How the model read its inputs in training, so that use reads the same (rag.rerankers.reading).
    run = json.loads((args.run / "finetune.json").read_text(encoding="utf-8"))["run"]
    write_reading(
        target,
        long_passages=run.get("long_passages", "head"),
        romanize_hangul=run.get("romanize_hangul", False),
    )
    card = args.card.read_text(encoding="utf-8").rstrip() + "\n\n" + facts(args.run, source)
    (target / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(f"shipped {source} as shipped:{args.name} in {target}")


if __name__ == "__main__":
    main()
