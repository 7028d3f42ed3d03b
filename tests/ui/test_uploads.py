"""Uploads are untrusted input: limits from the config, safe names, content checked against the
extension.

The pure checks (``safe_name``, ``sniff_mismatch``, ``upload_target``,
``shown_name``) are tested exactly; the app is driven through AppTest with a
real embedded Chroma and the packaged MiniLM, and every test checks that
nothing was written outside the upload folder and that refused files leave
the collection as it was.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import unicodedata
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag.config import load_settings
from tests.conftest import write_offline_config
from tests.ui.test_app import start, store_of, texts
from ui.uploads import (
    MAX_STEM_BYTES,
    Upload,
    ingest_uploads,
    safe_name,
    shown_name,
    sniff_mismatch,
    upload_size_cap_mb,
    upload_target,
)

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    b"\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4
KOREAN = "직원은 연 15일의 유급 휴가를 받습니다. 병가는 10일입니다."


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("report.pdf", "report.pdf"),
        ("../../x.md", "x.md"),
        ("..\\..\\x.md", "x.md"),
        ("/etc/x.md", "x.md"),
        ("C:\\x.md", "x.md"),
        ("C:x.md", "C_x.md"),
        ("a\x00b.md", "a_b.md"),
        ("tab\there\r\n.txt", "tab_here_.txt"),
        ("\x1b[31mred.txt", "_31mred.txt"),
        ("evil name?.md", "evil name_.md"),
        (".hidden.md", "hidden.md"),
        ("...x.md", "x.md"),
        ("x.md.", "x.md"),
        ("  spaced .txt ", "spaced.txt"),
        ("회의록 2024.md", "회의록 2024.md"),
        (unicodedata.normalize("NFD", "휴가.txt"), "휴가.txt"),  # macOS sends Hangul decomposed
        ("invoice\u202etxt.md", "invoice_txt.md"),  # right-to-left override
        ("con.txt", "_con.txt"),
        ("ok-file_v2.final.md", "ok-file_v2.final.md"),
    ],
)
def test_safe_name(name, saved):
    assert safe_name(name) == saved


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        ".",
        "..",
        "...",
        "..md",
        "../..",
        "/",
        "noext",
        "?.md",
        "___.md",
        "\x00\x00.md",
        "x." + "y" * 17,
    ],
)
def test_safe_name_refuses_names_with_nothing_usable(name):
    with pytest.raises(ValueError, match="unusable file name"):
        safe_name(name)


@pytest.mark.parametrize(("stem", "bytes_per_char"), [("a", 1), ("가", 3), ("é", 2)])
def test_long_names_are_cut_keeping_the_extension(stem, bytes_per_char):
    saved = safe_name(stem * 400 + ".md")
    assert saved.endswith(".md") and len(saved.encode()) <= MAX_STEM_BYTES + 3 < 255
    assert saved == stem * (MAX_STEM_BYTES // bytes_per_char) + ".md"  # whole characters only


NASTY = [
    "../../x.md",
    "..\\..\\x.md",
    "/etc/passwd.txt",
    "C:\\Windows\\x.md",
    "a\x00.md",
    "\x01\x02z.txt",
    "x" * 1000 + ".md",
    "가" * 500 + ".txt",
    ".bashrc.md",
    "~/x.md",
    "$HOME.md",
    "%2e%2e%2fx.md",
    "..%2Fx.md",
    "\u2024\u2024/x.md",
    "foo/../../../bar.md",
    "nul.md",
]


@pytest.mark.parametrize("name", NASTY)
def test_a_safe_name_always_lands_directly_in_the_folder(tmp_path, name):
    folder = tmp_path / "uploads"
    folder.mkdir()
    saved = safe_name(name)
    assert (
        "/" not in saved and "\\" not in saved and "\x00" not in saved and not saved.startswith(".")
    )
    assert len(saved.encode()) < 255
    target = upload_target(folder, saved)
    assert target.parent == folder and target.resolve().parent == folder.resolve()


def test_upload_target_refuses_symlinks_and_directories(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    outside = tmp_path / "outside.md"
    outside.write_text("keep me", encoding="utf-8")
    (folder / "link.md").symlink_to(outside)
    (folder / "inner.md").symlink_to(folder / "real.md")
    (folder / "dir.md").mkdir()
    with pytest.raises(ValueError, match="symbolic link"):
        upload_target(folder, "link.md")
    with pytest.raises(ValueError, match="symbolic link"):
        upload_target(folder, "inner.md")
    with pytest.raises(ValueError, match="not a plain file"):
        upload_target(folder, "dir.md")
    with pytest.raises(ValueError, match="outside the upload folder"):
        upload_target(folder, "../x.md")
    assert upload_target(folder, "fine.md") == folder / "fine.md"


def test_shown_name_neutralises_markdown_and_control_characters():
    assert shown_name("big.txt") == "big.txt"
    assert (
        shown_name("[click](http://evil.example).md") == "\\[click\\]\\(http://evil.example\\).md"
    )
    assert shown_name("a\x00b\u202e.md") == "a\ufffdb\ufffd.md"
    assert shown_name("x" * 500) == "x" * 79 + "…"


# --- content -------------------------------------------------------------------------------------


def test_sniff_accepts_real_files(shared_data):
    pdf = (shared_data / "pdfs" / "cpp-auto-proposal.pdf").read_bytes()
    assert sniff_mismatch("paper.pdf", pdf) is None
    assert sniff_mismatch("PAPER.PDF", pdf) is None
    # header within the first 1024 bytes
    assert sniff_mismatch("late.pdf", b"\r\n" * 400 + pdf) is None
    for name in ("a.txt", "a.md", "a.markdown", "a.html", "a.htm"):
        assert sniff_mismatch(name, KOREAN.encode("utf-8")) is None
    assert (
        sniff_mismatch("page.html", b"<!doctype html><html><body><p>Hello</p></body></html>")
        is None
    )
    assert sniff_mismatch("bom.txt", codecs.BOM_UTF8 + KOREAN.encode("utf-8")) is None
    assert sniff_mismatch("utf16.txt", KOREAN.encode("utf-16")) is None  # with its BOM
    # the loader detects the encoding
    assert sniff_mismatch("legacy.txt", KOREAN.encode("cp949")) is None
    assert sniff_mismatch("log.txt", b"\x1b[32mok\x1b[0m\tdone\x0c\r\n") is None
    assert sniff_mismatch("empty.pdf", b"") is None  # left to ingestion: "empty file"
    assert sniff_mismatch("unknown.docx", ELF) is None  # not a type it checks


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        (
            "fake.pdf",
            b"Just some text pretending to be a PDF.",
            "not a PDF: no %PDF- header in the first 1024 bytes",
        ),
        ("fake.pdf", b"<html><body>%PDF-</body></html>".rjust(2000), "not a PDF: no %PDF- header"),
        ("image.pdf", PNG, "not a PDF: the content is a PNG image"),
        ("program.txt", ELF, "not a .txt file: the content is a program (ELF)"),
        (
            "paper.md",
            b"%PDF-1.7\n%binary\n1 0 obj\n<<>>\nendobj\n",
            "not a .md file: the content is a PDF",
        ),
        (
            "archive.txt",
            b"PK\x03\x04\x14\x00\x06\x00",
            "not a .txt file: the content is a ZIP archive",
        ),
        (
            "photo.html",
            b"\xff\xd8\xff\xe0\x00\x10JFIF",
            "not a .html file: the content is a JPEG image",
        ),
        (
            "nul.txt",
            b"looks like text\x00but is not",
            "not a .txt file: binary content (NUL bytes)",
        ),
        (
            "noise.htm",
            bytes(range(1, 32)) * 3 + b"some words",
            "not a .htm file: binary content (78 control bytes in 103)",
        ),
        (
            "broken.txt",
            codecs.BOM_UTF8 + b"\xff\xfe\xfd",
            "not text: invalid UTF-8 after its byte-order mark",
        ),
        (
            "odd.md",
            codecs.BOM_UTF16_LE + b"a\x00b",
            "not text: invalid UTF-16 after its byte-order mark",
        ),
    ],
)
def test_sniff_refuses_content_that_contradicts_the_extension(name, data, reason):
    assert sniff_mismatch(name, data).startswith(reason)


def test_sniff_reads_only_the_data_it_is_given():
    data = bytearray(b"%PDF-1.4 ok")
    assert sniff_mismatch("a.pdf", bytes(data)) is None and data == bytearray(b"%PDF-1.4 ok")


# --- limits without the app (refusals happen before any model or store is touched) ---------------


def offline_settings(tmp_path: Path, **env: str):
    return load_settings(
        write_offline_config(tmp_path), env={f"RAG_{k.upper()}": v for k, v in env.items()}
    )


def test_every_refusal_happens_before_anything_is_written(tmp_path):
    settings = offline_settings(tmp_path, ui__max_upload_files="5", ingest__max_file_mb="0.001")
    uploads = [
        Upload("tool.exe", b"MZ\x90\x00"),
        Upload("..", b"x"),
        Upload("big.txt", b"x" * 1001),
        Upload("fake.pdf", b"hello"),
        Upload("bin.txt", ELF[:900]),
        Upload("sixth.md", b"# six"),
    ]
    progress: list[str] = []
    report, refused = ingest_uploads(
        settings, uploads, on_progress=lambda done, text: progress.append(text)
    )
    assert refused == [
        ("tool.exe", ".exe files are not accepted (ingest.extensions)"),
        ("..", "unusable file name: it needs a name and an extension"),
        ("big.txt", "0.0 MB is over ingest.max_file_mb = 0.001"),
        ("fake.pdf", "not a PDF: no %PDF- header in the first 1024 bytes"),
        ("bin.txt", "not a .txt file: the content is a program (ELF)"),
        ("sixth.md", "more than ui.max_upload_files = 5 files"),
    ]
    assert report.outcomes == () and progress == []
    assert list((tmp_path / "uploads").iterdir()) == [] and not (tmp_path / "chroma").exists()


def test_size_cap_for_the_file_picker_follows_the_config(tmp_path):
    assert upload_size_cap_mb(offline_settings(tmp_path), 200) == 200
    # server's cap
    assert upload_size_cap_mb(offline_settings(tmp_path, ingest__max_file_mb="1000"), 200) == 200
    assert upload_size_cap_mb(offline_settings(tmp_path, ingest__max_file_mb="12.5"), 200) == 13
    assert upload_size_cap_mb(offline_settings(tmp_path, ui__max_upload_mb="50"), 200) == 50
    assert upload_size_cap_mb(offline_settings(tmp_path, ingest__max_file_mb="0.0001"), 200) == 1


# --- the app
# ---------------------------------------------------------------------------------------


def snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    """Every file under root (outside ``skip``), with a hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(p.is_relative_to(s) for s in skip)
    }


