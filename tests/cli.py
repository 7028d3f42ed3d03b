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
    return _run_python(["-m", module, *map(str, args)], env, timeout)


def run_code(
    code: str, *args: str | Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -c code args...``, in the same setting as :func:`run_module`."""
    return _run_python(["-c", code, *map(str, args)], env, timeout)


def _run_python(
    argv: list[str], env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
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
        [sys.executable, *argv],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
