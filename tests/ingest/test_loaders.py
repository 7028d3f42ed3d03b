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
    "broken-invalid-object.pdf": (
        "text extraction failed on every page (PdfReadError: Invalid Elementary Object"
    ),
    "broken-null-object.pdf": "PDF could not be opened (pypdf: Could not read Null object)",
    "no-text-layer.pdf": "no extractable text (scanned PDF without a text layer?)",
    "garbled-font-encoding.pdf": (
        "text is garbled on all 28 pages with text (broken font encoding?); nothing searchable"
    ),
}
STRESS = "stress-10000-pages.pdf"
KOREAN = (
    "대한민국은 민주공화국이다.\n대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 "
    "나온다.\n"
)


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
    """(The stress PDF is refused too, under ingest.min_chars: see
    test_stress_pdf_has_too_little_text.)
    """
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


def test_stress_pdf_has_too_little_text(pdfs: Path):
    # 10,000 pages that each hold the single letter "x": under ingest.min_chars, so nothing is kept
    with pytest.raises(LoadError) as caught:
        load(pdfs / STRESS)
    assert caught.value.reason == (
        "too little text: each of its 10000 pages with text has fewer than 5 letters "
        "or digits (ingest.min_chars = 5)"
    )


def test_min_chars_zero_keeps_every_page_with_text(pdfs: Path):
    doc = load(pdfs / STRESS, min_chars=0)
    assert len(doc.pages) == 10_000 and {p.text for p in doc.pages} == {"x"}
    assert doc.pages[-1].number == 10_000 and doc.warnings == ()


def test_short_pages_are_dropped_with_a_warning(tmp_path: Path, pdfs: Path):
    alice = PdfReader(pdfs / "alice-in-wonderland.pdf")
    stress = PdfReader(pdfs / STRESS)
    writer = PdfWriter()
    for page in (alice.pages[0], stress.pages[0], stress.pages[1], alice.pages[4], stress.pages[2]):
        writer.add_page(page)
    doc = load(_save(writer, tmp_path / "mixed.pdf"))
    assert [p.number for p in doc.pages] == [1, 4]
    assert doc.warnings == (
        "pages 2-3, 5: fewer than 5 letters or digits, not stored (ingest.min_chars)",
    )
    writer = PdfWriter()
    for i in range(12):  # many separate short pages: one line, cut short
        writer.add_page(alice.pages[i])
        writer.add_page(stress.pages[i])
    doc = load(_save(writer, tmp_path / "alternating.pdf"))
    assert len(doc.pages) == 12
    assert doc.warnings == (
        "12 pages (2, 4, 6, 8, 10, …): fewer than 5 letters or digits, not stored "
        "(ingest.min_chars)",
    )
    # "Old Testament" (12 letters) is a page the default keeps
    bible = PdfReader(pdfs / "king-james-bible-702p.pdf")
    writer = PdfWriter()
    writer.add_page(bible.pages[15])
    assert load(_save(writer, tmp_path / "title.pdf")).pages[0].text == "Old Testament"
    assert "too little text: its only page" in str(
        pytest.raises(LoadError, load, tmp_path / "title.pdf", min_chars=13).value
    )


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
        "page 2: text extraction failed: PdfReadError: Invalid Elementary Object"
    )


def test_some_garbled_pages_give_a_warning(tmp_path: Path, pdfs: Path):
    alice = PdfReader(pdfs / "alice-in-wonderland.pdf")
    garbled = PdfReader(pdfs / "garbled-font-encoding.pdf")
    writer = PdfWriter()
    for page in (
        alice.pages[1],
        garbled.pages[2],
        garbled.pages[3],
        alice.pages[2],
        garbled.pages[4],
    ):
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
    doc = load(write(tmp_path / "bom.txt", codecs.BOM_UTF8 + "Ünïcödé text".encode()))
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


