"""llama_rs against llama-cpp-python's API, on the real chat model (SmolLM2-135M-Instruct).

Run by scripts/test-python.sh (builds and installs the wheel, sets LLAMA_RS_CHAT_MODEL).
Each test is a plain function; the runner at the bottom runs them all and reports.
"""
import _thread
import json
import os
import signal
import sys
import threading
import time
import traceback

import llama_rs
from llama_rs import Llama, LlamaGrammar
from llama_rs.llama_speculative import LlamaMTPDecoding, LlamaPromptLookupDecoding

MODEL = os.environ["LLAMA_RS_CHAT_MODEL"]
# A runner that started us with SIGINT ignored (CI's background jobs) would make Ctrl-C
# impossible to test: Python only turns SIGINT into KeyboardInterrupt when it handles it.
signal.signal(signal.SIGINT, signal.default_int_handler)
llm = Llama(model_path=MODEL, n_ctx=2048, n_batch=64, verbose=False)


def test_completion_shape_and_determinism():
    a = llm("The capital of France is", max_tokens=12, temperature=0)
    b = llm("The capital of France is", max_tokens=12, temperature=0)
    assert a["object"] == "text_completion" and a["id"].startswith("cmpl-")
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["choices"][0]["finish_reason"] == "length"
    u = a["usage"]
    assert u["completion_tokens"] == 12 and u["total_tokens"] == u["prompt_tokens"] + 12


def test_stream_equals_non_stream_and_stop_strings():
    whole = llm("1, 2, 3, 4, 5,", max_tokens=24, temperature=0, stop=[" 9"])["choices"][0]
    chunks = list(llm("1, 2, 3, 4, 5,", max_tokens=24, temperature=0, stop=[" 9"], stream=True))
    text = "".join(c["choices"][0]["text"] for c in chunks)
    assert text == whole["text"], (text, whole)
    assert " 9" not in text
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]


def test_echo_and_logprobs():
    r = llm("Hello", max_tokens=3, temperature=0, echo=True, logprobs=2)["choices"][0]
    assert r["text"].startswith("Hello")
    lp = r["logprobs"]
    assert len(lp["tokens"]) == 3 and all(x <= 0 for x in lp["token_logprobs"])
    assert all(len(t) <= 2 for t in lp["top_logprobs"])
    assert lp["text_offset"][0] == len("Hello")


def test_chat_completion_stream_and_tools():
    msgs = [{"role": "user", "content": "Name a fruit."}]
    r = llm.create_chat_completion(messages=msgs, max_tokens=16, temperature=0)
    assert r["object"] == "chat.completion"
    content = r["choices"][0]["message"]["content"]
    chunks = list(llm.create_chat_completion(messages=msgs, max_tokens=16, temperature=0, stream=True))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == content
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = llm.create_chat_completion(messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools,
                                   tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                   max_tokens=160, temperature=0)
    call = r["choices"][0]["message"]["tool_calls"][0]
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


def test_json_schema_response_format_and_grammar_errors():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = llm.create_chat_completion(messages=[{"role": "user", "content": "A person as JSON."}], max_tokens=64,
                                   temperature=0, response_format={"type": "json_schema",
                                                                   "json_schema": {"schema": schema}})
    v = json.loads(r["choices"][0]["message"]["content"])
    assert isinstance(v["name"], str) and isinstance(v["age"], int)
    try:
        LlamaGrammar.from_json_schema(json.dumps({"type": "string", "pattern": "^a$"}))
        raise AssertionError("pattern accepted")
    except ValueError as e:
        assert "pattern" in str(e)
    try:
        llm("x", max_tokens=2, grammar=LlamaGrammar.from_string("root ::= ("))
        raise AssertionError("bad grammar accepted")
    except ValueError:
        pass


def test_tokenize_detokenize_bytes():
    toks = llm.tokenize(b"Hello world", add_bos=False)
    assert llm.detokenize(toks) == b"Hello world"
    assert llm.tokenize("héllo".encode()) and llm.detokenize(llm.tokenize("héllo".encode(), add_bos=False)) == "héllo".encode()
    assert llm.n_vocab() == 49152 and llm.n_ctx() == 2048 and llm.n_embd() == 576
    assert llm.metadata["general.architecture"] == "llama"


def test_detokenize_drops_the_space_after_bos_as_llama_cpp_python():
    # llama-cpp-python's own test (its SPM test vocabulary, vocab only).
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spm = Llama(model_path=os.path.join(root, "vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf"),
                vocab_only=True, verbose=False)
    assert spm.tokenize(b"Hello World") == [1, 15043, 2787]
    assert spm.detokenize([1, 15043, 2787]) == b"Hello World"
    assert spm.detokenize([15043, 2787]) == b" Hello World"
    assert spm.detokenize(spm.tokenize(b"Hello World")) == b"Hello World"


