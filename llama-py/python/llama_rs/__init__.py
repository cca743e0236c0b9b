"""llama_rs: llama-cpp-python's API over llama-rs (Rust, llama.cpp).

    from llama_rs import Llama          # or: import llama_rs as llama_cpp
    llm = Llama(model_path="model.gguf", n_ctx=2048)
    print(llm("Q: What is the capital of France? A:", max_tokens=16)["choices"][0]["text"])
"""
import logging

from . import _llama_rs
from .errors import (BackendError, CancelledError, ClosedError, ContextFullError, InvalidArgumentError, LlamaError,
                     ModelLoadError, RejectedError, ResourceLimitError, UnsupportedError)
from .llama import (AsyncLlama, BaseLlamaCache, LLAMA_SPLIT_MODE_LAYER, LLAMA_SPLIT_MODE_NONE, LLAMA_SPLIT_MODE_ROW,
                    Llama, LlamaCache, LlamaDiskCache, LlamaRAMCache, LlamaState, LogitsProcessorList,
                    StoppingCriteriaList)
from .llama_grammar import JSON_GBNF, LlamaGrammar
from . import llama_speculative
from . import llama_chat_format

__version__ = "0.1.0"
LLAMA_CPP_COMMIT = _llama_rs.LLAMA_CPP_COMMIT

# Constants scripts pass to Llama(type_k=..., pooling_type=...).
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1
GGML_TYPE_Q4_0 = 2
GGML_TYPE_Q4_1 = 3
GGML_TYPE_Q5_0 = 6
GGML_TYPE_Q5_1 = 7
GGML_TYPE_Q8_0 = 8
GGML_TYPE_IQ4_NL = 20
GGML_TYPE_BF16 = 30
LLAMA_POOLING_TYPE_UNSPECIFIED = -1
LLAMA_POOLING_TYPE_NONE = 0
LLAMA_POOLING_TYPE_MEAN = 1
LLAMA_POOLING_TYPE_CLS = 2
LLAMA_POOLING_TYPE_LAST = 3
LLAMA_POOLING_TYPE_RANK = 4
LLAMA_DEFAULT_SEED = 0xFFFFFFFF


def _log(level: int, target: str, message: str) -> None:
    """Called by the native module for each llama.cpp / llama-rs log record it forwards
    (`Llama(verbose=True)` turns forwarding on at INFO)."""
    if _log_callback is not None:
        _log_callback(level, (message + "\n").encode("utf-8", errors="replace"), _log_user_data)
        return
    logging.getLogger(f"llama_rs.{target}" if target else "llama_rs").log(level, message)


_log_callback = None
_log_user_data = None


def llama_log_set(log_callback, user_data=None) -> None:
    """llama-cpp-python's `llama_log_set`: every record (debug and up) goes to
    `log_callback(level, text_bytes, user_data)` instead of `logging`; None restores
    `logging` (records at INFO and up)."""
    global _log_callback, _log_user_data
    _log_callback, _log_user_data = log_callback, user_data
    _llama_rs.set_log_level(10 if log_callback is not None else 20)


def llama_supports_gpu_offload() -> bool:
    return _llama_rs.supports_gpu_offload()


def llama_print_system_info() -> bytes:
    """llama.cpp's system info (as llama-cpp-python: bytes), after the CPU backend in use:
    `CPU variant = haswell (...)` in the portable wheel, `CPU = built in (...)` otherwise."""
    return _llama_rs.system_info().encode()


__all__ = [
    "Llama", "AsyncLlama", "LlamaGrammar", "LlamaState", "LlamaCache", "LlamaRAMCache", "LlamaDiskCache", "BaseLlamaCache", "JSON_GBNF", "llama_speculative", "llama_chat_format",
    "llama_supports_gpu_offload", "llama_print_system_info", "llama_log_set", "LLAMA_SPLIT_MODE_NONE", "LLAMA_SPLIT_MODE_LAYER", "LLAMA_SPLIT_MODE_ROW",
    "LogitsProcessorList", "StoppingCriteriaList", "LlamaError", "InvalidArgumentError", "ContextFullError",
    "ModelLoadError", "UnsupportedError", "ResourceLimitError", "RejectedError", "CancelledError", "BackendError",
    "ClosedError",
]
