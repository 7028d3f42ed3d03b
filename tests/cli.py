"""Run the project's command lines as a user does: a separate Python process, real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def run_module(
    module: str, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m module args...`` from the repository root, offline, with only the given RAG_*
    overrides.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    base.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "400",
        }
    )
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
