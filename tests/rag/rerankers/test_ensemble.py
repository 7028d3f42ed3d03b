"""The ensemble reranker (rag.rerankers.ensemble): the weighted sum of its members' logits, loaded
from a folder's ensemble.json through the registry."""

from __future__ import annotations

import json

import pytest

from rag.models import ModelLoadError
from rag.rerankers import EnsembleReranker, RerankerOptions, load_reranker
from rag.rerankers.ensemble import FORMAT, TABLE_FILE
from tests.rag.rerankers.helpers import make_candidates

QUESTION = "How long is the battery pack warranty?"
PASSAGES = [
    "The battery pack is covered for 24 months or 2,000 charge cycles, whichever comes first.",
    "Bananas are yellow.",
    "The warranty does not cover damage from water.",
]


def write(folder, members) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TABLE_FILE).write_text(json.dumps({"format": FORMAT, "members": members}))
    return str(folder)


def options(model: str) -> RerankerOptions:
    return RerankerOptions(model=model, device="cpu", max_length=256)


def test_the_score_is_the_weighted_sum_of_the_members_logits(tmp_path) -> None:
    cross = load_reranker("cross-encoder", options("shipped:minilm-en"))
    lexical = load_reranker("lexical", options("shipped:lexical-en"))
    folder = write(
        tmp_path / "ens",
        [
            {"kind": "cross-encoder", "model": "shipped:minilm-en", "weight": 1.0},
            {"kind": "lexical", "model": "shipped:lexical-en", "weight": 0.5},
        ],
    )
    ensemble = load_reranker("ensemble", options(folder))
    assert isinstance(ensemble, EnsembleReranker)
    assert (ensemble.kind, ensemble.backend) == ("ensemble", "python")
    assert ensemble.describe() == (
        f"ensemble: {folder} (cpu: 1 x cross-encoder shipped:minilm-en + "
        "0.5 x lexical shipped:lexical-en)"
    )
    a, _ = cross.score_pairs(QUESTION, PASSAGES)
    b, _ = lexical.score_pairs(QUESTION, PASSAGES)
    both, cut = ensemble.score_pairs(QUESTION, PASSAGES)
    assert both == pytest.approx([x + 0.5 * y for x, y in zip(a, b)], abs=1e-5)
    assert cut == [False] * 3
    ranked = ensemble.rerank(QUESTION, make_candidates(PASSAGES))
    assert ranked[0].chunk.text == PASSAGES[0] and ranked[-1].chunk.text == PASSAGES[1]


def test_the_shipped_english_ensemble_loads_by_name() -> None:
    ensemble = load_reranker("ensemble", options("shipped:minilm-lexical-en"))
    assert [(m.kind, m.name, w) for m, w in ensemble.members] == [
        ("cross-encoder", "shipped:minilm-en", 1.0),
        ("lexical", "shipped:lexical-en", 1.0),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"no ensemble\.json in"),
        ("{oops", r"ensemble\.json: not readable JSON"),
        ('{"format": "x"}', r"not an ensemble"),
        (f'{{"format": "{FORMAT}", "members": []}}', r"members must be a non-empty list"),
        (
            f'{{"format": "{FORMAT}", "members": [{{"kind": "bge", "model": "m", "weight": 1}}]}}',
            r"member 0 kind 'bge'; valid: cross-encoder, llm, remote, lexical$",
        ),
        (
            f'{{"format": "{FORMAT}", "members": [{{"kind": "ensemble", "model": "m", '
            '"weight": 1}]}',
            r"member 0 kind 'ensemble'",
        ),
        (
            f'{{"format": "{FORMAT}", "members": [{{"kind": "lexical", "model": "m"}}]}}',
            r"member 0 must have exactly kind, model and weight",
        ),
        (
            f'{{"format": "{FORMAT}", "members": [{{"kind": "lexical", "model": "m", '
            '"weight": "1"}]}',
            r"member 0 weight '1' is not a number",
        ),
    ],
)
def test_a_bad_ensemble_file_is_named(tmp_path, content, message) -> None:
    if content is not None:
        (tmp_path / TABLE_FILE).write_text(content)
    with pytest.raises(ModelLoadError, match=message):
        load_reranker("ensemble", options(str(tmp_path)))


def test_a_member_that_cannot_load_is_named(tmp_path) -> None:
    folder = write(tmp_path / "ens", [{"kind": "lexical", "model": str(tmp_path), "weight": 1}])
    with pytest.raises(ModelLoadError, match=r"no lexical\.json"):
        load_reranker("ensemble", options(folder))
