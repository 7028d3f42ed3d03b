"""Loaders on the real PDFs in ../shared/data/pdfs and on small files written here."""
from __future__ import annotations

import codecs
import logging
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from ingest.loaders import (
    SUPPORTED_SUFFIXES,
    LoadError,
    garbled_share,
    html_to_text,
    load,
    markdown_to_text,
    normalize_whitespace,
)

# file -> (number of pages with text, a phrase, the page it is on)
GOOD_PDFS = {
    "alice-in-wonderland.pdf": (71, "Curiouser and curiouser!", 5),
    "chinese-patent.pdf": (2, "电泳沉积改性纸基摩擦材料的制备方法", 1),
    "cpp-auto-proposal.pdf": (7, "Bjarne Stroustrup", 1),
    "dutch-tax-form.pdf": (2, "Belastingdienst", 1),
    "hamster-embryos-paper-encrypted.pdf": (9, "Antiporter Activity in Hamster Embryos", 1),
    "japanese-slides-encrypted.pdf": (47, "ミラクル・リナックス株式会社", 1),
    "king-james-bible-702p.pdf": (702, "Holy Bible", 1),
    "linux-kernel-howto.pdf": (29, "The Linux Kernel HOWTO", 1),
    "swig-manual.pdf": (24, "SWIG Reference Manual", 1),
    "the-time-machine.pdf": (103, "by H. G. Wells", 1),
    "usenix-paper-encrypted.pdf": (7, "How the Journaled File System performs logging", 2),
}
# file -> the exact reason, or its start where it quotes pypdf at length
BAD_PDFS = {
    "broken-invalid-object.pdf":
        "text extraction failed on every page (PdfReadError: Invalid Elementary Object",
    "broken-null-object.pdf": "PDF could not be opened (pypdf: Could not read Null object)",
    "no-text-layer.pdf": "no extractable text (scanned PDF without a text layer?)",
    "garbled-font-encoding.pdf":
        "text is garbled on all 28 pages with text (broken font encoding?); nothing searchable",
}
STRESS = "stress-10000-pages.pdf"
KOREAN = "대한민국은 민주공화국이다.\n대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다.\n"


@pytest.fixture(scope="module")
def pdfs(shared_data: Path) -> Path:
    return shared_data / "pdfs"


def write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def _save(writer: PdfWriter, path: Path) -> Path:
    writer.write(path)
    return path


def test_every_shared_pdf_has_an_expectation(pdfs: Path):
    assert sorted(p.name for p in pdfs.glob("*.pdf")) == sorted([*GOOD_PDFS, *BAD_PDFS, STRESS])


@pytest.mark.parametrize("name", sorted(GOOD_PDFS))
def test_good_pdfs_load_with_real_page_numbers(pdfs: Path, name: str):
    n_pages, phrase, page = GOOD_PDFS[name]
    doc = load(pdfs / name)
    assert doc.source == str(pdfs / name)
    assert doc.warnings == ()
    assert len(doc.pages) == n_pages
    assert [p.number for p in doc.pages] == list(range(1, n_pages + 1))
    assert all(p.text and p.text == p.text.strip() for p in doc.pages)
    assert [p.number for p in doc.pages if phrase in p.text][0] == page


@pytest.mark.parametrize("name", sorted(BAD_PDFS))
def test_bad_pdfs_raise_with_a_reason(pdfs: Path, name: str):
    with pytest.raises(LoadError) as caught:
        load(pdfs / name)
    assert caught.value.reason.startswith(BAD_PDFS[name])
    assert caught.value.path == str(pdfs / name)
    assert str(caught.value) == f"{pdfs / name}: {caught.value.reason}"


def test_stress_pdf_keeps_all_its_tiny_pages(pdfs: Path):
    # 10,000 pages that each hold the single letter "x": real (if useless) text, so it loads.
    doc = load(pdfs / STRESS)
    assert len(doc.pages) == 10_000
    assert {p.text for p in doc.pages} == {"x"}
    assert doc.pages[-1].number == 10_000
    assert doc.warnings == ()


def test_cjk_pdfs_extract_cjk_characters(pdfs: Path):
    chinese = load(pdfs / "chinese-patent.pdf").pages[0].text
    japanese = load(pdfs / "japanese-slides-encrypted.pdf").pages[0].text
    assert "权 利 要 求 书" in chinese and "碳纤维、纸纤维、芳纶纤维" in chinese
    assert "エンタープライズ向けカーネル機能の紹介" in japanese


def test_pdf_needing_a_password(tmp_path: Path, pdfs: Path):
    writer = PdfWriter()
    writer.add_page(PdfReader(pdfs / "alice-in-wonderland.pdf").pages[0])
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    with pytest.raises(LoadError, match=r"encrypted PDF needs a password$"):
        load(_save(writer, tmp_path / "locked.pdf"))


