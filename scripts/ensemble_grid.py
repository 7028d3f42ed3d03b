"""The lexical member's weight in an ensemble with a cross-encoder, by a grid on held-out articles.

Ranks each question's first-stage top 20 on SQuAD articles A:B (the first stage of the config)
by cross-encoder logit + w x lexical logit for each w, fused with the first stage's rank at the
pipeline's retrieval weights, and prints MRR@10 / hit@1 / gold-in-top-5 per (w, weight). Both
scorers run once per question; the grid reuses their scores. The README's choice:

    python scripts/ensemble_grid.py runs/en-fold/minilm-lora/checkpoints/checkpoint-160 \\
        /tmp/lex/en-fold --articles 8:12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lab.datasets import load_squad, parse_span  # noqa: E402
from lab.evaluation import eval_settings, index_passages  # noqa: E402
from rag.config import load_settings  # noqa: E402
from rag.pipeline import build_pipeline, load_configured_reranker  # noqa: E402

LEXICAL_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)
RETRIEVAL_WEIGHTS = (0.0, 0.5, 1.0)


def metrics(rows, lexical_weight: float, retrieval_weight: float, k: int = 60):
    """MRR@10, hit@1 and gold in the top 5 over rows of (gold flags, CE logits, lexical logits)."""
    rr = hit = top5 = 0.0
    for gold, cross, lexical in rows:
        n = len(gold)
        score = [cross[i] + lexical_weight * lexical[i] for i in range(n)]
        order = sorted(range(n), key=lambda i: (-score[i], i))
        reranked = {i: r for r, i in enumerate(order, start=1)}
        fused = sorted(
            range(n),
            key=lambda i: (-(1 / (k + reranked[i]) + retrieval_weight / (k + i + 1)), reranked[i]),
        )
        first = next((r for r, i in enumerate(fused[:10], start=1) if gold[i]), None)
        rr += 1 / first if first else 0.0
        hit += first == 1
        top5 += any(gold[i] for i in fused[:5])
    return rr / len(rows), hit / len(rows), top5 / len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cross_encoder", help="the cross-encoder member (a model spec)")
    parser.add_argument("lexical", help="the lexical member (a folder with lexical.json)")
    parser.add_argument("--articles", type=parse_span, required=True)
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared/data/squad/squad-v1.1-dev-part-a.json"
    )
    parser.add_argument("--config", type=Path, default=REPO / "config.offline.toml")
    args = parser.parse_args()
    corpus = load_squad(args.data, articles=args.articles)
    settings = eval_settings(load_settings(args.config), corpus)
    pipeline = build_pipeline(settings, reranker=False, generator=False, create_store=True)
    index_passages(pipeline.retriever.store, corpus.passages, pipeline.retriever.embedder)
    cross = load_configured_reranker(settings, kind="cross-encoder", model=args.cross_encoder)
    lexical = load_configured_reranker(settings, kind="lexical", model=args.lexical)
    rows = []
    for query in corpus.queries:
        hits = pipeline.retriever.search(query.text, k=20, mode=settings.retrieval.mode).hits
        texts = [chunk.text for chunk, _ in hits]
        rows.append(
            (
                [chunk.id in query.gold for chunk, _ in hits],
                cross.score_pairs(query.text, texts)[0],
                lexical.score_pairs(query.text, texts)[0],
            )
        )
    print(f"{len(rows)} questions; first stage {settings.retrieval.mode}, top 20")
    print("| lexical weight | retrieval weight | MRR@10 | hit@1 | gold in top 5 |")
    print("|---|---|---|---|---|")
    for w in LEXICAL_WEIGHTS:
        for rw in RETRIEVAL_WEIGHTS:
            mrr, hit1, top5 = metrics(rows, w, rw)
            print(f"| {w:g} | {rw:g} | {mrr:.3f} | {hit1:.3f} | {top5:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
