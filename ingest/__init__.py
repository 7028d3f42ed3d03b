"""Turn files into chunks in the vector store: ``python -m ingest PATH...``."""
