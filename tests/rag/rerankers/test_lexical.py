"""The lexical reranker (rag.rerankers.lexical): the shipped Korean model on real KorQuAD articles
it was not fitted on, its features, its file, and `lab.finetune lexical` making one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.datasets import load_squad
from rag.lexical import Bm25Index
from rag.models import ModelLoadError
from rag.rerankers import LexicalReranker, RerankerOptions, load_reranker
from rag.rerankers.lexical import TABLE_FILE, LexicalModel
from tests.conftest import REPO, SHARED_DATA

KORQUAD = SHARED_DATA / "korquad" / "KorQuAD_v1.0_dev.json"


def shipped() -> LexicalReranker:
    return load_reranker("lexical", RerankerOptions(model="shipped:lexical-ko"))


def mrr_hit(rankings: list[list[bool]]) -> tuple[float, int]:
    rr = [next((1 / i for i, g in enumerate(r[:10], start=1) if g), 0.0) for r in rankings]
    return sum(rr) / len(rr), sum(1 for r in rankings if r and r[0])


def test_the_shipped_korean_model_beats_bm25_on_articles_it_was_not_fitted_on() -> None:
    """KorQuAD validation articles 90-99 (fitted on 0-89): BM25's top 20, reranked, hold the gold
    paragraph higher; and the shown scores separate it from the rest."""
    reranker = shipped()
    assert (reranker.kind, reranker.backend, reranker.device) == ("lexical", "python", "cpu")
    assert reranker.describe() == "lexical: shipped:lexical-ko (cpu, python)"
    corpus = load_squad(KORQUAD, articles=slice(90, 100))
    index = Bm25Index([p.id for p in corpus.passages], [p.text for p in corpus.passages])
    text = {p.id: p.text for p in corpus.passages}
    before, after, gold_scores, other_scores = [], [], [], []
    for query in corpus.queries:
        hits = [pid for pid, _ in index.search(query.text, 20)]
        raw, truncated = reranker.score_pairs(query.text, [text[pid] for pid in hits])
        assert not any(truncated)
        order = sorted(range(len(hits)), key=lambda i: (-raw[i], i))
        before.append([pid in query.gold for pid in hits])
        after.append([hits[i] in query.gold for i in order])
        for pid, score in zip(hits, raw):
            (gold_scores if pid in query.gold else other_scores).append(score)
    (mrr_before, hit_before), (mrr_after, hit_after) = mrr_hit(before), mrr_hit(after)
    assert len(corpus.queries) > 300
    assert mrr_after > mrr_before and hit_after > hit_before, (
        mrr_before,
        mrr_after,
        hit_before,
        hit_after,
    )
    # logits: the gold paragraphs' median above 0 (sigmoid > 0.5), the others' median below
    gold_scores.sort()
    other_scores.sort()
    assert gold_scores[len(gold_scores) // 2] > 0 > other_scores[len(other_scores) // 2]


def test_features_read_one_sentence_and_the_whole_passage() -> None:
    model = shipped().model
    question = model.tokens("관리자 계정 비밀번호의 최소 길이는?")
    together = model.passage_terms("관리자 계정의 비밀번호는 최소 길이가 16자이다. 날씨가 좋다.")
    apart = model.passage_terms("관리자 계정은 따로 만든다. 비밀번호는 최소 길이가 16자이다.")
    unrelated = model.passage_terms("바나나는 노랗다. 사과는 빨갛다.")
    f_together, f_apart, f_unrelated = (
        model.features(question, p) for p in (together, apart, unrelated)
    )
    assert f_together[0] == pytest.approx(1.0)  # one sentence holds every term
    assert f_apart[0] < 1.0 and f_apart[2] > 0.5 * f_together[2] > 0
    assert f_unrelated == [0.0, 0.0, 0.0]
    assert model.logit(f_together) > model.logit(f_apart) > model.logit(f_unrelated)


def test_a_score_depends_on_its_pair_alone() -> None:
    """The score cache keys on (question, passage): a passage scores the same alone or among
    others."""
    reranker = shipped()
    passages = ["관리자 계정의 비밀번호는 최소 16자이다.", "바나나는 노랗다.", "계정은 잠긴다."]
    together, _ = reranker.score_pairs("관리자 비밀번호 길이", passages)
    alone = [reranker.score_pairs("관리자 비밀번호 길이", [p])[0][0] for p in passages]
    assert together == alone


def test_a_bad_model_folder_is_named(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r"no lexical\.json in .*lab\.finetune lexical"):
        load_reranker("lexical", RerankerOptions(model=str(tmp_path)))
    (tmp_path / TABLE_FILE).write_text('{"format": "rag-lexical-1", "documents": 3}')
    with pytest.raises(ModelLoadError, match=rf"{tmp_path}.*lexical\.json: KeyError"):
        load_reranker("lexical", RerankerOptions(model=str(tmp_path)))
    (tmp_path / TABLE_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"lexical\.json: not readable JSON"):
        load_reranker("lexical", RerankerOptions(model=str(tmp_path)))
    (tmp_path / TABLE_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ModelLoadError, match=r"not a lexical reranker"):
        load_reranker("lexical", RerankerOptions(model=str(tmp_path)))


def test_finetune_lexical_fits_a_model_that_loads(tmp_path) -> None:
    """`lab.finetune lexical` on five KorQuAD articles: a lexical.json that loads as a reranker and
    reads back as written."""
    out = tmp_path / "lex"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab.finetune",
            "lexical",
            "squad",
            str(KORQUAD),
            "--articles",
            "0:5",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "BM25 order MRR@10" in done.stdout and f"{out / TABLE_FILE} written" in done.stdout
    written = json.loads((out / TABLE_FILE).read_text(encoding="utf-8"))
    assert written["trained_on"] == "KorQuAD_v1.0_dev.json articles 0:5"
    assert written["logit"]["scale"] > 0 and written["documents"] >= 20
    model = LexicalModel.read(out / TABLE_FILE)
    assert LexicalModel.read(out / TABLE_FILE) == model
    assert model.to_json() == (out / TABLE_FILE).read_text(encoding="utf-8")
    reranker = load_reranker("lexical", RerankerOptions(model=str(out)))
    raw, _ = reranker.score_pairs("관리자 비밀번호", ["관리자 비밀번호는 16자", "바나나"])
    assert raw[0] > raw[1]


def test_finetune_lexical_names_a_missing_file(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lab.finetune", "lexical", "squad", str(tmp_path / "no.json")]
        + ["--out", str(tmp_path / "x")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "no.json: file not found" in done.stderr
    assert not (tmp_path / "x").exists()
