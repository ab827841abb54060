"""Type stubs for the QStream native module (``qstream._qstream``)."""

import os
from types import TracebackType
from typing import Any, Callable, Dict, Iterator, List, Literal, Mapping, Optional, Sequence, Type, Union, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import final

__all__ = [
    "__version__",
    "AttentionCache",
    "BusyError",
    "CancelledError",
    "ClosedError",
    "ContextFullError",
    "FormatError",
    "GenerateResult",
    "InternalError",
    "InvalidArgumentError",
    "Model",
    "QStreamError",
    "QStreamFileNotFoundError",
    "QStreamMemoryError",
    "QStreamOSError",
    "Session",
    "TokenStream",
    "UnsupportedError",
    "act_bits",
    "convert",
    "info",
    "set_act_bits",
]

__version__: str

_Path = Union[str, "os.PathLike[str]"]
_Prompt = Union[str, Sequence[int]]
_Stop = Union[str, Sequence[str], None]
_Messages = Sequence[Mapping[str, str]]

class QStreamError(Exception):
    """Base class of every QStream error. ``code`` is the C API's ``qs_status`` value."""

    code: int

class InvalidArgumentError(QStreamError, ValueError):
    """A bad argument (option value, token id, tokenizer input, missing chat template)."""

class ClosedError(QStreamError, ValueError):
    """The model (or stream) was closed with ``close()``."""

class QStreamFileNotFoundError(QStreamError, FileNotFoundError):
    """The file does not exist (``.filename`` is the path)."""

class QStreamOSError(QStreamError, OSError):
    """Any other I/O failure."""

class FormatError(QStreamError):
    """The file is not a valid model file: bad magic (202), corrupt (204), checksum (205)."""

class UnsupportedError(QStreamError):
    """Unsupported format version (203), architecture (401) or tensor type (402)."""

class QStreamMemoryError(QStreamError, MemoryError):
    """Out of memory (300) or the weights exceed the ``budget`` given to ``Model`` (302)."""

class ContextFullError(QStreamError):
    """The context window cannot hold the tokens."""

class CancelledError(QStreamError):
    """The operation was cancelled."""

class BusyError(QStreamError):
    """The object is in use by another thread."""

class InternalError(QStreamError):
    """A bug inside QStream (901), or a Rust panic caught at the boundary (900)."""

@final
class TokenStream:
    """Iterator over generated text pieces (from ``Model.stream`` / ``Model.chat_stream``).

    Each ``next()`` runs one generation step with the GIL released. Breaking out of the
    loop, ``close()`` or leaving a ``with`` block stops generation.
    """

    def __iter__(self) -> "TokenStream": ...
    def __next__(self) -> str: ...
    def close(self) -> None:
        """Stop generation now (idempotent)."""
    def cancel(self) -> None:
        """Ask the generation to stop after the current token; safe from any thread."""
    def __enter__(self) -> "TokenStream": ...
    def __exit__(
        self,
        *_args: Any,
    ) -> bool: ...
    @property
    def tokens(self) -> List[int]:
        """Ids generated so far (including an end-of-sequence id that ended generation)."""
    @property
    def text(self) -> str:
        """Text generated so far."""
    @property
    def stop_reason(self) -> Optional[str]:
        """"max_tokens", "eos", "stop_string", "stopped", "cancelled", "error"; None while running."""
    @property
    def result(self) -> Optional[GenerateResult]:
        """The ``GenerateResult`` once generation ran to its end."""

@final
class GenerateResult:
    """Outcome of a generation; the fields of the C API's ``qs_generate_result``."""

    @property
    def text(self) -> str:
        """The generated text."""
    @property
    def tokens(self) -> List[int]:
        """The generated ids."""
    @property
    def stop_reason(self) -> str:
        """"max_tokens", "eos", "stop_string", "stopped", "cancelled"."""
    @property
    def n_prompt(self) -> int:
        """Prompt tokens decoded by this call."""
    @property
    def n_generated(self) -> int:
        """Tokens sampled."""
    @property
    def prompt_secs(self) -> float:
        """Seconds spent on the prompt."""
    @property
    def gen_secs(self) -> float:
        """Seconds spent generating."""

