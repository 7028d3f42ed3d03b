"""rag.evaluate on real SQuAD v1.1 data (a small, seeded subset), the packaged MiniLM and real Chroma."""
from __future__ import annotations

import json

import pytest

from rag.evaluate import DatasetError, Query, load_squad, markdown, sample
from tests.cli import run_module
from tests.conftest import write_offline_config


@pytest.fixture(scope="module")
def squad(shared_data):
    return shared_data / "squad" / "squad-v1.1-dev-part-a.json"


def test_load_squad_gold_is_the_paragraph_of_each_question(squad):
    passages, queries = load_squad(squad, articles=1)
    assert len(passages) == 54 and {p.title for p in passages} == {"Super_Bowl_50"}
    assert len({p.id for p in passages}) == 54
    ids = {p.id: p for p in passages}
    first = next(q for q in queries if q.id == "56be4db0acb8001400a502ec")
    assert first.text == "Which NFL team represented the AFC at Super Bowl 50?"
    (gold,) = first.gold
    assert "Denver Broncos" in ids[gold].text
    assert all(len(q.gold) == 1 and next(iter(q.gold)) in ids for q in queries)


def test_sample_is_seeded_and_bounded():
    queries = [Query(str(i), f"q{i}", frozenset({"p"})) for i in range(50)]
    assert sample(queries, 10, seed=1) == sample(queries, 10, seed=1) != sample(queries, 10, seed=2)
    assert len(sample(queries, 10, seed=1)) == 10 and sample(queries, None, 0) == queries
    assert sample(queries, 500, 0) == queries


def test_bad_dataset_files_are_named(tmp_path):
    with pytest.raises(DatasetError, match="missing.json: file not found"):
        load_squad(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "1.1"}', encoding="utf-8")
    with pytest.raises(DatasetError, match="bad.json: not SQuAD v1.1 JSON"):
        load_squad(bad)
    empty = tmp_path / "empty.json"
    empty.write_text('{"data": []}', encoding="utf-8")
    with pytest.raises(DatasetError, match="no questions found"):
        load_squad(empty)


def test_markdown_table():
    report = {"dense": {"metrics": {"hit@1": 0.5, "mrr@10": 0.625},
                        "latency_ms": {"embed_query": {"p50": 10.0, "p95": 12.0}, "retrieve": {"p50": 4.0, "p95": 6.0}}}}
    assert markdown(report) == ("| run | hit@1 | mrr@10 | latency p50 / p95 |\n|---|---|---|---|\n"
                                "| dense | 0.500 | 0.625 | 14 / 18 ms |")


@pytest.mark.slow
def test_evaluate_command_on_a_squad_subset(tmp_path, squad, tiny_cross_encoder):
    config = write_offline_config(tmp_path)
    out = tmp_path / "report.json"
    env = {"RAG_RERANKER__KIND": "cross-encoder", "RAG_RERANKER__MODEL": tiny_cross_encoder,
           "RAG_RERANKER__MAX_LENGTH": "256"}
    args = ("rag.evaluate", "squad", squad, "--articles", "1", "--limit", "15", "--seed", "3",
            "--modes", "dense,bm25", "--config", config, "--out", out)
    result = run_module(*args, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["config"]["questions"] == 15 and report["config"]["passages"] == 54
    runs = report["runs"]
    assert list(runs) == ["dense", "bm25", "dense + rerank", "bm25 + rerank"]
    for run in runs.values():
        assert all(0.0 <= v <= 1.0 for v in run["metrics"].values())
        assert run["metrics"]["hit@1"] <= run["metrics"]["hit@3"] <= run["metrics"]["hit@10"]
        assert sum(run["gold_position_in_context"].values()) <= 15
    # reranking reorders the same first stage: its recall ceiling is unchanged
    assert runs["dense"]["metrics"]["recall@20 (first stage)"] == runs["dense + rerank"]["metrics"]["recall@20 (first stage)"]
    assert runs["dense"]["metrics"]["hit@10"] >= 0.8  # MiniLM finds SQuAD paragraphs among 54
    assert "rerank" in runs["dense + rerank"]["latency_ms"] and "rerank" not in runs["dense"]["latency_ms"]
    table = result.stdout.splitlines()
    assert table[0].startswith("| run | hit@1 | hit@3 | hit@5 | hit@10 | mrr@10 | ndcg@10 |") and len(table) == 6
    again = run_module(*args, env=env)  # the passages are indexed already: same numbers
    assert again.returncode == 0 and json.loads(out.read_text(encoding="utf-8"))["runs"]["dense"]["metrics"] == \
        runs["dense"]["metrics"]
