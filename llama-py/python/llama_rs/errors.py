"""Exceptions by error kind. Each also derives from the built-in exception a
llama-cpp-python script already catches (`ValueError`, `MemoryError`, `RuntimeError`),
so existing `except` clauses keep working:

    try:
        llm(prompt_too_long)
    except llama_rs.ContextFullError:   # or: except ValueError
        ...
"""


class LlamaError(Exception):
    """Every error llama_rs raises (except a real KeyboardInterrupt from Ctrl-C).

    `kind` is the error kind's name (`"InvalidArgument"`, `"ContextFull"`, ...: the table
    in docs/PYTHON.md) and `param` the request field at fault when one is known
    (`"top_logprobs"`, `"messages[2].content"`), as the server's `param`."""

    kind = None  # type: ignore[var-annotated]
    param = None  # type: ignore[var-annotated]


class InvalidArgumentError(LlamaError, ValueError):
    """A value that cannot be used (a bad sampler setting, token id, grammar, parameter)."""


class ContextFullError(LlamaError, ValueError):
    """The prompt or the generation does not fit the context."""


class ModelLoadError(LlamaError, ValueError):
    """A missing, unreadable, corrupt or truncated model (or state) file."""


class UnsupportedError(LlamaError, ValueError):
    """Valid, but not possible with this model or build."""


class ResourceLimitError(LlamaError, MemoryError):
    """Over a bound on time, memory or nesting (a grammar, a template, a size)."""


class RejectedError(LlamaError, ValueError):
    """A grammar, logits processor or sampler left no token to choose."""


class CancelledError(LlamaError, KeyboardInterrupt):
    """Stopped on request."""


class BackendError(LlamaError, RuntimeError):
    """llama.cpp itself failed."""


class ClosedError(LlamaError, RuntimeError):
    """A `Llama` used after `close()` (or its `with` block)."""


__all__ = [
    "LlamaError", "InvalidArgumentError", "ContextFullError", "ModelLoadError", "UnsupportedError",
    "ResourceLimitError", "RejectedError", "CancelledError", "BackendError", "ClosedError",
]