def test_save_and_load_state():
    llm.reset()
    llm("Once upon a time", max_tokens=4, temperature=0)
    st = llm.save_state()
    assert st.n_tokens == len(st.input_ids) > 0 and st.llama_state_size == len(st.llama_state)
    after = llm("Once upon a time", max_tokens=8, temperature=0)["choices"][0]["text"]
    llm.reset()
    llm.load_state(st)
    assert llm.n_tokens == st.n_tokens
    assert llm("Once upon a time", max_tokens=8, temperature=0)["choices"][0]["text"] == after


def test_errors_are_python_exceptions():
    try:
        Llama(model_path="/nonexistent.gguf")
        raise AssertionError
    except ValueError as e:
        assert "Model path does not exist" in str(e)
    try:
        llm("word " * 3000, max_tokens=2)
        raise AssertionError
    except ValueError as e:
        assert "exceed context window" in str(e)
    try:
        llm.create_embedding("x")
        raise AssertionError
    except RuntimeError:
        pass


def test_eval_sample_and_scores():
    import numpy as np
    llm.reset()  # the prompt decoded whole both times: the same logits
    want = llm.tokenize(llm("The capital of France is", max_tokens=1, temperature=0)["choices"][0]["text"]
                        .encode(), add_bos=False)
    llm.reset()
    prompt = llm.tokenize(b"The capital of France is")
    llm.eval(prompt)
    assert llm.n_tokens == len(prompt) and list(llm.input_ids) == prompt
    scores = llm.scores
    assert scores.shape == (len(prompt), llm.n_vocab()) and scores.dtype == np.single
    t = llm.sample(temp=0)
    assert t == int(np.argmax(scores[-1])) and [t] == want[:1], (t, want)
    # A processor that bans the greedy choice changes it.
    def ban(ids, s):
        s[t] = -np.inf
        return s
    assert llm.sample(temp=0, logits_processor=[ban]) != t
    llm.eval([t])
    assert llm.n_tokens == len(prompt) + 1
    try:
        llm.eval([llm.n_vocab() + 5])
        raise AssertionError
    except llama_rs.InvalidArgumentError:
        pass


def test_logits_processor_and_stopping_criteria_in_generation():
    import numpy as np
    base = llm("Once upon a time", max_tokens=6, temperature=0)["choices"][0]["text"]
    first = llm.tokenize(base.encode(), add_bos=False)[0]
    seen = []

    def ban_first(ids, s):
        seen.append(len(ids))
        s[first] = -np.inf
        return s
    out = llm("Once upon a time", max_tokens=6, temperature=0, logits_processor=llama_rs.LogitsProcessorList([ban_first]))
    assert out["choices"][0]["text"] != base and seen[1] == seen[0] + 1, (out, seen[:3])
    # Force one token: every step produces it.
    x = llm.tokenize(b" cat", add_bos=False)[0]

    def force(ids, s):
        s[:] = -np.inf
        s[x] = 0
        return s
    out = llm("Once upon a time", max_tokens=4, temperature=0.9, logits_processor=force)
    assert out["choices"][0]["text"] == llm.detokenize([x] * 4).decode()
    # Stop once three tokens are generated.
    n_prompt = len(llm.tokenize(b"Once upon a time"))
    out = llm("Once upon a time", max_tokens=30, temperature=0,
              stopping_criteria=llama_rs.StoppingCriteriaList([lambda ids, s: len(ids) >= n_prompt + 3]))
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] <= 4, out
    # The same through chat, streaming, and generate().
    chunks = list(llm.create_chat_completion([{"role": "user", "content": "Say hi"}], max_tokens=3, stream=True,
                                             logits_processor=force))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == llm.detokenize([x] * 3).decode()
    g = llm.generate(llm.tokenize(b"Hello"), temp=0, logits_processor=force)
    assert [next(g), next(g)] == [x, x]
    g.close()
    # An exception in a processor reaches the caller; the object stays usable.
    try:
        llm("Hi", max_tokens=3, logits_processor=lambda ids, s: 1 / 0)
        raise AssertionError
    except ZeroDivisionError:
        pass
    assert llm("Once upon a time", max_tokens=6, temperature=0)["choices"][0]["text"] == base


def test_suffix_fill_in_the_middle():
    fim = llm._model.fim_tokens()
    try:
        out = llm("def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n", max_tokens=8, temperature=0)
        assert fim is not None and out["usage"]["completion_tokens"] > 0, out
        assert out["usage"]["prompt_tokens"] == len(llm.tokenize(b"def add(a, b):\n    return ", add_bos=False)) \
            + len(llm.tokenize(b"\n\nprint(add(1, 2))\n", add_bos=False)) + 3 + (1 if llm._model.add_bos() else 0)
    except llama_rs.UnsupportedError:
        assert fim is None


