"""tokens/s of `create_completion` (greedy, up to -n tokens) through llama_rs and
through llama-cpp-python, next to llama.cpp's `llama-bench` tg and llama-rs's Rust
generation API (`bench --once`), same model and threads, interleaved per repetition.

    PYTHONPATH=target/py-llama:target/py-deps python3 llama-py/bench/compare.py \\
        --model M.gguf --llama-bench PATH --rust-bench target/release/bench \\
        --lcpp-python /tmp/lcpp/bin/python [--n-batch 64 --flash-attn]

llama-cpp-python runs in its own interpreter (`--lcpp-python`, a venv where it is
installed); the table is markdown for docs/BENCHMARKS.md.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
lib, model, n, n_batch, fa, threads, reps, ngl = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
mod = __import__(lib)
llm = mod.Llama(model_path=model, n_ctx=2048, n_batch=n_batch, flash_attn=fa, n_threads=threads,
                n_threads_batch=threads, n_gpu_layers=ngl, verbose=False)
out = []
for r in range(reps + 1):
    llm.reset()
    t = time.perf_counter()
    # No logit_bias against EOS: llama-cpp-python applies it as a Python logits processor
    # (a numpy copy of the whole row per token), which would not measure the plain path.
    c = llm("The", max_tokens=n, temperature=0)
    dt = time.perf_counter() - t
    done = c["usage"]["completion_tokens"]
    assert done >= n // 2, c["usage"]  # an early end of generation would say little
    if r:
        out.append(done / dt)
print(json.dumps(out))
"""


def child(py, lib, a):
    r = subprocess.run([py, "-c", CHILD, lib, a.model, str(a.n), str(a.n_batch), "1" if a.flash_attn else "0",
                        str(a.threads), "1", str(a.ngl)], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)[0]


def llama_bench(a):
    fa = "1" if a.flash_attn else "0"
    r = subprocess.run([a.llama_bench, "-m", a.model, "-p", "0", "-n", str(a.n), "-t", str(a.threads),
                        "-b", str(a.n_batch), "-fa", fa, "-ngl", str(a.ngl), "-r", "1", "-o", "json"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)[0]["avg_ts"]


def rust(a):
    r = subprocess.run([a.rust_bench, "--model", a.model, "--once", "The", "-n", str(a.n), "-t", str(a.threads),
                        "--ctx", "2048", "--once-batch", str(a.n_batch), "--fa", "on" if a.flash_attn else "off",
                        "--ngl", "all" if a.ngl > 0 else "0", "-r", "1"], capture_output=True, text=True, check=True)
    return float(re.search(r"once: \d+ tokens, ([0-9.]+)", r.stderr).group(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--llama-bench", required=True)
    p.add_argument("--rust-bench", required=True)
    p.add_argument("--lcpp-python", required=True)
    p.add_argument("-n", type=int, default=128)
    p.add_argument("-r", "--reps", type=int, default=5)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--flash-attn", action="store_true")
    p.add_argument("--ngl", type=int, default=0, help="layers on the GPU (99: all)")
    a = p.parse_args()
    runs = {"llama-bench tg": [], "llama-rs Rust API": [], "llama_rs (Python)": [], "llama-cpp-python": []}
    for _ in range(a.reps):
        runs["llama-bench tg"].append(llama_bench(a))
        runs["llama-rs Rust API"].append(rust(a))
        runs["llama_rs (Python)"].append(child(sys.executable, "llama_rs", a))
        runs["llama-cpp-python"].append(child(a.lcpp_python, "llama_cpp", a))
    base = statistics.mean(runs["llama-bench tg"])
    print(f"n_batch {a.n_batch}, flash_attn {a.flash_attn}, {a.threads} threads, ngl {a.ngl}, -n {a.n}, "
          f"{a.reps} interleaved reps")
    print("| | t/s (mean ± sd) | × llama-bench |")
    print("|---|---|---|")
    for k, v in runs.items():
        m, sd = statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {k} | {m:.1f} ± {sd:.1f} | {m / base:.3f} |")
    py, lc, ru = (statistics.mean(runs[k]) for k in ("llama_rs (Python)", "llama-cpp-python", "llama-rs Rust API"))
    print(f"llama_rs / llama-cpp-python: {py / lc:.3f}; llama_rs / Rust API: {py / ru:.3f}")


if __name__ == "__main__":
    main()
