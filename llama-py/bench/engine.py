"""Throughput of the engine driven from Python: N concurrent streaming coroutines on
`AsyncLlama` (each token becomes a chunk dict in its own coroutine), against the same N
prompts submitted as one list (`create_completion([...])`: one coroutine collects every
event, which still crosses into Python) — and, with --lcpp-python, llama-cpp-python
answering the same prompts one after another (it serves one request at a time).

    PYTHONPATH=target/py-llama:target/py-deps python3 llama-py/bench/engine.py \\
        --model M.gguf --clients 16,64 -n 64 [--ngl 99] [--lcpp-python /venv/bin/python]

Prints a markdown table for docs/BENCHMARKS.md.
"""
import argparse
import asyncio
import json
import statistics
import subprocess
import time

import llama_rs

LCPP = r"""
import json, sys, time
from llama_cpp import Llama
model, n, ngl, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
llm = Llama(model_path=model, n_ctx=2048, n_gpu_layers=ngl, verbose=False)
llm(prompts[0], max_tokens=4, temperature=0)
t, done = time.perf_counter(), 0
for p in prompts:
    done += llm(p, max_tokens=n, temperature=0, logit_bias=None)["usage"]["completion_tokens"]
print(json.dumps(done / (time.perf_counter() - t)))
"""


def prompts(n):
    return [f"Request {i}: write a few sentences about topic number {i}." for i in range(n)]


async def streaming(llm, ps, n):
    async def one(p):
        k = 0
        async for _ in await llm.create_completion(p, max_tokens=n, temperature=0, stream=True):
            k += 1
        return k

    t = time.perf_counter()
    counts = await asyncio.gather(*(one(p) for p in ps))
    return sum(counts) / (time.perf_counter() - t)


async def batched(llm, ps, n):
    t = time.perf_counter()
    out = await llm.create_completion(ps, max_tokens=n, temperature=0)
    return out["usage"]["completion_tokens"] / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", default="16,64")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-r", "--reps", type=int, default=3)
    ap.add_argument("--ngl", type=int, default=0)
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("--lcpp-python", default=None)
    a = ap.parse_args()
    widths = [int(c) for c in a.clients.split(",")]
    # ignore_eos is not a llama-cpp-python argument: random-weight models rarely end early,
    # and every row reports the tokens it got.
    llm = llama_rs.AsyncLlama(model_path=a.model, n_parallel=max(widths), n_ctx=max(widths) * (a.n + 64),
                              n_threads=a.threads, n_gpu_layers=a.ngl)
    print(f"model {a.model}, {a.n} tokens per request, {a.reps} reps, n_gpu_layers {a.ngl}\n")
    print("| requests | N streaming coroutines t/s | one call with a list t/s | ratio | llama-cpp-python one by one t/s |")
    print("|---|---|---|---|---|")

    async def run():
        await batched(llm, prompts(2), 4)  # warm-up
        for w in widths:
            ps = prompts(w)
            s, b = [], []
            for _ in range(a.reps):
                s.append(await streaming(llm, ps, a.n))
                b.append(await batched(llm, ps, a.n))
            lc = "–"
            if a.lcpp_python:
                r = subprocess.run([a.lcpp_python, "-c", LCPP, a.model, str(a.n), str(a.ngl), json.dumps(ps[:8])],
                                   capture_output=True, text=True)
                lc = f"{float(r.stdout.strip()):.1f}" if r.returncode == 0 else "failed: " + r.stderr[-200:]
            ms, mb = statistics.mean(s), statistics.mean(b)
            sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
            print(f"| {w} | {ms:.1f} ± {sd(s):.1f} | {mb:.1f} ± {sd(b):.1f} | {ms / mb:.3f} | {lc} |")

    asyncio.run(run())
    llm.close()


if __name__ == "__main__":
    main()
