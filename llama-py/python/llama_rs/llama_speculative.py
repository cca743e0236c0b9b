"""Draft models for speculative decoding.

`LlamaPromptLookupDecoding` is drafted in Rust (prompt lookup: the longest earlier
n-gram match) and verified in one batch; a real second model is passed to
`Llama(draft_model=...)` as a GGUF path or a `Llama`; `LlamaMTPDecoding` (an llama-rs
addition) drafts with the model's own multi-token-prediction head.
"""
from __future__ import annotations

from typing import Any


class LlamaDraftModel:
    """Base class of llama-cpp-python's drafters (only the built-in kinds run here)."""

    def __call__(self, input_ids: Any, /, **kwargs: Any) -> Any:
        raise NotImplementedError()


class LlamaPromptLookupDecoding(LlamaDraftModel):
    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10):
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens


class LlamaMTPDecoding(LlamaDraftModel):
    """Drafts with the model's own multi-token-prediction (MTP/NextN) head, for models
    converted with one (GLM-4.5, DeepSeek-V3, Qwen3.5, ...): `Llama(path,
    draft_model=LlamaMTPDecoding())` loads the MTP layers with the model. A model without
    them is an InvalidArgumentError."""

    def __init__(self, num_pred_tokens: int = 8):
        self.num_pred_tokens = num_pred_tokens