@pytest.mark.parametrize(
    ("text", "encoding", "detected"),
    [
        ("직원은 연 15일의 유급 휴가를 받습니다. 병가는 10일입니다.", "euc-kr", "cp949"),
        ("Café crème brûlée: the façade of the hôtel is naïve.", "latin-1", "cp1252"),
        # short: detection once ranked EBCDIC first
        ("Café au lait, s'il vous plaît", "cp1252", "cp1252"),
        ("Größere Äpfel schmecken süß.", "latin-1", "cp1252"),
        ("Zażółć gęślą jaźń. Pójdźże, kiń tę chmurność w głąb flaszy!", "cp1250", "cp1250"),
        ("Съешь же ещё этих мягких французских булок, да выпей чаю.", "cp1251", "cp1251"),
        ("日本語のテキストです。東京は日本の首都です。", "shift_jis", "cp932"),
        ("电池保修多久？本发明涉及一种摩擦材料。", "gbk", "gb18030"),
    ],
)
def test_legacy_encodings_are_detected(tmp_path: Path, text: str, encoding: str, detected: str):
    doc = load(write(tmp_path / "legacy.txt", text.encode(encoding)))
    assert doc.pages[0].text == text
    assert doc.warnings == (f"decoded as {detected} (not UTF-8)",)


def test_utf8_with_a_few_stray_bytes_stays_utf8(tmp_path: Path):
    # a Latin-1 byte, a cut character
    data = ("Café crème, " * 20).encode() + b"\xe9 " + KOREAN.encode()[:-4]
    doc = load(write(tmp_path / "mostly-utf8.txt", data))
    assert doc.pages[0].text.startswith("Café crème, Café") and "대한민국" in doc.pages[0].text
    assert doc.warnings == ("2 invalid UTF-8 sequences replaced by \ufffd",)


@pytest.mark.parametrize("name", ["empty.txt", "empty.md", "empty.html", "empty.pdf"])
def test_empty_file(tmp_path: Path, name: str):
    with pytest.raises(LoadError, match=rf"{name.replace('.', '[.]')}: empty file$"):
        load(write(tmp_path / name, b""))


@pytest.mark.parametrize(("text", "n"), [("x", 1), ("휴가", 2), ("- 12 -", 2), ("p. 123", 4)])
def test_text_under_min_chars(tmp_path: Path, text: str, n: int):
    with pytest.raises(LoadError) as caught:
        load(write(tmp_path / "short.txt", text))
    what = "letter or digit" if n == 1 else "letters or digits"
    assert caught.value.reason == f"too little text: {n} {what}, fewer than ingest.min_chars = 5"
    assert load(tmp_path / "short.txt", min_chars=n).pages[0].text == text
    with pytest.raises(ValueError, match="min_chars = -1"):
        load(tmp_path / "short.txt", min_chars=-1)


def test_short_real_text_is_kept(tmp_path: Path):
    assert load(write(tmp_path / "hello.txt", "hello")).pages[0].text == "hello"
    assert load(write(tmp_path / "thanks.md", "# 감사합니다")).pages[0].text == "감사합니다"


def test_whitespace_only_file(tmp_path: Path):
    with pytest.raises(LoadError, match=r"no text \(only whitespace or markup\)$"):
        load(write(tmp_path / "blank.md", " \n\t\n\n"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4,
            "the content is a PNG image",
        ),
        (b"\x00\x01" + bytes(range(256)) * 4, "binary content (NUL bytes)"),
        (bytes(range(1, 256)) * 20, "binary content (540 control bytes in 5100)"),
    ],
)
def test_binary_file_renamed_txt(tmp_path: Path, data: bytes, reason: str):
    for name in ("image.txt", "image.md", "image.html"):
        with pytest.raises(LoadError) as caught:
            load(write(tmp_path / name, data))
        assert caught.value.reason == f"not a {Path(name).suffix} file: {reason}"


def test_bytes_no_encoding_makes_text_of(tmp_path: Path):
    with pytest.raises(LoadError) as caught:
        load(write(tmp_path / "noise.txt", bytes(range(128, 256)) * 40))
    assert caught.value.reason == "not text: no text encoding fits (binary content?)"