def test_exceptions_by_kind_are_builtin_subclasses():
    assert issubclass(llama_rs.ContextFullError, ValueError) and issubclass(llama_rs.ContextFullError, llama_rs.LlamaError)
    assert issubclass(llama_rs.BackendError, RuntimeError) and issubclass(llama_rs.ResourceLimitError, MemoryError)
    try:
        llm("word " * 3000, max_tokens=2)
        raise AssertionError
    except llama_rs.ContextFullError:
        pass
    try:
        llm("Hi", max_tokens=2, grammar=LlamaGrammar.from_string('root ::= "x"{5,2}'))
        raise AssertionError
    except llama_rs.InvalidArgumentError as e:
        assert isinstance(e, ValueError)
    except ValueError:
        pass  # from_string itself may refuse it first
    try:
        llm.load_state(llama_rs.LlamaState([], None, 0, b"LRSS-not-a-state", 16, 0))
        raise AssertionError
    except llama_rs.ModelLoadError as e:
        assert isinstance(e, ValueError)
    with Llama(model_path=MODEL, n_ctx=256, verbose=False) as tmp:
        assert tmp("Hi", max_tokens=1)["usage"]["completion_tokens"] == 1
    for use in (lambda: tmp("Hi", max_tokens=1), lambda: tmp.tokenize(b"x"), tmp.reset):
        try:
            use()
            raise AssertionError
        except llama_rs.ClosedError as e:
            assert isinstance(e, RuntimeError)


def test_async_llama_batches_prompts_n_samples_and_streams():
    import asyncio
    eng = llm.engine(n_parallel=4, n_ctx=4096)
    chat = [{"role": "user", "content": "Name a color."}]

    async def main():
        # Outside the engine's deterministic profile, which sequences share a batch can
        # change the last bits of the logits (docs/ENGINE.md): these checks are about
        # shapes, counts and batching, not equal greedy texts.
        out = await eng.create_completion(["The capital of France is", "Once upon a time"], max_tokens=8,
                                          temperature=0, n=2)
        ch = out["choices"]
        assert [c["index"] for c in ch] == [0, 1, 2, 3] and all(c["text"] for c in ch), ch
        assert ch[0]["text"] != ch[2]["text"] and all(c["finish_reason"] == "length" for c in ch), ch
        assert out["usage"]["completion_tokens"] == 32 and out["usage"]["prompt_tokens"] > 0
        # Samples at temperature 1 differ from each other.
        a = await eng.create_completion("Once upon a time", max_tokens=12, temperature=1.0, top_k=0, top_p=1.0,
                                        min_p=0.0, seed=7, n=4)
        texts = [c["text"] for c in a["choices"]]
        assert len(texts) == 4 and len(set(texts)) > 1, texts
        # Concurrent coroutines, chat included.
        x, y = await asyncio.gather(eng.create_chat_completion(chat, max_tokens=6, temperature=0),
                                    eng.create_completion("Hello", max_tokens=3, temperature=0))
        assert x["object"] == "chat.completion" and x["choices"][0]["message"]["content"]
        assert 0 < x["usage"]["completion_tokens"] <= 6 and y["usage"]["completion_tokens"] == 3
        # Streaming chat with n=2: a role chunk, content deltas and a finish per index.
        got = {0: "", 1: ""}
        finishes = {}
        roles = 0
        async for c in await eng.create_chat_completion(chat, max_tokens=6, temperature=0, stream=True, n=2):
            ch = c["choices"][0]
            roles += ch["delta"].get("role") == "assistant"
            got[ch["index"]] += ch["delta"].get("content", "") or ""
            if ch["finish_reason"]:
                finishes[ch["index"]] = ch["finish_reason"]
        assert roles == 2 and got[0] and got[1] and len(finishes) == 2, (got, finishes)
        # Leaving a stream early cancels its request; the engine keeps serving.
        it = await eng.create_completion("Once upon a time", max_tokens=500, temperature=0, stream=True)
        async for _ in it:
            break
        await it.aclose()
        z = await eng.create_completion("Hello", max_tokens=3, temperature=0)
        assert z["usage"]["completion_tokens"] == 3
        try:
            await eng.create_completion("word " * 5000, max_tokens=2)
            raise AssertionError
        except llama_rs.ContextFullError:
            pass

    asyncio.run(main())
    eng.close()


