"""`python -m llama_rs.server --model MODEL.gguf [--port 8000] ...`

Takes llama-cpp-python's server flags (`--model`, `--model_alias`, `--host`, `--port`,
`--n_ctx`, `--n_gpu_layers`, `--n_batch`, `--n_threads`, `--flash_attn`, `--api_key`,
`--chat_format`, ...) and runs llama-rs-server (axum, the continuous-batching engine) in
this process. Flags llama-cpp-python's server lacks: `--parallel`, `--metrics`.
"""
import argparse
import sys

from .._llama_rs import serve


def _bool(v: str) -> bool:
    return v.lower() in ("1", "true", "yes", "on")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llama_rs.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="GGUF model (default: the fetched SmolLM2 chat model)")
    p.add_argument("--model_alias")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--n_ctx", type=int, default=2048)
    p.add_argument("--n_gpu_layers", type=int, default=0)
    p.add_argument("--n_batch", type=int, default=512)
    p.add_argument("--n_ubatch", type=int)
    p.add_argument("--n_threads", type=int, default=0)
    p.add_argument("--flash_attn", type=_bool, default=False)
    p.add_argument("--type_k")
    p.add_argument("--type_v")
    p.add_argument("--use_mmap", type=_bool, default=True)
    p.add_argument("--use_mlock", type=_bool, default=False)
    p.add_argument("--api_key")
    p.add_argument("--chat_format")
    p.add_argument("--verbose", type=_bool, default=True)
    p.add_argument("--parallel", type=int, default=4, help="requests generated at once (llama-rs)")
    p.add_argument("--metrics", action="store_true", help="Prometheus /metrics (llama-rs)")
    a = p.parse_args(argv)
    host = "127.0.0.1" if a.host == "localhost" else a.host
    out = ["--host", host, "--port", str(a.port), "-c", str(a.n_ctx), "-b", str(a.n_batch),
           "-t", str(a.n_threads), "-np", str(a.parallel),
           "-ngl", "all" if a.n_gpu_layers < 0 else str(a.n_gpu_layers), "-fa", "on" if a.flash_attn else "auto"]
    if a.model:
        out += ["-m", a.model]
    if a.model_alias:
        out += ["-a", a.model_alias]
    if a.n_ubatch:
        out += ["-ub", str(a.n_ubatch)]
    if a.type_k:
        out += ["-ctk", a.type_k]
    if a.type_v:
        out += ["-ctv", a.type_v]
    if not a.use_mmap:
        out += ["--no-mmap"]
    if a.use_mlock:
        out += ["--mlock"]
    if a.api_key:
        out += ["--api-key", a.api_key]
    if a.chat_format:
        names = {"llama-2": "llama2", "llama-3": "llama3", "mistral-instruct": "mistral-v1"}
        out += ["--chat-template", names.get(a.chat_format, a.chat_format)]
    if a.metrics:
        out += ["--metrics"]
    serve(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