@pytest.fixture
def site(tmp_path) -> Path:
    """A config in tmp/site/app (uploads in tmp/site/app/uploads) with bait files around it."""
    app_dir = tmp_path / "site" / "app"
    app_dir.mkdir(parents=True)
    for bait in (tmp_path / "site" / "x.md", tmp_path / "x.md", app_dir / "x.md"):
        bait.write_text("original", encoding="utf-8")
    return app_dir


def upload_all(app: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    uploader = app.sidebar.file_uploader[0]
    for name, data in files:
        uploader.upload(name, data, "text/plain")
    app.run()
    assert not app.exception, app.exception
    return app


def test_nasty_names_are_saved_only_inside_the_upload_folder(monkeypatch, tmp_path, site):
    config = write_offline_config(site)
    before = snapshot(tmp_path, skip=(site / "chroma", site / "uploads"))
    app = start(monkeypatch, config, reranker=None, llm_url=None)
    long_name = "연차휴가" * 60 + ".md"
    upload_all(
        app,
        [
            ("../../x.md", b"# Traversal\n\nPosix parent directories."),
            ("..\\..\\win.md", b"# Windows\n\nBackslash parent directories."),
            ("/etc/abs.md", b"# Absolute\n\nAn absolute path."),
            ("C:\\drive.md", b"# Drive\n\nA drive letter."),
            # Streamlit refuses NUL itself
            ("ctrl\x1b\x7fbyte.md", b"# Control\n\nControl characters in the name."),
            (long_name, KOREAN.encode("utf-8")),
            ("보고서.txt", KOREAN.encode("utf-8")),
            ("...md", b"only dots and the extension"),
            ("dir1/same.md", b"# First\n\nThe first of two files with one name."),
            ("dir2/SAME.md", b"# Second\n\nThe second of two files with one name."),
        ],
    )
    saved = sorted(p.name for p in (site / "uploads").iterdir())
    long_saved = "연차휴가" * 10 + ".md"  # 120 bytes of Hangul, the extension kept
    assert saved == sorted(
        [
            "x.md",
            "win.md",
            "abs.md",
            "drive.md",
            "ctrl_byte.md",
            long_saved,
            "보고서.txt",
            "same.md",
        ]
    )
    assert texts(app.sidebar.error) == [
        "...md: unusable file name: it needs a name and an extension",
        "dir2/SAME.md: another file of this upload has the same name (SAME.md)",
    ]
    assert texts(app.sidebar.success)[0].startswith("8 added; ")
    ledger = {Path(s).name: Path(s).parent for s in store_of(config).file_records()}
    assert sorted(ledger) == saved and set(ledger.values()) == {site / "uploads"}
    assert (site / "uploads" / "same.md").read_text(encoding="utf-8").startswith("# First")
    # the bait files too
    assert snapshot(tmp_path, skip=(site / "chroma", site / "uploads")) == before


def test_refused_content_leaves_the_collection_and_the_saved_copy_untouched(
    monkeypatch, tmp_path, site
):
    config = write_offline_config(site)
    app = start(monkeypatch, config, reranker=None, llm_url=None)
    upload_all(app, [("notes.md", b"# Notes\n\nThe parking garage closes at 22:00.")])
    ledger = store_of(config).file_records()
    saved = snapshot(site / "uploads", skip=())
    chunks = store_of(config).count()

    upload_all(
        app,
        [
            ("notes.md", PNG),
            ("paper.pdf", b"not a pdf at all"),
            ("tool.txt", ELF),
            ("page.html", b"\x00\x01\x02\x03<html>"),
        ],
    )
    assert texts(app.sidebar.error) == [
        "notes.md: not a .md file: the content is a PNG image",
        "paper.pdf: not a PDF: no %PDF- header in the first 1024 bytes",
        "tool.txt: not a .txt file: the content is a program (ELF)",
        "page.html: not a .html file: binary content (NUL bytes)",
    ]
    assert not app.sidebar.success  # nothing was ingested this time
    assert store_of(config).file_records() == ledger and store_of(config).count() == chunks
    assert snapshot(site / "uploads", skip=()) == saved  # no new file, no .partial left behind
    assert [d for d in os.listdir(site / "uploads") if d.startswith(".")] == []


def test_total_size_per_upload_is_limited(monkeypatch, tmp_path, site):
    monkeypatch.setenv("RAG_UI__MAX_UPLOAD_MB", "0.0001")  # 100 bytes for the whole upload
    config = write_offline_config(site)
    app = start(monkeypatch, config, reranker=None, llm_url=None)
    uploader = app.sidebar.file_uploader[0]
    assert "0.0001 MB at a time" in uploader.label and uploader.proto.max_upload_size_mb == 1
    upload_all(
        app,
        [
            ("first.md", b"# First\n\n" + b"a" * 50),
            ("second.md", b"# Second\n\n" + b"b" * 50),
            ("third.md", b"# Third\n\nccc"),
        ],
    )
    assert texts(app.sidebar.error) == [
        "second.md: the upload would pass ui.max_upload_mb = 0.0001 MB in all"
    ]
    assert sorted(p.name for p in (site / "uploads").iterdir()) == ["first.md", "third.md"]
    assert {Path(s).name for s in store_of(config).file_records()} == {"first.md", "third.md"}


def test_a_symlink_in_the_upload_folder_is_not_written_through(monkeypatch, tmp_path, site):
    config = write_offline_config(site)
    (site / "uploads").mkdir()
    outside = tmp_path / "site" / "x.md"
    (site / "uploads" / "link.md").symlink_to(outside)
    app = start(monkeypatch, config, reranker=None, llm_url=None)
    upload_all(app, [("link.md", b"# Overwrite\n\nThis must not reach the link's target.")])
    assert texts(app.sidebar.error) == [
        "link.md: link.md in the upload folder is a symbolic link; it is not written through"
    ]
    assert (
        outside.read_text(encoding="utf-8") == "original" and store_of(config).file_records() == {}
    )


def test_refused_names_are_shown_without_markdown(monkeypatch, tmp_path, site):
    app = start(monkeypatch, write_offline_config(site), reranker=None, llm_url=None)
    upload_all(app, [("[click me](javascript:alert(1)).pdf", b"text, not a PDF")])
    (error,) = texts(app.sidebar.error)
    assert error == (
        "\\[click me\\]\\(javascript:alert\\(1\\)\\).pdf: not a PDF: no %PDF- header in the "
        "first 1024 bytes"
    )