def test_logging_only_when_verbose():
    import logging
    records = []

    class Keep(logging.Handler):
        def emit(self, r):
            records.append(r)
    h = Keep(level=logging.DEBUG)
    lg = logging.getLogger("llama_rs")
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    try:
        Llama(model_path=MODEL, n_ctx=256, verbose=False)
        assert records == [], [r.getMessage() for r in records[:3]]
        Llama(model_path=MODEL, n_ctx=256, verbose=True)
        names = {r.name for r in records}
        assert "llama_rs.llama_cpp" in names and any("llama" in r.getMessage() for r in records), names
        # llama_log_set: a callback instead of logging.
        got = []
        llama_rs.llama_log_set(lambda level, text, user: got.append((level, text)))
        Llama(model_path=MODEL, n_ctx=256, verbose=True)
        assert got and isinstance(got[0][1], bytes)
    finally:
        llama_rs.llama_log_set(None)
        llama_rs._llama_rs.set_log_level(0)
        lg.removeHandler(h)


def test_from_pretrained_resolves_globs_through_the_hub_api():
    import types
    # No network here: a stand-in `huggingface_hub` that serves the chat model's directory
    # exercises the glob matching and download calls; without the package it is an
    # ImportError naming it, as in llama-cpp-python.
    saved = sys.modules.pop("huggingface_hub", None)
    sys.modules["huggingface_hub"] = None  # makes the import fail
    try:
        Llama.from_pretrained("org/repo", "*.gguf")
        raise AssertionError
    except ImportError as e:
        assert "huggingface-hub" in str(e)
    fake = types.ModuleType("huggingface_hub")
    calls = []

    class HfFileSystem:
        def ls(self, repo_id, recursive=False):
            return [{"name": f"{repo_id}/README.md"}, {"name": f"{repo_id}/models/smol-q8_0.gguf"},
                    {"name": f"{repo_id}/models/smol-f16.gguf"}]

    def hf_hub_download(repo_id, filename, subfolder=None, local_dir=None, cache_dir=None):
        calls.append((repo_id, subfolder, filename))
        return MODEL
    fake.HfFileSystem, fake.hf_hub_download = HfFileSystem, hf_hub_download
    sys.modules["huggingface_hub"] = fake
    try:
        m = Llama.from_pretrained("org/repo", "*q8_0.gguf", n_ctx=256, verbose=False)
        assert calls == [("org/repo", "models", "smol-q8_0.gguf")] and m.n_ctx() == 256
        try:
            Llama.from_pretrained("org/repo", "*.gguf")
            raise AssertionError
        except llama_rs.InvalidArgumentError as e:
            assert "More than one file" in str(e)
    finally:
        del sys.modules["huggingface_hub"]
        if saved is not None:
            sys.modules["huggingface_hub"] = saved


def test_bad_inputs_raise_documented_exceptions():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.gguf")
        with open(bad, "wb") as f:
            f.write(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)  # a header that lies
        trunc = os.path.join(d, "trunc.gguf")
        with open(MODEL, "rb") as f, open(trunc, "wb") as g:
            g.write(f.read(1 << 20))  # the first MiB of a real model
        for path in (bad, trunc):
            try:
                Llama(model_path=path, verbose=False)
                raise AssertionError(path)
            except llama_rs.ModelLoadError as e:
                assert isinstance(e, ValueError)
    for toks in ([llm.n_vocab()], [-1]):
        try:
            llm.detokenize(toks)
            raise AssertionError
        except llama_rs.InvalidArgumentError:
            pass
    try:
        Llama(model_path=MODEL, type_k=999, verbose=False)
        raise AssertionError
    except ValueError as e:
        assert "type_k" in str(e)
    # n_ctx beyond memory raises BackendError, but only after llama.cpp has tried for about
    # a minute (its allocation path); left out of this suite for time (closing note).
    try:  # a malformed grammar: refused when first used, before anything is generated
        llm("Hi", max_tokens=2, grammar=LlamaGrammar.from_string("root ::= ("))
        raise AssertionError
    except llama_rs.InvalidArgumentError:
        pass
    # A state from another model.
    other = Llama(model_path=os.environ.get("LLAMA_RS_DEFAULT_MODEL", MODEL), n_ctx=256, verbose=False)
    if other.n_vocab() != llm.n_vocab():
        other("Hi", max_tokens=1)
        try:
            llm.load_state(other.save_state())
            raise AssertionError
        except llama_rs.ModelLoadError as e:
            assert "another model" in str(e)


