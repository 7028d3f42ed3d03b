from pathlib import Path

from ingest.manifest import chunk_id, file_hash, make_plan
from rag.store import COMPLETE, WRITING, FileRecord


def rec(source: str, digest: str, status: str = COMPLETE) -> FileRecord:
    return FileRecord(source, digest, status, 3, 0.0)


def test_plan_sorts_files():
    found = {"/d/new.md": "h1", "/d/same.md": "h2", "/d/changed.md": "h3", "/d/half.md": "h4"}
    records = {
        "/d/same.md": rec("/d/same.md", "h2"),
        "/d/changed.md": rec("/d/changed.md", "old"),
        "/d/half.md": rec("/d/half.md", "h4", WRITING),
        "/d/gone.md": rec("/d/gone.md", "h5"),
        "/elsewhere/kept.md": rec("/elsewhere/kept.md", "h6"),
    }
    plan = make_plan(found, records, [Path("/d")])
    assert plan.add == ("/d/new.md",)
    assert plan.update == ("/d/changed.md", "/d/half.md")
    assert plan.unchanged == ("/d/same.md",)
    assert plan.remove == ("/d/gone.md",)


def test_single_files_never_remove_others():
    records = {"/d/a.md": rec("/d/a.md", "h1"), "/d/b.md": rec("/d/b.md", "h2")}
    plan = make_plan({"/d/a.md": "h1"}, records, whole_dirs=[])
    assert plan.remove == ()
    assert plan.unchanged == ("/d/a.md",)


def test_prefix_folder_is_not_parent():
    records = {"/d2/x.md": rec("/d2/x.md", "h")}
    assert make_plan({}, records, [Path("/d")]).remove == ()


def test_chunk_ids_are_deterministic_and_distinct():
    assert chunk_id("/a.pdf", "h", 0) == chunk_id("/a.pdf", "h", 0)
    ids = {chunk_id("/a.pdf", "h", i) for i in range(1000)}
    assert len(ids) == 1000
    assert chunk_id("/a.pdf", "h", 0) != chunk_id("/b.pdf", "h", 0)
    assert chunk_id("/a.pdf", "h", 0) != chunk_id("/a.pdf", "h2", 0)


def test_file_hash(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"hello")
    assert file_hash(path) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
