"""How a trained reranker reads its inputs, kept beside its weights so that use reads as training
did.

``lab.finetune train --long-passages ... --romanize-hangul`` writes ``reading.json`` into
every checkpoint and into ``best/`` (``scripts/ship_reranker.py`` copies it into
``rag/shipped/NAME``). ``reranker.long_passages`` and ``reranker.romanize_hangul`` are
"auto" by default: the model's ``reading.json`` if it has one, else the plain reading
("head", no romanisation), which is how every model from the hub was trained. A value set
in the config wins over the file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rag.models import ModelLoadError, resolve_model

if TYPE_CHECKING:
    from rag.rerankers.options import RerankerOptions

logger = logging.getLogger(__name__)

READING_FILE = "reading.json"
PLAIN = {"long_passages": "head", "romanize_hangul": False}


def write_reading(directory: Path, *, long_passages: str, romanize_hangul: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / READING_FILE).write_text(
        json.dumps({"long_passages": long_passages, "romanize_hangul": romanize_hangul}, indent=2)
        + "\n",
        encoding="utf-8",
    )


def read_format_file(path: Path, fmt: str, what: str) -> dict:
    """The JSON object in ``path`` whose "format" is ``fmt`` (a lexical reranker's, an
    ensemble's); ValueError names the file and says it is not ``what``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ValueError(f"{path}: not {what} (expected format {fmt!r})")
    return data


def trained_reading(spec: str) -> dict[str, object]:
    """The reading recorded beside the model ``spec`` names (adapter or model folder), or {} if
    none is.
    """
    try:
        location = Path(resolve_model(spec).location)
    except ModelLoadError:
        return {}  # the loader reports a bad spec, with its own message
    path = location / READING_FILE
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{spec}: {path} is not readable JSON ({exc})") from None
    if not isinstance(found, dict) or set(found) - set(PLAIN):
        raise ModelLoadError(
            f"{spec}: {path} must be an object with keys {', '.join(PLAIN)}, got {found!r}"
        )
    return found


def resolve_reading(options: RerankerOptions) -> RerankerOptions:
    """``options`` with every "auto" reading replaced by the model's recorded one, or the plain
    one.
    """
    auto = [k for k in PLAIN if getattr(options, k) == "auto"]
    if not auto:
        return options
    found = trained_reading(options.model)
    chosen = {k: found.get(k, PLAIN[k]) for k in auto}
    if found:
        logger.info("%s: reads as trained (%s): %s", options.model, READING_FILE, chosen)
    return dataclasses.replace(options, **chosen)