def test_hostile_inputs_of_the_second_pass_raise():
    # Speculation settings are checked, not clamped (issue 30).
    for draft in (LlamaPromptLookupDecoding(max_ngram_size=0), LlamaPromptLookupDecoding(max_ngram_size=1000),
                  LlamaPromptLookupDecoding(num_pred_tokens=0), LlamaPromptLookupDecoding(num_pred_tokens=1000)):
        s = Llama(model_path=MODEL, n_ctx=256, draft_model=draft, verbose=False)
        try:
            s("Hi", max_tokens=2)
            raise AssertionError(vars(draft))
        except llama_rs.InvalidArgumentError as e:
            assert "speculation" in str(e) or "n-gram" in str(e), e
    # A chat template that nests operators past the bound, or builds a huge value by
    # repetition: an error naming the template, the process alive.
    for src in ("{{ " + "not " * 50000 + "true }}",
                "{% set l = [[1]*1000]*1000 %}{{ ([l]*1000)|tojson|length }}"):
        s = Llama(model_path=MODEL, n_ctx=256, chat_format=src, verbose=False)
        try:
            s.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=2)
            raise AssertionError(src[:40])
        except llama_rs.LlamaError as e:
            assert "template" in str(e).lower(), e
    # A Mistral answer with two `[TOOL_CALLS]name[ARGS]` calls, an `[ARGS]` inside a
    # string: both calls, as the stream gives them.
    content, calls = llama_rs._llama_rs.parse_tool_calls('[TOOL_CALLS]f[ARGS]{"x": "[ARGS]"}[TOOL_CALLS]g[ARGS]{}')
    assert [c[0] for c in calls] == ["f", "g"] and content == "", (content, calls)


def test_rank_scores_documents_with_a_reranker():
    r = Llama(model_path=os.environ["LLAMA_RS_RERANK_MODEL"], n_ctx=128, embedding=True, verbose=False)
    docs = ["a b", "b b a", "a", "b a b a b", "aab"]
    scores = r.rank("a b", docs)
    assert len(scores) == len(docs) and all(0.0 < s < 1.0 for s in scores), scores
    assert len(set(round(s, 6) for s in scores)) > 1, scores
    assert r.rank("a b", docs[:1]) == [r.rank("a b", docs[:1])[0]]
    try:
        llm.rank("q", ["d"])
        raise AssertionError("a chat model ranked")
    except llama_rs.UnsupportedError as e:
        assert "ranking head" in str(e) and e.kind == "Unsupported", e


def test_embeddings():
    e = Llama(model_path=MODEL, embedding=True, verbose=False)
    r = e.create_embedding(["hello", "world"])
    assert len(r["data"]) == 2 and len(r["data"][0]["embedding"]) == 576
    v, n = e.embed("hello", normalize=True, return_count=True)
    assert abs(sum(x * x for x in v) - 1.0) < 1e-3 and n > 0


def test_speculative_draft_models_keep_the_text():
    plain = llm("1. apples\n2. pears\n3. plums\n1. apples\n2.", max_tokens=24, temperature=0)["choices"][0]["text"]
    for draft in (LlamaPromptLookupDecoding(max_ngram_size=3, num_pred_tokens=8), MODEL):
        s = Llama(model_path=MODEL, n_ctx=2048, n_batch=64, n_ubatch=1, draft_model=draft, verbose=False)
        ref = Llama(model_path=MODEL, n_ctx=2048, n_batch=64, n_ubatch=1, verbose=False)
        p = "1. apples\n2. pears\n3. plums\n1. apples\n2."
        a = ref(p, max_tokens=24, temperature=0)["choices"][0]["text"]
        b = s(p, max_tokens=24, temperature=0)["choices"][0]["text"]
        assert a == b, (draft, a, b)
    assert plain


def test_mtp_drafting_keeps_the_text_and_needs_a_head():
    # A synthetic model with an MTP block (scripts/test-python.sh writes it).
    path = os.environ["LLAMA_RS_MTP_MODEL"]
    ref = Llama(model_path=path, n_ctx=1024, n_ubatch=1, verbose=False)
    s = Llama(model_path=path, n_ctx=1024, n_ubatch=1, draft_model=LlamaMTPDecoding(num_pred_tokens=4), verbose=False)
    for p in ("1. apples\n2. pears\n3.", "The history of"):
        a = ref(p, max_tokens=16, temperature=0)["choices"][0]["text"]
        b = s(p, max_tokens=16, temperature=0)["choices"][0]["text"]
        assert a == b, (p, a, b)
    # The chat model has no MTP layers: a clear error, not a crash.
    try:
        Llama(model_path=MODEL, n_ctx=256, draft_model=LlamaMTPDecoding(), verbose=False)
    except llama_rs.InvalidArgumentError as e:
        assert "multi-token-prediction" in str(e), e
    else:
        raise AssertionError("no error for a model without an MTP head")


def test_gil_is_released_while_generating():
    other = Llama(model_path=MODEL, n_ctx=512, verbose=False)
    done = threading.Event()
    ticks = [0]

    def work():
        other("Tell me a long story.", max_tokens=64, temperature=0)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks[0] += 1  # runs only while the generating thread does not hold the GIL
        time.sleep(0)
    t.join()
    assert ticks[0] > 10, ticks


