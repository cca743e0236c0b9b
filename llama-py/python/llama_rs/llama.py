"""`Llama`: llama-cpp-python's high-level class, over llama-rs.

Same constructor parameters, defaults, methods and return shapes (see
../shared/PYTHON_API.md in the repository); the work runs in Rust with the GIL released.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _llama_rs as _native
from .errors import ClosedError, ContextFullError, InvalidArgumentError, ModelLoadError, UnsupportedError
from .llama_grammar import LlamaGrammar
from .llama_speculative import LlamaDraftModel, LlamaMTPDecoding, LlamaPromptLookupDecoding

class LogitsProcessorList(list):
    """Logits processors applied in order: each `f(input_ids, scores) -> scores`
    (numpy arrays: `np.intc` token ids so far, `np.single` scores of the whole vocabulary)."""

    def __call__(self, input_ids, scores):
        for p in self:
            scores = p(input_ids, scores)
        return scores


class StoppingCriteriaList(list):
    """Stopping criteria: each `f(input_ids, scores) -> bool`; generation ends once any
    is true."""

    def __call__(self, input_ids, scores) -> bool:
        return any(c(input_ids, scores) for c in self)


LLAMA_SPLIT_MODE_NONE = 0
LLAMA_SPLIT_MODE_LAYER = 1
LLAMA_SPLIT_MODE_ROW = 2


class LlamaState:
    """A saved state (llama-cpp-python's shape)."""

    def __init__(self, input_ids, scores, n_tokens, llama_state, llama_state_size, seed):
        self.input_ids = input_ids
        self.scores = scores
        self.n_tokens = n_tokens
        self.llama_state = llama_state
        self.llama_state_size = llama_state_size
        self.seed = seed


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class BaseLlamaCache:
    """llama-cpp-python's cache protocol: `cache[tokens]` is the saved `LlamaState` whose
    tokens share the longest prefix with `tokens` (KeyError: none), `cache[tokens] =
    state` stores one; `Llama.set_cache(cache)` restores before and saves after every
    completion."""

    def __init__(self, capacity_bytes: int = 2 << 30):
        self.capacity_bytes = capacity_bytes

    @property
    def cache_size(self) -> int:
        raise NotImplementedError

    def __getitem__(self, key: Sequence[int]) -> "LlamaState":
        raise NotImplementedError

    def __contains__(self, key: Sequence[int]) -> bool:
        raise NotImplementedError

    def __setitem__(self, key: Sequence[int], value: "LlamaState") -> None:
        raise NotImplementedError


class LlamaRAMCache(BaseLlamaCache):
    """Saved states in host memory, least recently used out past `capacity_bytes`
    (llama-cpp-python's). Each entry is a whole-context state, so this suits a few long
    shared prompts; the context's own prefix reuse already serves the last prompt."""

    def __init__(self, capacity_bytes: int = 2 << 30):
        super().__init__(capacity_bytes)
        from collections import OrderedDict
        self.cache_state: "OrderedDict[Tuple[int, ...], LlamaState]" = OrderedDict()

    @property
    def cache_size(self) -> int:
        return sum(st.llama_state_size for st in self.cache_state.values())

    def _find(self, key: Sequence[int]) -> Optional[Tuple[int, ...]]:
        best, n_best = None, 0
        for k in self.cache_state:
            n = _common(k, key)
            if n > n_best:
                best, n_best = k, n
        return best

    def __getitem__(self, key: Sequence[int]) -> "LlamaState":
        k = self._find(key)
        if k is None:
            raise KeyError("Key not found")
        self.cache_state.move_to_end(k)
        return self.cache_state[k]

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find(key) is not None

    def __setitem__(self, key: Sequence[int], value: "LlamaState") -> None:
        k = tuple(key)
        self.cache_state.pop(k, None)
        self.cache_state[k] = value
        while self.cache_size > self.capacity_bytes and len(self.cache_state) > 1:
            self.cache_state.popitem(last=False)


class LlamaDiskCache(BaseLlamaCache):
    """Saved prompt states in a directory (llama-cpp-python's `LlamaDiskCache`), backed by
    llama-rs's disk cache: entries are checksummed, written atomically, keyed by the model
    file, KV types and adapters (a state never restores into another model), bounded by
    `capacity_bytes` (least recently used out), and shared safely by processes. A later
    process with the same model restores a stored prompt prefix instead of recomputing it.
    `AsyncLlama(cache=...)` gives its engine the same directory."""

    def __init__(self, cache_dir: str = ".cache/llama_cache", capacity_bytes: int = 2 << 30):
        super().__init__(capacity_bytes)
        self.cache_dir = cache_dir
        self._native = _native.DiskCache(cache_dir, capacity_bytes)

    @property
    def cache_size(self) -> int:
        return self._native.usage()[0]

    def __len__(self) -> int:
        return self._native.usage()[1]

    def stats(self) -> Dict[str, Any]:
        """Hits, tokens restored, bytes read and written, evictions, rejected entries."""
        return self._native.stats()

    def clear(self) -> None:
        self._native.clear()

    def __getitem__(self, key: Sequence[int]) -> "LlamaState":
        raise KeyError("LlamaDiskCache is read by Llama itself (set_cache); it does not hand out states")

    def __contains__(self, key: Sequence[int]) -> bool:
        return False

    def __setitem__(self, key: Sequence[int], value: "LlamaState") -> None:
        raise TypeError("LlamaDiskCache is written by Llama itself (set_cache)")


LlamaCache = LlamaRAMCache


class _Closed:
    """Stands in for the native objects of a closed `Llama`."""

    def __getattr__(self, name: str):
        raise ClosedError("this Llama was closed")


def _finish(f: Optional[str]) -> Optional[str]:
    return None if f is None else ("length" if f == "length" else "stop")


class Llama:
    """A model and one context: completions, chat, embeddings, tokenization, state."""

    def __init__(
        self,
        model_path: str,
        *,
        n_gpu_layers: int = 0,
        split_mode: int = LLAMA_SPLIT_MODE_LAYER,
        main_gpu: int = 0,
        tensor_split: Optional[List[float]] = None,
        vocab_only: bool = False,
        use_mmap: bool = True,
        use_mlock: bool = False,
        kv_overrides: Optional[Dict[str, Union[bool, int, float, str]]] = None,
        seed: int = 0xFFFFFFFF,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: Optional[int] = None,
        n_threads_batch: Optional[int] = None,
        flash_attn: bool = False,
        offload_kqv: bool = True,
        swa_full: Optional[bool] = None,
        embedding: bool = False,
        last_n_tokens_size: int = 64,
        chat_format: Optional[str] = None,
        chat_handler: Optional[Any] = None,
        draft_model: Optional[Any] = None,
        type_k: Optional[int] = None,
        type_v: Optional[int] = None,
        logits_all: bool = False,
        verbose: bool = True,
        **kwargs: Any,  # llama-cpp-python ignores unknown keywords too
    ):
        if not os.path.exists(model_path):
            raise ModelLoadError(f"Model path does not exist: {model_path}")
        self.verbose = verbose
        self.model_path = model_path
        # llama.cpp's log lines go to `logging` (logger "llama_rs.llama_cpp") only when
        # verbose; a quiet Llama keeps the process quiet (the setting is process-wide,
        # as llama.cpp's log sink is).
        _native.set_log_level(20 if verbose else 0)
        self._model = _native.Model(
            model_path, n_gpu_layers=n_gpu_layers, split_mode=split_mode, main_gpu=main_gpu,
            tensor_split=tensor_split, vocab_only=vocab_only, use_mmap=use_mmap, use_mlock=use_mlock,
            kv_overrides=kv_overrides, mtp=isinstance(draft_model, LlamaMTPDecoding))
        self._seed = seed
        self.n_batch = min(n_ctx or self._model.n_ctx_train(), n_batch)
        self.n_threads = n_threads or max((os.cpu_count() or 2) // 2, 1)
        self.n_threads_batch = n_threads_batch or (os.cpu_count() or 2)
        self.last_n_tokens_size = last_n_tokens_size
        self.chat_format = chat_format
        self.cache = None
        self._embedding = embedding
        self._embedder = None
        self._ranker = None
        self._logits_all = logits_all
        self._last_logits: Optional[bytes] = None
        self._core = None
        self._n_ctx_no_core = n_ctx
        if not vocab_only and kwargs.get("_context", True):
            self._core = _native.Core(
                self._model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch, flash_attn=flash_attn,
                type_k=type_k, type_v=type_v, offload_kqv=offload_kqv, swa_full=swa_full)
        # A multimodal handler (llama_chat_format.MTMDChatHandler and its names): its
        # projector joins the core, and chat messages may carry images.
        self.chat_handler = chat_handler
        if chat_handler is not None and getattr(chat_handler, "clip_model_path", None) and self._core is not None:
            self._core.set_projector(chat_handler.clip_model_path, n_threads=self.n_threads_batch,
                                     use_gpu=getattr(chat_handler, "use_gpu", True))
        self.draft_model = None
        self._draft_native = None
        if draft_model is not None:
            self._set_draft(draft_model)
        self.metadata: Dict[str, str] = dict(self._model.metadata())
        if verbose:
            import sys
            print(f"llama_rs: loaded {self._model.description()} from {model_path} "
                  f"(n_ctx {self.n_ctx()}, llama.cpp {_native.LLAMA_CPP_COMMIT})", file=sys.stderr)

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: Optional[str], additional_files: Optional[List[str]] = None,
                        local_dir: Optional[str] = None, local_dir_use_symlinks: Any = "auto",
                        cache_dir: Optional[str] = None, **kwargs: Any) -> "Llama":
        """Downloads a GGUF from the Hugging Face Hub (`filename` may be a glob such as
        "*q8_0.gguf"; exactly one file must match) and loads it; `additional_files`
        (globs too) are fetched next to it, e.g. the other shards of a split model.
        Needs the `huggingface-hub` package, as llama-cpp-python does."""
        try:
            from huggingface_hub import HfFileSystem, hf_hub_download
        except ImportError:
            raise ImportError("Llama.from_pretrained requires the huggingface-hub package. "
                              "You can install it with `pip install huggingface-hub`.") from None
        import fnmatch
        files = [f["name"] if isinstance(f, dict) else f for f in HfFileSystem().ls(repo_id, recursive=True)]
        # Paths come back as "<repo_id>/<path in repo>".
        in_repo = [f[len(repo_id) + 1:] if f.startswith(repo_id + "/") else f for f in files]

        def one(pattern: str) -> str:
            hits = [f for f in in_repo if fnmatch.fnmatch(f, pattern)]
            if len(hits) != 1:
                raise InvalidArgumentError(
                    f"{'No file' if not hits else 'More than one file'} in {repo_id} matches {pattern!r}: "
                    f"{hits or in_repo}")
            return hits[0]

        def fetch(path: str) -> str:
            sub, name = os.path.split(path)
            return hf_hub_download(repo_id=repo_id, filename=name, subfolder=sub or None, local_dir=local_dir,
                                   cache_dir=cache_dir)

        model_path = fetch(one(filename or "*.gguf"))
        for extra in additional_files or []:
            fetch(one(extra))
        return cls(model_path=model_path, **kwargs)

    # ------------------------------------------------------------------ basics
    def _set_draft(self, draft: Any) -> None:
        """`draft_model=`: a LlamaPromptLookupDecoding (n-gram drafting in Rust), a path to
        a smaller GGUF, or a `Llama` (a real draft model, verified in one batch)."""
        self.draft_model = draft
        if isinstance(draft, LlamaPromptLookupDecoding):
            return
        if isinstance(draft, LlamaMTPDecoding):
            self._core.set_mtp(True)
            return
        if isinstance(draft, str):
            self._draft_native = _native.Model(draft, n_gpu_layers=-1)
        elif isinstance(draft, Llama):
            self._draft_native = draft._model
        elif isinstance(draft, LlamaDraftModel):
            raise InvalidArgumentError("custom LlamaDraftModel subclasses are not supported: pass a "
                             "LlamaPromptLookupDecoding, a GGUF path or a Llama as draft_model")
        else:
            raise InvalidArgumentError(f"draft_model: unsupported {type(draft).__name__}")
        self._core.set_draft_model(self._draft_native)

    def _speculation(self):
        d = self.draft_model
        if d is None:
            return None, 8
        # Passed as given: llama-rs checks them (Speculation::check) and raises
        # InvalidArgumentError naming the setting, rather than clamping in silence.
        if isinstance(d, LlamaPromptLookupDecoding):
            return ("ngram", 1, d.max_ngram_size), d.num_pred_tokens
        if isinstance(d, LlamaMTPDecoding):
            return ("mtp", 0, 0), d.num_pred_tokens
        return ("model", 0, 0), 8

    def n_ctx(self) -> int:
        return self._core.n_ctx() if self._core else self._n_ctx_no_core

    def n_embd(self) -> int:
        return self._model.n_embd()

    def n_vocab(self) -> int:
        return self._model.n_vocab()

    def token_bos(self) -> int:
        return self._model.token_bos()

    def token_eos(self) -> int:
        return self._model.token_eos()

    def token_nl(self) -> int:
        return self._model.token_nl()

    @property
    def n_tokens(self) -> int:
        return len(self._core.tokens()) if self._core else 0

    @property
    def input_ids(self) -> List[int]:
        return self._core.tokens() if self._core else []

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> List[int]:
        if isinstance(text, str):
            text = text.encode("utf-8")
        return self._model.tokenize(text, add_bos, special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Optional[Sequence[int]] = None,
                   special: bool = False) -> bytes:
        """The bytes of `tokens`. As llama-cpp-python: after a leading BOS, the space an
        SPM tokenizer puts before the first word is dropped (`[BOS, "▁Hello", "▁World"]`
        gives `b"Hello World"`)."""
        toks = list(tokens)
        out = self._model.detokenize(toks, special)
        if toks and toks[0] == self._model.token_bos() and out[:1] == b" ":
            out = out[1:]
        return out

    def set_cache(self, cache: Optional[BaseLlamaCache]) -> None:
        """Restore the longest saved prefix of every prompt from `cache` before generating,
        and save the state after (llama-cpp-python's semantics)."""
        self.cache = cache

    def set_exact_reuse(self, on: bool) -> None:
        """Reuse only cached prefixes that a cold run computes alike (whole micro-batches
        from position 0): greedy answers then do not depend on what ran before, at the
        cost of up to `n_ubatch - 1` recomputed prompt tokens per call."""
        self._core.set_exact_reuse(on)

    def _cache_restore(self, toks: List[int]) -> None:
        c = self.cache
        if c is None or self._core is None:
            return
        if isinstance(c, LlamaDiskCache):
            self._core.restore_from(c._native, toks)
            return
        try:
            item = c[toks]
        except KeyError:
            return
        if _common(list(item.input_ids), toks) > _common(self._core.tokens(), toks):
            self.load_state(item)

    def _cache_save(self) -> None:
        c = self.cache
        if c is None or self._core is None:
            return
        if isinstance(c, LlamaDiskCache):
            self._core.save_to(c._native)
        else:
            c[self._core.tokens()] = self.save_state()

    def set_seed(self, seed: int) -> None:
        self._seed = seed

    def reset(self) -> None:
        self._last_logits = None
        if self._core:
            self._core.reset()

    def save_state(self) -> LlamaState:
        data = self._core.save_state()
        ids = self._core.tokens()
        return LlamaState(ids, None, len(ids), data, len(data), self._seed)

    def load_state(self, state: LlamaState) -> None:
        self._core.load_state(state.llama_state)

    def close(self) -> None:
        """Frees the model and context now; using the object afterwards raises ClosedError."""
        self._core = self._model = _Closed()
        self._embedder = None
        self._ranker = None

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------- generation
    def _prompt_tokens(self, prompt: Union[str, List[int]], chat: bool = False) -> List[int]:
        if isinstance(prompt, str):
            # A str prompt: BOS as the model wants it, special tokens parsed (llama-cpp-python).
            toks = self._model.tokenize(prompt.encode("utf-8"), not chat and self._model.add_bos(), True)
        else:
            toks = list(prompt)
        if len(toks) >= self.n_ctx():
            raise ContextFullError(f"Requested tokens ({len(toks)}) exceed context window of {self.n_ctx()}")
        return toks

    def _opts(self, *, temperature, top_k, top_p, min_p, typical_p, repeat_penalty, frequency_penalty,
              presence_penalty, mirostat_mode, mirostat_tau, mirostat_eta, seed, logit_bias, grammar) -> Dict[str, Any]:
        g = grammar._grammar if isinstance(grammar, LlamaGrammar) else grammar
        s = seed if seed is not None else self._seed
        return dict(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            penalty_last_n=self.last_n_tokens_size, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
            mirostat_eta=mirostat_eta, seed=None if s in (None, -1, 0xFFFFFFFF) else int(s) & 0xFFFFFFFF,
            logit_bias=[(int(k), float(v)) for k, v in (logit_bias or {}).items()], grammar=g)

    @staticmethod
    def _bridge(logits_processor, stopping_criteria):
        """One callable for the native sampler chain: the user's logits processors and
        stopping criteria over numpy views of the ids and the scores."""
        if logits_processor is None and stopping_criteria is None:
            return None
        import numpy as np

        def listed(x):
            return list(x) if isinstance(x, (list, tuple)) else ([x] if x is not None else [])
        procs, crits = listed(logits_processor), listed(stopping_criteria)

        def bridge(ids, raw):
            input_ids = np.asarray(ids, dtype=np.intc)
            scores = np.frombuffer(raw, dtype=np.single).copy()
            changed = None
            for p in procs:
                scores = changed = p(input_ids, scores)
            stop = any(bool(c(input_ids, scores)) for c in crits)
            return (np.ascontiguousarray(changed, dtype=np.single).tobytes() if changed is not None else None, stop)
        return bridge

    def _stream(self, toks: List[int], *, max_tokens, stop, logprobs, logits_processor=None,
                stopping_criteria=None, collect=False, **sampling):
        if isinstance(stop, str):
            stop = [stop]
        opts = self._opts(**sampling)
        bridge = self._bridge(logits_processor, stopping_criteria)
        spec, max_draft = self._speculation()
        if opts["grammar"] is not None or bridge is not None:
            spec = None  # drafts would bypass the grammar / the Python callbacks: plain decoding
        self._cache_restore(toks)
        return self._core.generate(
            toks, opts, max_tokens=max_tokens if max_tokens and max_tokens > 0 else None, stop=list(stop or []),
            logprobs=logprobs, speculation=spec, max_draft=max_draft, processor=bridge, collect=collect)

    # ------------------------------------------------------ low-level (eval/sample)
    def eval(self, tokens: Sequence[int]) -> None:
        """Decodes `tokens` after `input_ids`; their last logits are then `scores[-1]`
        and what `sample()` draws from."""
        self._last_logits = self._core.eval([int(t) for t in tokens])

    @property
    def scores(self):
        """`(n_tokens, n_vocab)` float32 array; the row after the last `eval` holds its
        logits (llama-cpp-python keeps every row only with logits_all=True; llama_rs keeps
        the last), the others are zero. Needs numpy."""
        import numpy as np
        out = np.zeros((self.n_tokens, self.n_vocab()), dtype=np.single)
        if self._last_logits is not None and self.n_tokens:
            out[self.n_tokens - 1] = np.frombuffer(self._last_logits, dtype=np.single)
        return out

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
               temp: float = 0.80, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0, tfs_z: float = 1.0, mirostat_mode: int = 0,
               mirostat_eta: float = 0.1, mirostat_tau: float = 5.0, penalize_nl: bool = True,
               logits_processor: Any = None, grammar: Optional[LlamaGrammar] = None,
               idx: Optional[int] = None) -> int:
        """One token from the logits of the last `eval` (penalties over `input_ids`)."""
        if self._last_logits is None:
            raise InvalidArgumentError("sample() needs logits: call eval() first")
        raw = self._last_logits
        if logits_processor is not None:
            import numpy as np
            scores = LogitsProcessorList(logits_processor if isinstance(logits_processor, (list, tuple))
                                         else [logits_processor])(
                np.asarray(self.input_ids, dtype=np.intc), np.frombuffer(raw, dtype=np.single).copy())
            raw = np.ascontiguousarray(scores, dtype=np.single).tobytes()
        opts = self._opts(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                          repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty,
                          presence_penalty=presence_penalty, mirostat_mode=mirostat_mode,
                          mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, seed=None, logit_bias=None,
                          grammar=grammar)
        return _native.sample(self._model, raw, self.input_ids, opts)

    def _logprobs_obj(self, lps, offset0: int) -> Dict[str, Any]:
        tokens, offsets, token_lps, tops = [], [], [], []
        off = offset0
        for tok, lp, top in lps:
            text = self._model.detokenize([tok], False).decode("utf-8", errors="replace")
            tokens.append(text)
            offsets.append(off)
            off += len(text)
            token_lps.append(lp)
            tops.append({self._model.detokenize([t], False).decode("utf-8", errors="replace"): p for t, p in top})
        return {"tokens": tokens, "text_offset": offsets, "token_logprobs": token_lps, "top_logprobs": tops}

    def _infill_tokens(self, prompt: Union[str, List[int]], suffix: str) -> List[int]:
        """Fill-in-the-middle: prefix token, the prompt, suffix token, the suffix, middle
        token (llama-cpp-python's order), for models that have those tokens."""
        fim = self._model.fim_tokens()
        if fim is None:
            raise UnsupportedError("suffix= (fill-in-the-middle) needs a model with FIM tokens; this one has none")
        pre, suf, mid = fim
        head = self._model.tokenize(prompt.encode("utf-8"), False, False) if isinstance(prompt, str) else list(prompt)
        tail = self._model.tokenize(suffix.encode("utf-8"), False, False)
        bos = [self._model.token_bos()] if self._model.add_bos() and self._model.token_bos() >= 0 else []
        toks = bos + [pre] + head + [suf] + tail + [mid]
        if len(toks) >= self.n_ctx():
            raise ContextFullError(f"Requested tokens ({len(toks)}) exceed context window of {self.n_ctx()}")
        return toks

    def create_completion(
        self,
        prompt: Union[str, List[int]],
        suffix: Optional[str] = None,
        max_tokens: Optional[int] = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: Optional[int] = None,
        echo: bool = False,
        stop: Optional[Union[str, List[str]]] = [],
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: Optional[int] = None,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: Optional[str] = None,
        stopping_criteria: Any = None,
        logits_processor: Any = None,
        grammar: Optional[LlamaGrammar] = None,
        logit_bias: Optional[Dict[int, float]] = None,
    ):
        if suffix:
            toks = self._infill_tokens(prompt, suffix)
        else:
            toks = self._prompt_tokens(prompt)
        cid = f"cmpl-{uuid.uuid4()}"
        created = int(time.time())
        name = model or self.model_path
        s = self._stream(toks, max_tokens=max_tokens, stop=stop, temperature=temperature, top_k=top_k, top_p=top_p,
                         min_p=min_p, typical_p=typical_p, repeat_penalty=repeat_penalty,
                         frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                         mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
                         seed=seed, logit_bias=logit_bias, grammar=grammar, logprobs=logprobs,
                         logits_processor=logits_processor, stopping_criteria=stopping_criteria, collect=not stream)
        echo_text = ""
        if echo:
            echo_text = (prompt if isinstance(prompt, str)
                         else self._model.detokenize(toks, False).decode("utf-8", errors="replace"))
        if stream:
            return self._completion_chunks(s, cid, created, name, echo_text, logprobs is not None)
        text, lps, finish, n = [], [], None, 0
        for piece, ptoks, plps, f in s:
            text.append(piece)
            lps.extend(plps)
            n += len(ptoks)
            finish = f or finish
        self._cache_save()
        body = "".join(text)
        return {
            "id": cid, "object": "text_completion", "created": created, "model": name,
            "choices": [{
                "text": echo_text + body, "index": 0,
                "logprobs": self._logprobs_obj(lps, len(echo_text)) if logprobs is not None else None,
                "finish_reason": _finish(finish) or "stop",
            }],
            "usage": {"prompt_tokens": len(toks), "completion_tokens": s.usage()[1] or n,
                      "total_tokens": len(toks) + (s.usage()[1] or n)},
        }

    def _completion_chunks(self, s, cid, created, name, echo_text, want_lps) -> Iterator[Dict[str, Any]]:
        def chunk(text, lps, finish):
            return {"id": cid, "object": "text_completion", "created": created, "model": name,
                    "choices": [{"text": text, "index": 0, "logprobs": lps, "finish_reason": finish}]}
        if echo_text:
            yield chunk(echo_text, None, None)
        for piece, _toks, plps, f in s:
            if piece or plps:
                yield chunk(piece, self._logprobs_obj(plps, 0) if want_lps else None, None)
            if f is not None:
                self._cache_save()
                yield chunk("", None, _finish(f))

    def __call__(self, prompt: Union[str, List[int]], *args: Any, **kwargs: Any):
        return self.create_completion(prompt, *args, **kwargs)

    def generate(self, tokens: Sequence[int], top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 typical_p: float = 1.0, temp: float = 0.80, repeat_penalty: float = 1.0, reset: bool = True,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0, tfs_z: float = 1.0,
                 mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                 penalize_nl: bool = True, logits_processor: Any = None, stopping_criteria: Any = None,
                 grammar: Optional[LlamaGrammar] = None) -> Iterator[int]:
        """Token ids after `tokens`, until the end of generation (prefix reuse is automatic)."""
        s = self._stream(list(tokens), max_tokens=None, stop=[], temperature=temp, top_k=top_k, top_p=top_p,
                         min_p=min_p, typical_p=typical_p, repeat_penalty=repeat_penalty,
                         frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                         mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta,
                         seed=None, logit_bias=None, grammar=grammar, logprobs=None,
                         logits_processor=logits_processor, stopping_criteria=stopping_criteria)
        for _text, toks, _lps, _f in s:
            yield from toks

    # -------------------------------------------------------------------- chat
    def create_chat_completion(
        self,
        messages: List[Dict[str, Any]],
        functions: Optional[List[Dict[str, Any]]] = None,
        function_call: Any = None,
        tools: Optional[List[Dict[str, Any]]] = None,
        tool_choice: Any = None,
        temperature: float = 0.2,
        top_p: float = 0.95,
        top_k: int = 40,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        stream: bool = False,
        stop: Optional[Union[str, List[str]]] = [],
        seed: Optional[int] = None,
        response_format: Optional[Dict[str, Any]] = None,
        max_tokens: Optional[int] = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        tfs_z: float = 1.0,
        mirostat_mode: int = 0,
        mirostat_tau: float = 5.0,
        mirostat_eta: float = 0.1,
        model: Optional[str] = None,
        logits_processor: Any = None,
        grammar: Optional[LlamaGrammar] = None,
        logit_bias: Optional[Dict[int, float]] = None,
        logprobs: Optional[bool] = None,
        top_logprobs: Optional[int] = None,
        chat_template_kwargs: Optional[Dict[str, Any]] = None,
        reasoning_budget: Optional[int] = None,
    ):
        """OpenAI's chat completion. The request is prepared and the answer shaped by the
        same Rust code as the server's `/v1/chat/completions` (templates, tool calls with
        `tool_choice` "required" or a named function, `reasoning_content`, JSON schemas,
        streamed tool-call arguments)."""
        job = self._chat_job(messages, functions, function_call, tools, tool_choice, response_format, grammar,
                             dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                  typical_p=typical_p, presence_penalty=presence_penalty,
                                  frequency_penalty=frequency_penalty, repeat_penalty=repeat_penalty,
                                  mirostat=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta),
                             seed, stop, max_tokens, logit_bias, logprobs, top_logprobs, chat_template_kwargs,
                             reasoning_budget)
        bridge = self._bridge(logits_processor, None)
        spec, max_draft = self._speculation()
        self._cache_restore(job.prompt_tokens)
        s = self._core.generate_job(job, speculation=None if bridge is not None else spec, max_draft=max_draft,
                                    processor=bridge, collect=not stream)
        answer = _native.ChatAnswer(job, f"chatcmpl-{uuid.uuid4()}", int(time.time()), model or self.model_path)
        if stream:
            return self._chat_chunks(s, answer, self._cache_save)
        text, lps, finish = [], [], None
        for piece, _t, plps, f in s:
            text.append(piece)
            lps.extend(plps)
            finish = f or finish
        self._cache_save()
        n_prompt, n_gen = s.usage()
        return answer.completion([("".join(text), lps, finish)], len(job.prompt_tokens), n_gen)

    def _chat_job(self, messages, functions, function_call, tools, tool_choice, response_format, grammar,
                  sampling, seed, stop, max_tokens, logit_bias, logprobs, top_logprobs, chat_template_kwargs=None,
                  reasoning_budget=None, stream=False, media_source=None):
        """The request as the server's `/v1/chat/completions` takes it, made ready by the
        protocol layer (a `ChatJob`)."""
        if functions and not tools:
            tools = [{"type": "function", "function": f} for f in functions]
            if isinstance(function_call, dict) and tool_choice is None:
                tool_choice = {"type": "function", "function": {"name": function_call.get("name")}}
            elif function_call in ("none", "auto") and tool_choice is None:
                tool_choice = function_call
        s = seed if seed is not None else self._seed
        req: Dict[str, Any] = dict(sampling, messages=list(messages), repeat_last_n=self.last_n_tokens_size,
                                   stop=[stop] if isinstance(stop, str) else list(stop or []),
                                   # llama-cpp-python: no limit (or <= 0, or past the context) runs
                                   # to the end of the context
                                   max_tokens=max_tokens if max_tokens and 0 < max_tokens <= self.n_ctx() else -1,
                                   logprobs=bool(logprobs), stream=False)
        if s not in (None, -1, 0xFFFFFFFF):
            req["seed"] = int(s) & 0xFFFFFFFF
        for k, v in (("tools", tools), ("tool_choice", tool_choice), ("response_format", response_format),
                     ("chat_template_kwargs", chat_template_kwargs), ("reasoning_budget", reasoning_budget)):
            if v is not None:
                req[k] = v
        if logprobs and top_logprobs is not None:
            req["top_logprobs"] = top_logprobs
        if logit_bias:
            req["logit_bias"] = {str(int(k)): float(v) for k, v in logit_bias.items()}
        if grammar is not None:
            req["grammar"] = grammar._grammar if isinstance(grammar, LlamaGrammar) else str(grammar)
        # A projector (the core's, or an engine's: `media_source`) reads the images.
        source = media_source or self._core
        if source is not None and source.media_support() != (False, False):
            from .llama_chat_format import MTMDChatHandler
            req["messages"] = MTMDChatHandler.inline_media(req["messages"])
            return source.chat_job(self._model, json.dumps(req), self.n_ctx(), self._template_name())
        return _native.ChatJob(self._model, json.dumps(req), self.n_ctx(), self._template_name())

    def _template_name(self) -> Optional[str]:
        fmt = self.chat_format
        if fmt is None:
            return None
        names = {"llama-2": "llama2", "llama-3": "llama3", "mistral-instruct": "mistral-v1"}
        return names.get(fmt, fmt)

    @staticmethod
    def _chat_chunks(s, answer, finished=lambda: None) -> Iterator[Dict[str, Any]]:
        yield answer.start(0)
        for piece, _t, lps, f in s:
            yield from answer.piece(0, piece, lps)
            if f is not None:
                finished()
                yield from answer.done(0, f)

    def create_chat_completion_openai_v1(self, *args: Any, **kwargs: Any):
        return self.create_chat_completion(*args, **kwargs)

    # -------------------------------------------------------------- embeddings
    def _embed_vectors(self, inputs: List[str], normalize: bool) -> List[List[float]]:
        if not self._embedding:
            raise RuntimeError("Llama model must be created with embedding=True to call this method")
        if self._embedder is None or self._embedder[1] != normalize:
            self._embedder = (_native.Embedder(self._model, normalize=normalize, n_threads=self.n_threads_batch),
                              normalize)
        toks = [self._model.tokenize(t.encode("utf-8"), True, False) for t in inputs]
        return self._embedder[0].embed(toks), sum(len(t) for t in toks)

    def embed(self, input: Union[str, List[str]], normalize: bool = False, truncate: bool = True,
              return_count: bool = False):
        single = isinstance(input, str)
        vecs, n = self._embed_vectors([input] if single else list(input), normalize)
        out = vecs[0] if single else vecs
        return (out, n) if return_count else out

    def create_embedding(self, input: Union[str, List[str]], model: Optional[str] = None) -> Dict[str, Any]:
        single = isinstance(input, str)
        vecs, n = self._embed_vectors([input] if single else list(input), True)
        return {"object": "list", "model": model or self.model_path,
                "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vecs)],
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    def rank(self, query: str, documents: List[str]) -> List[float]:
        """Relevance scores of `documents` for `query`, in their order (higher is more
        relevant), with a reranker (a model with a ranking head: pooling type rank), as
        the server's `/v1/rerank` scores them. Other models raise `UnsupportedError`."""
        if self._ranker is None:
            self._ranker = _native.Embedder(self._model, normalize=False, n_threads=self.n_threads_batch)
        return self._ranker.rerank(query, list(documents))

    # ------------------------------------------------------------------ engine
    def engine(self, n_parallel: int = 8, n_ctx: Optional[int] = None, **kwargs: Any) -> "AsyncLlama":
        """An `AsyncLlama` over this model (no second load): `n_parallel` requests at once
        in one KV pool of `n_ctx` tokens (default: n_parallel × this context)."""
        return AsyncLlama(llama=self, n_parallel=n_parallel, n_ctx=n_ctx or n_parallel * self.n_ctx(), **kwargs)


class AsyncLlama:
    """llama-cpp-python's completion and chat calls, as coroutines, over the engine:
    concurrent calls share the model through continuous batching (llama-rs's engine, the
    same generation core as `Llama`), `n` > 1 samples per prompt, and a list of prompts
    runs as one batch. With `stream=True` the result is an async iterator of chunks.

        llm = AsyncLlama(model_path="model.gguf", n_parallel=8)
        out = await llm.create_completion(["Q: 2+2?", "Q: 3+3?"], n=2, max_tokens=16)
        async for chunk in await llm.create_chat_completion(messages, stream=True):
            ...
    """

    def __init__(self, model_path: Optional[str] = None, *, llama: Optional[Llama] = None, n_ctx: int = 8192,
                 n_parallel: int = 8, n_batch: int = 512, n_threads: Optional[int] = None, flash_attn: bool = False,
                 type_k: Optional[int] = None, type_v: Optional[int] = None,
                 cache: Optional["LlamaDiskCache"] = None, **kwargs: Any):
        if cache is not None and not isinstance(cache, LlamaDiskCache):
            raise InvalidArgumentError("AsyncLlama(cache=...) takes a LlamaDiskCache (the engine keeps its own "
                                       "prompt cache in host memory)")
        if llama is None:
            if model_path is None:
                raise InvalidArgumentError("AsyncLlama needs model_path or llama")
            llama = Llama(model_path, n_ctx=n_ctx, _context=False, **kwargs)
        self._llm = llama
        self.model_path = llama.model_path
        self._n_ctx = n_ctx
        # The Llama's multimodal handler gives the engine its projector.
        handler = getattr(llama, "chat_handler", None)
        self._engine = _native.Engine(llama._model, n_ctx=n_ctx, slots=n_parallel, step_tokens=n_batch,
                                      n_threads=n_threads, flash_attn=flash_attn,
                                      type_k=type_k, type_v=type_v,
                                      disk_cache=cache._native if cache is not None else None,
                                      mmproj=getattr(handler, "clip_model_path", None))

    def n_ctx(self) -> int:
        return self._n_ctx

    def close(self) -> None:
        self._engine.shutdown()

    async def __aenter__(self) -> "AsyncLlama":
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    @staticmethod
    async def _merged(streams) -> Any:
        """(choice index, event) from all streams as they arrive; cancels what is left
        when the consumer stops early (or its task is cancelled)."""
        import asyncio
        loop = asyncio.get_running_loop()
        q: "asyncio.Queue" = asyncio.Queue()
        for i, st in enumerate(streams):
            st.pump(lambda ev, i=i: loop.call_soon_threadsafe(q.put_nowait, (i, ev)))
        live = len(streams)
        try:
            while live:
                i, ev = await q.get()
                if ev is None:
                    live -= 1
                elif ev[0] == "error":
                    raise ev[1]
                else:
                    yield i, ev
        finally:
            for st in streams:
                st.cancel()

    async def _collect(self, streams):
        """Every stream to its end: per choice the pieces' texts, the logprobs and the
        "done" event."""
        text: List[List[str]] = [[] for _ in streams]
        lps: List[list] = [[] for _ in streams]
        done: List[Any] = [None] * len(streams)
        async for i, ev in self._merged(streams):
            if ev[0] == "piece":
                text[i].append(ev[1])
                lps[i].extend(ev[3])
            else:
                done[i] = ev
        return text, lps, done

    def _submit(self, prompts: List[List[int]], n: int, max_tokens, stop, logprobs, sampling):
        if isinstance(stop, str):
            stop = [stop]
        opts = self._llm._opts(**sampling)
        for toks in prompts:
            if len(toks) >= self._n_ctx:
                raise ContextFullError(f"Requested tokens ({len(toks)}) exceed context window of {self._n_ctx}")
        return [s for toks in prompts for s in self._engine.submit(
            toks, opts, max_tokens=max_tokens if max_tokens and max_tokens > 0 else None, stop=list(stop or []),
            logprobs=logprobs, n=n)]

    async def create_completion(self, prompt: Union[str, List[str], List[int]], suffix: Optional[str] = None,
                                max_tokens: Optional[int] = 16, temperature: float = 0.8, top_p: float = 0.95,
                                min_p: float = 0.05, typical_p: float = 1.0, logprobs: Optional[int] = None,
                                echo: bool = False, stop: Optional[Union[str, List[str]]] = [],
                                frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
                                repeat_penalty: float = 1.0, top_k: int = 40, stream: bool = False,
                                seed: Optional[int] = None, mirostat_mode: int = 0, mirostat_tau: float = 5.0,
                                mirostat_eta: float = 0.1, model: Optional[str] = None,
                                grammar: Optional[LlamaGrammar] = None, logit_bias: Optional[Dict[int, float]] = None,
                                n: int = 1, **ignored: Any):
        llm = self._llm
        texts = prompt if isinstance(prompt, list) and prompt and isinstance(prompt[0], str) else [prompt]
        toks = [llm._infill_tokens(p, suffix) if suffix else llm._prompt_tokens(p) for p in texts]
        if n < 1:
            raise InvalidArgumentError(f"n must be at least 1, got {n}")
        streams = self._submit(toks, n, max_tokens, stop, logprobs, dict(
            temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
            repeat_penalty=repeat_penalty, frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau, mirostat_eta=mirostat_eta, seed=seed,
            logit_bias=logit_bias, grammar=grammar))
        cid, created, name = f"cmpl-{uuid.uuid4()}", int(time.time()), model or self.model_path
        echo_texts = [(p if isinstance(p, str) else llm.detokenize(t).decode("utf-8", errors="replace"))
                      if echo else "" for p, t in zip(texts, toks)]

        def chunk(i, text, lps, finish):
            return {"id": cid, "object": "text_completion", "created": created, "model": name,
                    "choices": [{"text": text, "index": i, "logprobs": lps, "finish_reason": finish}]}

        if stream:
            async def chunks():
                for i in range(len(streams)):
                    if echo_texts[i // n]:
                        yield chunk(i, echo_texts[i // n], None, None)
                async for i, ev in self._merged(streams):
                    if ev[0] == "piece" and (ev[1] or ev[3]):
                        yield chunk(i, ev[1], llm._logprobs_obj(ev[3], 0) if logprobs is not None else None, None)
                    elif ev[0] == "done":
                        yield chunk(i, "", None, _finish(ev[1]))
            return chunks()
        text, lps, done = await self._collect(streams)
        choices = []
        for i in range(len(streams)):
            e = echo_texts[i // n]
            choices.append({"text": e + "".join(text[i]), "index": i,
                            "logprobs": llm._logprobs_obj(lps[i], len(e)) if logprobs is not None else None,
                            "finish_reason": _finish(done[i][1]) or "stop"})
        p_tok = sum(len(t) for t in toks)
        c_tok = sum(d[3] for d in done)
        return {"id": cid, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}}

    async def create_chat_completion(self, messages: List[Dict[str, Any]], functions=None, function_call=None,
                                     tools=None, tool_choice=None, temperature: float = 0.2, top_p: float = 0.95,
                                     top_k: int = 40, min_p: float = 0.05, typical_p: float = 1.0,
                                     stream: bool = False, stop: Optional[Union[str, List[str]]] = [],
                                     seed: Optional[int] = None, response_format=None,
                                     max_tokens: Optional[int] = None, presence_penalty: float = 0.0,
                                     frequency_penalty: float = 0.0, repeat_penalty: float = 1.0,
                                     mirostat_mode: int = 0, mirostat_tau: float = 5.0, mirostat_eta: float = 0.1,
                                     model: Optional[str] = None, grammar: Optional[LlamaGrammar] = None,
                                     logit_bias: Optional[Dict[int, float]] = None, logprobs: Optional[bool] = None,
                                     top_logprobs: Optional[int] = None, n: int = 1,
                                     chat_template_kwargs: Optional[Dict[str, Any]] = None,
                                     reasoning_budget: Optional[int] = None, **ignored: Any):
        """As `Llama.create_chat_completion` (the same Rust request and response code), with
        `n` choices on the engine."""
        llm = self._llm
        if n < 1:
            raise InvalidArgumentError(f"n must be at least 1, got {n}")
        job = llm._chat_job(messages, functions, function_call, tools, tool_choice, response_format, grammar,
                            dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, typical_p=typical_p,
                                 presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                 repeat_penalty=repeat_penalty, mirostat=mirostat_mode, mirostat_tau=mirostat_tau,
                                 mirostat_eta=mirostat_eta),
                            seed, stop, max_tokens, logit_bias, logprobs, top_logprobs, chat_template_kwargs,
                            reasoning_budget, media_source=self._engine)
        if len(job.prompt_tokens) >= self._n_ctx:
            raise ContextFullError(
                f"Requested tokens ({len(job.prompt_tokens)}) exceed context window of {self._n_ctx}")
        streams = self._engine.submit_job(job, n)
        answer = _native.ChatAnswer(job, f"chatcmpl-{uuid.uuid4()}", int(time.time()), model or self.model_path,
                                    len(streams))
        if stream:
            async def chunks():
                for i in range(len(streams)):
                    yield answer.start(i)
                async for i, ev in self._merged(streams):
                    if ev[0] == "piece":
                        for c in answer.piece(i, ev[1], ev[3]):
                            yield c
                    else:
                        for c in answer.done(i, ev[1]):
                            yield c
            return chunks()
        text, lps, done = await self._collect(streams)
        c_tok = sum(d[3] for d in done)
        return answer.completion([("".join(text[i]), lps[i], done[i][1]) for i in range(len(streams))],
                                 len(job.prompt_tokens), c_tok)