@pytest.mark.parametrize(
    ("bom", "encoding", "shown"),
    [(codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16", "UTF-16")],
)
def test_invalid_text_after_a_byte_order_mark(
    tmp_path: Path, bom: bytes, encoding: str, shown: str
):
    with pytest.raises(LoadError) as caught:
        load(
            write(
                tmp_path / "broken.txt",
                bom + b"\xff\xfe\xfd" if encoding == "utf-8" else bom + b"a\x00b",
            )
        )
    assert caught.value.reason == f"not text: invalid {shown} after its byte-order mark"


def test_content_that_contradicts_the_suffix(tmp_path: Path, pdfs: Path):
    pdf = (pdfs / "cpp-auto-proposal.pdf").read_bytes()
    for name in ("paper.txt", "paper.md", "paper.htm"):
        with pytest.raises(LoadError) as caught:
            load(write(tmp_path / name, pdf))
        assert caught.value.reason == f"not a {Path(name).suffix} file: the content is a PDF"
    cases = {
        "notes.pdf": (
            b"Plain text, not a PDF at all.\n",
            "not a PDF: no %PDF- header in the first 1024 bytes",
        ),
        "report.pdf": (
            b"PK\x03\x04" + bytes(100),
            "not a PDF: the content is a ZIP archive (or a Word/Excel file)",
        ),
        "photo.pdf": (b"\xff\xd8\xff\xe0" + bytes(100), "not a PDF: the content is a JPEG image"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(LoadError) as caught:
            load(write(tmp_path / name, data))
        assert caught.value.reason == reason
    # a header after some junk (within the first 1024 bytes) is still a PDF, as for PDF readers
    assert len(load(write(tmp_path / "late.pdf", b"junk\n" + pdf)).pages) == 7


def test_unsupported_suffix(tmp_path: Path):
    with pytest.raises(LoadError) as caught:
        load(write(tmp_path / "report.docx", b"PK\x03\x04"))
    assert caught.value.reason == (
        "unsupported file type '.docx' (supported: .htm, .html, .markdown, .md, .pdf, .txt)"
    )
    assert SUPPORTED_SUFFIXES == (".htm", ".html", ".markdown", ".md", ".pdf", ".txt")


def test_suffix_is_case_insensitive(tmp_path: Path):
    assert (
        load(write(tmp_path / "NOTES.TXT", "upper case suffix")).pages[0].text
        == "upper case suffix"
    )


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
"""  # noqa: E501 (the long Markdown line is part of the fixture)


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
    html = (
        "<html><head><meta "
        'charset="euc-kr"><title>제목</title></head><body><p>본문입니다.</p></body></html>'
    )
    doc = load(write(tmp_path / "page.htm", html.encode("euc-kr")))
    assert doc.pages[0].text == "제목\n\n본문입니다."
    assert doc.warnings == ("decoded as euc-kr (declared, not UTF-8)",)


# ---------------------------------------------------------------- normalize_whitespace


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  a \t b  \n  c  ", "a b\nc"),
        ("one\r\ntwo\rthree", "one\ntwo\nthree"),
        ("p1\n\n\n\n\np2\n \n \np3", "p1\n\np2\n\np3"),
        ("nul\x00 and\x07 bell\x1b", "nul and bell"),
        ("cafe\u0301 \u1112\u1161\u11ab", "café 한"),  # NFC: combining accent, conjoining jamo
        ("\ufb01nd \ufb02ow", "find flow"),  # ligatures from PDFs
        ("no\xa0break\u3000ideographic\u200bzero", "no break ideographiczero"),
        ("soft\xadhyphen", "softhyphen"),
        ("exam-\nple", "exam-\nple"),  # only PDFs are de-hyphenated
    ],
)
def test_normalize_whitespace(raw: str, expected: str):
    assert normalize_whitespace(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("an exam-\nple here", "an example here"),
        ("exam- \n ple", "example"),
        ("a well-\nknown fact", "a well-known fact"),  # a prefix that keeps its hyphen
        # written with a hyphen elsewhere
        ("co-operate, later co-\noperate", "co-operate, later co-operate"),
        ("Down the Rabbit-\nHole", "Down the Rabbit-\nHole"),  # capitalised: a real compound
        ("pages 12-\n14", "pages 12-\n14"),  # numbers are not words
    ],
)
def test_dehyphenate(raw: str, expected: str):
    assert normalize_whitespace(raw, dehyphenate=True) == expected