def test_keyboard_interrupt_stops_a_stream_and_the_object_stays_usable():
    # A grammar that never completes keeps it going until the context is full (seconds).
    endless = LlamaGrammar.from_string('root ::= [a-z ] root')  # never complete: no end token
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    got = 0
    try:
        for _ in llm("Write about rivers.", max_tokens=100000, temperature=0.8, stream=True, grammar=endless):
            got += 1
        raise AssertionError("not interrupted")
    except KeyboardInterrupt:
        pass
    timer.cancel()
    assert got > 0
    r = llm("The capital of France is", max_tokens=4, temperature=0)
    assert r["usage"]["completion_tokens"] == 4


def test_constants_and_helpers():
    assert llama_rs.GGML_TYPE_Q8_0 == 8 and llama_rs.LLAMA_SPLIT_MODE_LAYER == 1
    assert isinstance(llama_rs.llama_supports_gpu_offload(), bool)
    q = Llama(model_path=MODEL, n_ctx=512, type_k=llama_rs.GGML_TYPE_Q8_0, flash_attn=True, verbose=False)
    assert q("Hi", max_tokens=2, temperature=0)["usage"]["completion_tokens"] == 2


def test_python_m_llama_rs_server():
    import signal
    import socket
    import subprocess
    import urllib.request

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    # `python -m llama_rs.server ...`, with SIGINT handled as at a terminal (see the top).
    boot = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from llama_rs.server.__main__ import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", boot, "--model", MODEL, "--port", str(port),
                             "--model_alias", "smol", "--n_ctx", "2048"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line, line
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps({"model": "smol", "messages": [{"role": "user", "content": "Hi"}],
                             "max_tokens": 4, "temperature": 0}).encode(),
            headers={"Content-Type": "application/json"})
        r = json.loads(urllib.request.urlopen(req).read())
        assert r["usage"]["completion_tokens"] == 4, r
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave a server behind
            proc.wait()
            raise
    assert code == 0


def test_chat_through_the_protocol_layer_required_tools_streamed_calls_reasoning_and_error_params():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    msgs = [{"role": "user", "content": "Weather in Paris?"}]
    # tool_choice "required" (the server's grammar): the answer is a call.
    r = llm.create_chat_completion(messages=msgs, tools=tools, tool_choice="required", max_tokens=96, temperature=0)
    call = r["choices"][0]["message"]["tool_calls"][0]
    assert r["choices"][0]["finish_reason"] == "tool_calls", r
    assert call["function"]["name"] == "get_weather" and call["id"]
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args["city"], str)
    # Streamed: the call's id and name first, then its arguments in pieces that join to
    # the same arguments.
    chunks = list(llm.create_chat_completion(messages=msgs, tools=tools, tool_choice="required", max_tokens=96,
                                             temperature=0, stream=True))
    parts = [tc for c in chunks for tc in (c["choices"][0]["delta"].get("tool_calls") or [])]
    assert parts[0]["function"]["name"] == "get_weather" and parts[0]["id"], parts
    assert len(parts) > 2, "arguments arrive in pieces"
    assert json.loads("".join(p["function"]["arguments"] for p in parts)) == args
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # Thinking: a template that opens a think block; a budget of 3 tokens ends it, and the
    # answer follows in `content`, the thinking in `reasoning_content`.
    think = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")
    t = Llama(model_path=MODEL, n_ctx=1024, chat_format=think, verbose=False)
    r = t.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], max_tokens=24, temperature=0,
                                 reasoning_budget=3)
    m = r["choices"][0]["message"]
    assert m["reasoning_content"], m
    assert "</think>" not in m["reasoning_content"] and m["content"], m
    # Errors name their field (`param`) and kind.
    try:
        llm.create_chat_completion(messages=msgs, logprobs=True, top_logprobs=30, max_tokens=2)
        raise AssertionError("top_logprobs 30 accepted")
    except llama_rs.InvalidArgumentError as e:
        assert e.param == "top_logprobs" and e.kind == "InvalidArgument", (e.param, e.kind)
    try:
        llm.create_chat_completion(messages=msgs, tools=tools, tool_choice={"type": "function",
                                   "function": {"name": "nope"}}, max_tokens=2)
        raise AssertionError("unknown tool accepted")
    except ValueError as e:
        assert e.param == "tool_choice" and "nope" in str(e), e


