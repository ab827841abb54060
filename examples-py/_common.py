"""Shared helper of the examples: where the model is."""

import os
import sys

DEFAULT_MODEL = os.path.expanduser("~/.cache/qstream/smollm2-135m-q4_1.qsf")


def model_path(argv_index: int = 1) -> str:
    """The model path: argv[argv_index], else $QSTREAM_MODEL, else the default SmolLM2 QSF."""
    if len(sys.argv) > argv_index and not sys.argv[argv_index].startswith("-"):
        return sys.argv[argv_index]
    return os.environ.get("QSTREAM_MODEL", DEFAULT_MODEL)
