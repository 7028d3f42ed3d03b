"""A stand-in OpenAI-compatible endpoint that never declines: it answers every question with
"Answer to: QUESTION [1]". For measuring what the pipeline itself does around an endpoint (the
grounding check's declines) without a real model; the tests use the same server.

    python scripts/stand_in_llm.py --port 8011 &
    RAG_LLM__BASE_URL=http://127.0.0.1:8011/v1 RAG_LLM__MODEL=stand-in RAG_LLM__API_KEY_ENV= \\
        python -m lab.evaluate squad ... --answers --decline
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_llm import FakeLLMServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args()
    server = FakeLLMServer(port=args.port)
    server.echo = True
    with server:
        print(f"stand-in LLM at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