def test_one_request_gives_one_answer_through_every_wire_format():
    """The same greedy chat request through OpenAI chat, Anthropic, Ollama, Responses (the
    server, `python -m llama_rs.server`) and Python's create_chat_completion: one answer."""
    import socket
    import subprocess
    import urllib.request

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    boot = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from llama_rs.server.__main__ import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", boot, "--model", MODEL, "--port", str(port),
                             "--n_ctx", "2048"], stdout=subprocess.PIPE, text=True)
    content = "Name three colors."

    def post(path, body):
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req).read())

    try:
        assert f"127.0.0.1:{port}" in proc.stdout.readline()
        msgs = [{"role": "user", "content": content}]
        answers = {
            "openai": post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": msgs, "max_tokens": 12,
                                                     "temperature": 0})["choices"][0]["message"]["content"],
            "anthropic": post("/v1/messages", {"model": "claude", "messages": msgs, "max_tokens": 12,
                                               "temperature": 0})["content"][0]["text"],
            "ollama": post("/api/chat", {"model": "smol", "messages": msgs, "stream": False,
                                         "options": {"temperature": 0, "num_predict": 12}})["message"]["content"],
            "responses": post("/v1/responses", {"model": "x", "input": content, "max_output_tokens": 12,
                                                "temperature": 0})["output"][0]["content"][0]["text"],
            "python": llm.create_chat_completion(messages=msgs, max_tokens=12,
                                                 temperature=0)["choices"][0]["message"]["content"],
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert len(set(answers.values())) == 1 and answers["openai"], answers


def test_disk_cache_restores_across_llama_objects_and_ram_cache_keeps_states():
    import shutil
    import subprocess
    import tempfile
    d = tempfile.mkdtemp(prefix="llama-rs-py-disk-")
    try:
        system = "You are a helpful assistant who answers in one short sentence. " * 12
        prompt = system + "Question: what colour is grass?\nAnswer:"
        a = Llama(model_path=MODEL, n_ctx=1024, n_batch=64, verbose=False)
        a.set_cache(llama_rs.LlamaDiskCache(cache_dir=d, capacity_bytes=256 << 20))
        first = a(prompt, max_tokens=8, temperature=0)["choices"][0]["text"]
        assert len(a.cache) == 1 and a.cache.cache_size > 0
        a.close()
        # Another process, another Llama: the prefix comes back from disk, the answer is
        # the one a warm in-memory reuse gives (the last prompt token decoded alone).
        code = (
            "import sys, json, llama_rs\n"
            "llm = llama_rs.Llama(model_path=sys.argv[1], n_ctx=1024, n_batch=64, verbose=False)\n"
            "cache = llama_rs.LlamaDiskCache(cache_dir=sys.argv[2], capacity_bytes=256 << 20)\n"
            "llm.set_cache(cache)\n"
            "out = llm(sys.argv[3], max_tokens=8, temperature=0)\n"
            "print(json.dumps([out['choices'][0]['text'], cache.stats()]))\n")
        r = subprocess.run([sys.executable, "-c", code, MODEL, d, prompt], capture_output=True, text=True,
                           env=dict(os.environ), timeout=300)
        assert r.returncode == 0, r.stderr
        text, stats = json.loads(r.stdout.strip().splitlines()[-1])
        assert stats["hits"] == 1 and stats["hit_tokens"] > 100 and stats["rejected"] == 0, stats
        warm = Llama(model_path=MODEL, n_ctx=1024, n_batch=64, verbose=False)
        warm(prompt, max_tokens=8, temperature=0)
        assert warm(prompt, max_tokens=8, temperature=0)["choices"][0]["text"] == text
        assert first
        # Chat reads and writes the same tier.
        b = Llama(model_path=MODEL, n_ctx=1024, n_batch=64, verbose=False)
        b.set_cache(llama_rs.LlamaDiskCache(cache_dir=d, capacity_bytes=256 << 20))
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Name a fruit."}]
        b.create_chat_completion(msgs, max_tokens=4, temperature=0)
        assert len(b.cache) == 2
        # LlamaRAMCache: llama-cpp-python's longest-prefix states in memory.
        ram = llama_rs.LlamaRAMCache(capacity_bytes=1 << 30)
        warm.set_cache(ram)
        warm(prompt, max_tokens=4, temperature=0)
        assert len(ram.cache_state) == 1 and ram.cache_size > 0
        toks = warm.tokenize(prompt.encode())
        assert toks in ram and ram[toks].n_tokens > len(toks)
        warm.reset()
        warm(prompt, max_tokens=4, temperature=0)  # restored from the RAM cache, then saved again
        assert len(ram.cache_state) == 1
        try:
            llama_rs.AsyncLlama(llama=warm, cache=ram)
            raise AssertionError("AsyncLlama took a RAM cache")
        except llama_rs.InvalidArgumentError:
            pass
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_async_llama_shares_the_disk_tier():
    import asyncio
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="llama-rs-py-engine-disk-")
    try:
        prompt = "You are a helpful assistant who answers in one short sentence. " * 12 + "Q: name a bird.\nA:"

        async def once():
            eng = llama_rs.AsyncLlama(llama=llm, n_parallel=2, n_ctx=2048,
                                      cache=llama_rs.LlamaDiskCache(cache_dir=d, capacity_bytes=256 << 20))
            out = await eng.create_completion(prompt, max_tokens=4, temperature=0)
            hits = eng._engine.disk_hits()
            eng.close()
            return out, hits
        _, (hits, _) = asyncio.run(once())
        assert hits == 0
        assert len(llama_rs.LlamaDiskCache(cache_dir=d, capacity_bytes=256 << 20)) >= 1
        _, (hits, tokens) = asyncio.run(once())  # a new engine: restored from disk
        assert hits == 1 and tokens > 100, (hits, tokens)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_exact_reuse_makes_chat_and_stream_agree():
    e = Llama(model_path=MODEL, n_ctx=1024, n_batch=64, n_ubatch=16, verbose=False)
    e.set_exact_reuse(True)
    msgs = [{"role": "system", "content": "You are terse. " * 10}, {"role": "user", "content": "Say something."}]
    a = e.create_chat_completion(msgs, max_tokens=12, temperature=0)["choices"][0]["message"]["content"]
    chunks = e.create_chat_completion(msgs, max_tokens=12, temperature=0, stream=True)
    b = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    cold = Llama(model_path=MODEL, n_ctx=1024, n_batch=64, n_ubatch=16, verbose=False)
    c = cold.create_chat_completion(msgs, max_tokens=12, temperature=0)["choices"][0]["message"]["content"]
    assert a == b == c, (a, b, c)