def test_blank_pages_are_dropped_and_numbers_kept(tmp_path: Path, pdfs: Path):
    alice = PdfReader(pdfs / "alice-in-wonderland.pdf")
    writer = PdfWriter()
    writer.add_page(alice.pages[0])
    writer.add_blank_page(width=612, height=792)
    writer.add_page(alice.pages[4])
    doc = load(_save(writer, tmp_path / "gap.pdf"))
    assert [p.number for p in doc.pages] == [1, 3]
    assert "Curiouser and curiouser!" in doc.pages[1].text


def test_page_that_fails_to_extract_becomes_a_warning(tmp_path: Path, pdfs: Path):
    alice = PdfReader(pdfs / "alice-in-wonderland.pdf")
    writer = PdfWriter()
    writer.add_page(alice.pages[0])
    writer.add_page(PdfReader(pdfs / "broken-invalid-object.pdf").pages[0])
    writer.add_page(alice.pages[1])
    doc = load(_save(writer, tmp_path / "one-bad-page.pdf"))
    assert [p.number for p in doc.pages] == [1, 3]
    assert len(doc.warnings) == 1
    assert doc.warnings[0].startswith(
        "page 2: text extraction failed: PdfReadError: Invalid Elementary Object")


def test_some_garbled_pages_give_a_warning(tmp_path: Path, pdfs: Path):
    alice = PdfReader(pdfs / "alice-in-wonderland.pdf")
    garbled = PdfReader(pdfs / "garbled-font-encoding.pdf")
    writer = PdfWriter()
    for page in (alice.pages[1], garbled.pages[2], garbled.pages[3], alice.pages[2], garbled.pages[4]):
        writer.add_page(page)
    doc = load(_save(writer, tmp_path / "mixed.pdf"))
    assert [p.number for p in doc.pages] == [1, 2, 3, 4, 5]
    assert doc.warnings == ("pages 2-3, 5: text looks garbled (broken font encoding?)",)


def test_garbled_share(pdfs: Path):
    assert garbled_share("") == 0.0
    assert garbled_share("Plain English, with “quotes” – and dashes…") == 0.0
    assert garbled_share("权利要求书：一种方法。") == 0.0
    assert garbled_share("»¿‹†") == 1.0
    assert garbled_share("ab\ufffd\ue000") == 0.5
    raw = PdfReader(pdfs / "garbled-font-encoding.pdf").pages[2].extract_text()
    assert garbled_share(raw) > 0.4


def test_pypdf_logger_is_quiet():
    assert logging.getLogger("pypdf").level == logging.ERROR


# ---------------------------------------------------------------- text files

def test_utf8_text(tmp_path: Path):
    doc = load(write(tmp_path / "a.txt", "Hello  world.\r\nSecond line.\r\n\r\n\r\nNew para.\n"))
    assert doc.pages == (doc.pages[0],) and doc.pages[0].number is None
    assert doc.pages[0].text == "Hello world.\nSecond line.\n\nNew para."
    assert doc.warnings == ()


def test_utf8_with_bom(tmp_path: Path):
    doc = load(write(tmp_path / "bom.txt", codecs.BOM_UTF8 + "Ünïcödé text".encode("utf-8")))
    assert doc.pages[0].text == "Ünïcödé text"
    assert doc.warnings == ()


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_with_bom(tmp_path: Path, encoding: str):
    bom = codecs.BOM_UTF16_LE if encoding.endswith("le") else codecs.BOM_UTF16_BE
    doc = load(write(tmp_path / "u16.txt", bom + KOREAN.encode(encoding)))
    assert doc.pages[0].text == KOREAN.strip()
    assert doc.warnings == ()


def test_cp949_korean_is_detected_with_a_warning(tmp_path: Path):
    doc = load(write(tmp_path / "legacy.txt", KOREAN.encode("cp949")))
    assert doc.pages[0].text == KOREAN.strip()
    assert doc.warnings == ("decoded as cp949 (not UTF-8)",)


def test_empty_file(tmp_path: Path):
    with pytest.raises(LoadError, match=r"empty\.txt: empty file$"):
        load(write(tmp_path / "empty.txt", b""))


def test_whitespace_only_file(tmp_path: Path):
    with pytest.raises(LoadError, match=r"no text \(only whitespace or markup\)$"):
        load(write(tmp_path / "blank.md", " \n\t\n\n"))


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,  # NUL bytes
    bytes(range(1, 256)) * 20,  # no NUL, but no encoding makes text of it
])
def test_binary_file_renamed_txt(tmp_path: Path, data: bytes):
    with pytest.raises(LoadError, match=r"binary file, not text$"):
        load(write(tmp_path / "image.txt", data))


