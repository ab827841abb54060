"""QStream: CPU-first inference for quantized LLMs.

Load a QSF model with :class:`Model`, generate with :meth:`Model.generate` /
:meth:`Model.stream` / :meth:`Model.chat` (``details=True`` gives a :class:`GenerateResult`),
keep a KV cache across calls with :meth:`Model.session` (a :class:`Session`), convert GGUF
or HuggingFace models with
:func:`convert`, inspect files with :func:`info`. :class:`AttentionCache` is a standalone
(optionally quantized) KV cache with attention for other engines.

Every error is a :class:`QStreamError` whose ``code`` equals the C API's ``qs_status``.
"""

from ._qstream import (
    AttentionCache,
    BusyError,
    CancelledError,
    ClosedError,
    ContextFullError,
    FormatError,
    GenerateResult,
    InternalError,
    InvalidArgumentError,
    Model,
    QStreamError,
    QStreamFileNotFoundError,
    QStreamMemoryError,
    QStreamOSError,
    Session,
    TokenStream,
    UnsupportedError,
    __version__,
    act_bits,
    convert,
    info,
    set_act_bits,
)

__all__ = [
    "Model",
    "Session",
    "GenerateResult",
    "AttentionCache",
    "TokenStream",
    "convert",
    "info",
    "set_act_bits",
    "act_bits",
    "QStreamError",
    "InvalidArgumentError",
    "ClosedError",
    "QStreamFileNotFoundError",
    "QStreamOSError",
    "FormatError",
    "UnsupportedError",
    "QStreamMemoryError",
    "ContextFullError",
    "CancelledError",
    "BusyError",
    "InternalError",
    "__version__",
]
