"""Retrieval-augmented answers with a visible reranking stage."""