def test_chat_handler_reads_images_from_paths_and_data_urls():
    import base64
    from llama_rs.llama_chat_format import Llava15ChatHandler, MTMDChatHandler
    image = os.environ["LLAMA_RS_TEST_IMAGE"]
    v = Llama(model_path=MODEL, n_ctx=1024, n_batch=64, verbose=False,
              chat_handler=MTMDChatHandler(clip_model_path=os.environ["LLAMA_RS_MMPROJ"], verbose=False))

    def ask(url, q="Describe the image.", llm=v):
        msgs = [{"role": "user", "content": [{"type": "text", "text": q},
                                             {"type": "image_url", "image_url": {"url": url}}]}]
        r = llm.create_chat_completion(msgs, max_tokens=10, temperature=0)
        return r["choices"][0]["message"]["content"], r["usage"]["prompt_tokens"]

    with open(image, "rb") as f:
        data_url = "data:image/jpeg;base64," + base64.b64encode(f.read()).decode()
    a, n_a = ask(image)
    b, n_b = ask(data_url)
    c, _ = ask("file://" + os.path.abspath(image))
    assert a == b == c and n_a == n_b, (a, b, c)
    # The image's 16 positions count in the prompt (plus <start_of_image>/<end_of_image>).
    text_only = v.create_chat_completion([{"role": "user", "content": "Describe the image."}], max_tokens=1)
    assert n_a >= text_only["usage"]["prompt_tokens"] + 16, (n_a, text_only["usage"])
    # Streamed, the same answer.
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Describe the image."},
                                         {"type": "image_url", "image_url": {"url": image}}]}]
    chunks = v.create_chat_completion(msgs, max_tokens=10, temperature=0, stream=True)
    assert "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks) == a
    # A llama-cpp-python handler name: the same implementation, the same answer.
    w = Llama(model_path=MODEL, n_ctx=1024, n_batch=64, verbose=False,
              chat_handler=Llava15ChatHandler(clip_model_path=os.environ["LLAMA_RS_MMPROJ"]))
    assert ask(image, llm=w)[0] == a
    # Bad media are InvalidArgumentError; a model without a handler refuses images.
    for bad in ["data:image/png;base64,!!!", "data:image/png;base64," + base64.b64encode(b"not an image").decode()]:
        try:
            ask(bad)
            raise AssertionError("accepted " + bad[:40])
        except llama_rs.InvalidArgumentError:
            pass
    try:
        ask(data_url, llm=llm)
        raise AssertionError("a model without a projector read an image")
    except llama_rs.InvalidArgumentError as e:
        assert "mmproj" in str(e), e
    # AsyncLlama over the same Llama: the engine gets the projector; the same answer.
    import asyncio

    async def engine_answer():
        e = v.engine(n_parallel=2, n_ctx=2048)
        msgs = [{"role": "user", "content": [{"type": "text", "text": "Describe the image."},
                                             {"type": "image_url", "image_url": {"url": image}}]}]
        r = await e.create_chat_completion(msgs, max_tokens=10, temperature=0)
        e.close()
        return r["choices"][0]["message"]["content"]

    assert asyncio.run(engine_answer()) == a
    try:
        MTMDChatHandler(clip_model_path="/nonexistent/mmproj.gguf")
        raise AssertionError("a missing projector file was accepted")
    except ValueError:
        pass


if __name__ == "__main__":
    failed = 0
    tests = [(k, v) for k, v in list(globals().items()) if k.startswith("test_") and callable(v)]
    for name, fn in tests:
        t = time.time()
        try:
            fn()
            print(f"ok   {name} ({time.time() - t:.1f} s)")
        except BaseException:  # noqa: BLE001 (KeyboardInterrupt tests too)
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