def test_unsupported_suffix(tmp_path: Path):
    with pytest.raises(LoadError) as caught:
        load(write(tmp_path / "report.docx", b"PK\x03\x04"))
    assert caught.value.reason == ("unsupported file type '.docx' "
                                   "(supported: .htm, .html, .markdown, .md, .pdf, .txt)")
    assert SUPPORTED_SUFFIXES == (".htm", ".html", ".markdown", ".md", ".pdf", ".txt")


def test_suffix_is_case_insensitive(tmp_path: Path):
    assert load(write(tmp_path / "NOTES.TXT", "upper case suffix")).pages[0].text == "upper case suffix"


def test_missing_file(tmp_path: Path):
    with pytest.raises(LoadError, match=r"cannot read file \(No such file or directory\)$"):
        load(tmp_path / "missing.txt")


# ---------------------------------------------------------------- Markdown and HTML

MARKDOWN = """---
title: front matter is dropped
---
# Install the **tool** #

Run `pip install rag` and read [the docs](https://example.com/docs "Docs"). Override `__init__`, *not* `**kw`.
![architecture diagram](img/arch.png) See [the guide][guide].

```python
def f(**kwargs):
    return 1
```

> quoted *text* here
Setext heading
==============
[guide]: https://example.com/guide
"""


def test_markdown_to_text():
    assert normalize_whitespace(markdown_to_text(MARKDOWN)) == (
        "Install the tool\n\n"
        "Run pip install rag and read the docs. Override __init__, not **kw.\n"
        "architecture diagram See the guide.\n\n"
        "def f(**kwargs):\nreturn 1\n\n"
        "quoted text here\nSetext heading"
    )


def test_markdown_file(tmp_path: Path):
    doc = load(write(tmp_path / "guide.markdown", MARKDOWN))
    assert doc.pages[0].text.startswith("Install the tool\n\nRun pip install rag")
    assert "https://" not in doc.pages[0].text


HTML = """<!DOCTYPE html>
<html><head><title>My  Page</title><meta charset="utf-8">
<style>p { color: red }</style><script>var hidden = 1;</script></head>
<body><!-- a comment --><h1>Heading</h1><p>First
   paragraph with <b>bold</b> text.</p><noscript>enable javascript</noscript>
<ul><li>one</li><li>two</li></ul><template><p>template text</p></template>
<div>div text<br>after a break</div><table><tr><td>a</td><td>b</td></tr></table>
<script type="module">import x from "y";</script></body></html>"""


def test_html_to_text():
    assert html_to_text(HTML) == (
        "My Page\n\nHeading\n\nFirst paragraph with bold text.\n\none\ntwo\n\n"
        "div text\nafter a break\n\na b"
    )


def test_html_file_with_declared_legacy_charset(tmp_path: Path):
    html = '<html><head><meta charset="euc-kr"><title>제목</title></head><body><p>본문입니다.</p></body></html>'
    doc = load(write(tmp_path / "page.htm", html.encode("euc-kr")))
    assert doc.pages[0].text == "제목\n\n본문입니다."
    assert doc.warnings == ("decoded as euc-kr (declared, not UTF-8)",)


# ---------------------------------------------------------------- normalize_whitespace

@pytest.mark.parametrize("raw, expected", [
    ("  a \t b  \n  c  ", "a b\nc"),
    ("one\r\ntwo\rthree", "one\ntwo\nthree"),
    ("p1\n\n\n\n\np2\n \n \np3", "p1\n\np2\n\np3"),
    ("nul\x00 and\x07 bell\x1b", "nul and bell"),
    ("cafe\u0301 \u1112\u1161\u11ab", "café 한"),  # NFC: combining accent, conjoining jamo
    ("\ufb01nd \ufb02ow", "find flow"),  # ligatures from PDFs
    ("no\xa0break\u3000ideographic\u200bzero", "no break ideographiczero"),
    ("soft\xadhyphen", "softhyphen"),
    ("exam-\nple", "exam-\nple"),  # only PDFs are de-hyphenated
])
def test_normalize_whitespace(raw: str, expected: str):
    assert normalize_whitespace(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("an exam-\nple here", "an example here"),
    ("exam- \n ple", "example"),
    ("a well-\nknown fact", "a well-known fact"),  # a prefix that keeps its hyphen
    ("co-operate, later co-\noperate", "co-operate, later co-operate"),  # written with a hyphen elsewhere
    ("Down the Rabbit-\nHole", "Down the Rabbit-\nHole"),  # capitalised: a real compound
    ("pages 12-\n14", "pages 12-\n14"),  # numbers are not words
])
def test_dehyphenate(raw: str, expected: str):
    assert normalize_whitespace(raw, dehyphenate=True) == expected