@final
class Session:
    """A persistent conversation (from ``Model.session()``): the KV cache is kept across calls."""

    @overload
    def generate(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[False] = False,
    ) -> str: ...
    @overload
    def generate(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[True],
    ) -> GenerateResult: ...
    @overload
    def generate(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: bool = False,
    ) -> Union[str, GenerateResult]:
        """Append ``prompt`` to the session (may be empty to continue) and generate."""
    def stream(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
    ) -> TokenStream:
        """Streaming ``generate``; the session is busy until the stream ends."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[False] = False,
    ) -> str: ...
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[True],
    ) -> GenerateResult: ...
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: bool = False,
    ) -> Union[str, GenerateResult]:
        """Chat with the whole conversation; only what differs from the cached tokens is decoded."""
    def chat_stream(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
    ) -> TokenStream:
        """Streaming ``chat``."""
    def reset(self) -> None:
        """Forget the whole conversation."""
    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` tokens of the conversation."""
    @property
    def tokens(self) -> List[int]:
        """Token ids of the conversation so far."""
    @property
    def n_past(self) -> int:
        """Number of tokens in the conversation."""
    @property
    def n_ctx(self) -> int:
        """Context window in tokens."""
    def close(self) -> None:
        """Free the KV cache; later calls raise ``ClosedError``."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def __enter__(self) -> "Session": ...
    def __exit__(self, *_args: Any) -> bool: ...

@final
class AttentionCache:
    """A standalone KV cache of one attention layer with causal attention.

    ``k``/``v``: float32 ``(n_tokens, n_kv_heads, head_dim)``; ``q`` and the result of
    :meth:`attend`: ``(n_tokens, n_q_heads, head_dim)``. Query head ``h`` reads KV head
    ``h // (n_q_heads // n_kv_heads)``.
    """

    def __new__(
        cls,
        *,
        head_dim: int,
        n_kv_heads: int,
        n_q_heads: Optional[int] = None,
        capacity: int = 4096,
        k_type: str = "f32",
        v_type: str = "f32",
    ) -> "AttentionCache": ...
    def append(self, k: npt.NDArray[np.float32], v: npt.NDArray[np.float32]) -> None:
        """Append the keys and values of ``n_tokens`` positions."""
    def attend(
        self, q: npt.NDArray[np.float32], *, causal: bool = True, scale: Optional[float] = None
    ) -> npt.NDArray[np.float32]:
        """Attention of the last ``n_tokens`` positions' queries; a new array of q's shape."""
    def truncate(self, n: int) -> None:
        """Keep the first ``n`` positions."""
    def __len__(self) -> int: ...
    @property
    def memory_bytes(self) -> int:
        """Bytes held by K and V (the full capacity)."""
    @property
    def bytes_per_token(self) -> int:
        """Bytes of K and V per cached position."""
    @property
    def head_dim(self) -> int:
        """Values per head vector."""
    @property
    def n_kv_heads(self) -> int:
        """Key/value heads."""
    @property
    def n_q_heads(self) -> int:
        """Query heads."""
    @property
    def capacity(self) -> int:
        """Positions the cache can hold."""
    @property
    def k_type(self) -> str:
        """Element type of the keys."""
    @property
    def v_type(self) -> str:
        """Element type of the values."""

@final
class Model:
    """A loaded QSF model; thread-safe (each call gets its own KV cache; ``session()`` keeps one)."""

    def __new__(
        cls,
        path: _Path,
        *,
        threads: Optional[int] = None,
        mmap: bool = True,
        budget: Optional[int] = None,
        n_ctx: Optional[int] = None,
        verify: bool = False,
        cache_type_k: Optional[str] = None,
        cache_type_v: Optional[str] = None,
    ) -> "Model": ...
    def close(self) -> None:
        """Release the weights; later calls raise ``ClosedError``. Idempotent."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    @property
    def path(self) -> str:
        """The path the model was loaded from."""
    @property
    def info(self) -> Dict[str, Any]:
        """Model summary: arch, sizes, n_params, quant types, chat_template, config, ..."""
    def __enter__(self) -> "Model": ...
    def __exit__(self, *_args: Any) -> bool: ...
    def tokenize(self, text: str, add_special: bool = True) -> List[int]:
        """Text -> token ids (``add_special`` adds BOS when the model wants one)."""
    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Token ids -> text."""
    def apply_chat_template(self, messages: _Messages, add_generation_prompt: bool = True) -> str:
        """Render ``messages`` with the model's chat template."""
    def session(self, *, n_ctx: Optional[int] = None) -> "Session":
        """A persistent session whose KV cache is kept across calls."""
    @overload
    def generate(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[False] = False,
    ) -> str: ...
    @overload
    def generate(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[True],
    ) -> GenerateResult: ...
    @overload
    def generate(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: bool = False,
    ) -> Union[str, GenerateResult]:
        """Generate from a prompt (str or token ids) on a fresh context; the text, or a ``GenerateResult`` with ``details=True``."""
    def generate_ids(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
    ) -> List[int]:
        """Like ``generate``; returns the generated token ids."""
    def stream(
        self,
        prompt: _Prompt,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
    ) -> TokenStream:
        """Like ``generate`` but yields text pieces as they are generated."""
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[False] = False,
    ) -> str: ...
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: Literal[True],
    ) -> GenerateResult: ...
    @overload
    def chat(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
        details: bool = False,
    ) -> Union[str, GenerateResult]:
        """Apply the chat template to ``messages`` and return the assistant's reply."""
    def chat_stream(
        self,
        messages: _Messages,
        *,
        max_tokens: int = 256,
        temperature: float = 0.7,
        top_k: int = 40,
        top_p: float = 0.9,
        min_p: float = 0.0,
        repeat_penalty: float = 1.0,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_last_n: int = 64,
        seed: Optional[int] = None,
        stop: _Stop = None,
        stop_on_eos: bool = True,
    ) -> TokenStream:
        """Streaming ``chat``."""
    def logits(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Logits of every position, shape (len(ids), n_vocab), float32."""
    def perplexity(self, text: _Prompt, ctx: int = 512) -> float:
        """Perplexity with llama.cpp's method (chunks of ``ctx``, second half scored)."""

def convert(
    src: _Path,
    dst: _Path,
    *,
    quant: str = "4bit",
    block_size: int = 32,
    outlier_frac: float = 0.005,
    outlier_alloc: str = "global",
    compress: bool = False,
    rotate: Optional[int] = None,
    tensor_types: Optional[Mapping[str, str]] = None,
    calibrate: Optional[_Path] = None,
    imatrix: Optional[_Path] = None,
    gptq: bool = False,
    gptq_act_order: bool = False,
    hessian: Optional[_Path] = None,
    calib_ctx: int = 256,
    calib_chunks: int = 32,
    progress: Union[bool, None, Callable[[int, int, str], Optional[bool]]] = False,
    threads: Optional[int] = None,
) -> Dict[str, Any]:
    """Convert a GGUF file or HuggingFace folder to QSF; returns a report dict."""

def info(path: _Path, *, verify: bool = False) -> Dict[str, Any]:
    """Read a QSF file's header, config and tensor directory."""

def set_act_bits(bits: int) -> None:
    """Set the activation precision of the integer kernels for the whole process: 16 (default;
    next tokens agree with the exact f32 path) or 8 (llama.cpp's Q8_1 scheme: faster, lower
    next-token agreement; measured in docs/benchmarks.md). Overrides ``QSTREAM_ACT_BITS``. Raises :class:`InvalidArgumentError` otherwise."""
    ...

def act_bits() -> int:
    """The activation precision in use (8 or 16)."""
    ...
