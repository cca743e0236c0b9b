//! Benchmarks live in `benches/`; see `cargo bench -p llama-benches`.
