"""What every command line shares: logging, quiet third-party libraries, one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from rag.config import ConfigError
from rag.models import ModelLoadError
from rag.store import StoreError

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, systemd, Kubernetes) where a command stops like Ctrl-C; exits 128 +
    15.
    """

    def __init__(self, signum: int = 15) -> None:
        super().__init__(signum)
        self.signum = signum


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        for name in (
            "transformers",
            "sentence_transformers",
            "chromadb",
            "httpx",
            "pypdf",
            "huggingface_hub",
            "ray",
        ):
            logging.getLogger(name).setLevel(logging.ERROR)
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        else:  # read when transformers is first imported (not here: a bad config is named sooner)
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def run_cli(
    main: Callable[[], int],
    *,
    interrupted_note: str = "",
    errors: tuple[type[Exception], ...] = (),
) -> None:
    """Run ``main`` and turn the errors a user can cause (and ``errors``, a command's own) into
    one readable line and an exit code."""
    try:
        code = main()
    except Terminated as exc:
        print(f"\nstopped by SIGTERM. {interrupted_note}".rstrip(), file=sys.stderr)
        code = 128 + exc.signum
    except KeyboardInterrupt:
        print(f"\ninterrupted. {interrupted_note}".rstrip(), file=sys.stderr)
        code = EXIT_INTERRUPTED
    except (ConfigError, ModelLoadError, StoreError, ValueError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except _stage_errors() as exc:  # evaluated only when something else was raised
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    sys.exit(code)


def _stage_errors() -> tuple[type[Exception], ...]:
    """The errors of the embedder, reranker and generator, imported only once one is raised: the
    reranker package imports torch (seconds), which a bad config or question must not wait for."""
    from rag.embedder import EmbedError
    from rag.generate import GenerationError
    from rag.rerankers import RerankError

    return EmbedError, GenerationError, RerankError
