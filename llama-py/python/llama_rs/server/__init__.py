"""`python -m llama_rs.server`: the Rust OpenAI-compatible server (llama-rs-server), in
process, with llama-cpp-python's server flags where they exist."""
