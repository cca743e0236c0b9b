//! `cargo xtask <task> [args]`: every developer task of llama-rs in one list.
//!
//! Each task is one command line; arguments after the task name are appended to it. Bash
//! stays where a task needs root, a chroot, apt or a machine without Rust (the scripts
//! under `scripts/`); everything else is a cargo invocation. `cargo xtask` alone prints
//! the list (the README shows the same list).

use std::process::{Command, ExitCode};

/// Name, what it does, and the command it runs (program + fixed arguments).
const TASKS: &[(&str, &str, &[&str])] = &[
    (
        "setup",
        "install what the build uses (apt-get cmake ninja ccache g++; --bindgen adds libclang)",
        &["scripts/setup.sh"],
    ),
    ("demo", "greedy generation on the default model with tokens/s (README's first command)", &["scripts/demo.sh"]),
    (
        "test",
        "every test: unit, integration on the real model, doc examples, packaging (README's second)",
        &["scripts/test.sh"],
    ),
    ("style", "cargo fmt --check, clippy and rustdoc with warnings as errors; no C build", &["scripts/style.sh"]),
    ("ci", "what CI runs: style, fresh machine, lavapipe, fuzz smoke (root for the chroot stages)", &[".ci/run"]),
    (
        "fresh-machine",
        "the README's commands in a clean Debian 12 chroot from a clean clone (root)",
        &["scripts/fresh-machine-test.sh"],
    ),
    (
        "lavapipe",
        "the Vulkan backend's tests on Mesa lavapipe in a Debian 13 chroot (root)",
        &["scripts/vulkan-lavapipe-test.sh"],
    ),
    (
        "fuzz",
        "the libFuzzer targets for SECONDS each (default 60; FUZZ_RUNS=n for a fixed count)",
        &["scripts/fuzz.sh"],
    ),
    ("asan", "the test suite under AddressSanitizer + LeakSanitizer (nightly)", &["scripts/asan-test.sh"]),
    (
        "fetch-errors",
        "bad inputs of the fetch step and the build: clear errors, nothing half-written",
        &["scripts/test-fetch-errors.sh"],
    ),
    (
        "hip-check",
        "compile-check the HIP backend for gfx1151 (needs a ROCm toolchain)",
        &["scripts/hip-compile-check.sh"],
    ),
    (
        "regen-bindings",
        "regenerate llama-sys/src/pregenerated.rs with bindgen (--check compares)",
        &["scripts/regen-bindings.sh"],
    ),
    (
        "llama-tools",
        "build llama.cpp's own tools (llama-bench, ...) from the pinned source; prints their dir",
        &["scripts/llama-tools.sh"],
    ),
    (
        "bench",
        "throughput next to llama-bench / llama-batched-bench (docs/BENCHMARKS.md)",
        &["cargo", "run", "--release", "--locked", "-p", "llama-devtools", "--bin", "bench", "--"],
    ),
    (
        "chat",
        "terminal chat (SmolLM2 by default; -p TEXT for one answer)",
        &["cargo", "run", "--release", "--locked", "-p", "llama-examples", "--bin", "chat", "--"],
    ),
    (
        "serve",
        "the OpenAI-compatible server (llama-server's flags; default model: SmolLM2)",
        &["cargo", "run", "--release", "--locked", "-p", "llama-rs-server", "--"],
    ),
    (
        "serve-bench",
        "llama-rs-server next to llama-server: t/s and TTFT at 1-16 clients, peak RSS",
        &["cargo", "run", "--release", "--locked", "-p", "llama-devtools", "--bin", "serve-bench", "--"],
    ),
    (
        "server-python",
        "the server through the official openai Python client (installs openai, requests)",
        &["scripts/test-server-python.sh"],
    ),
    (
        "python",
        "build the llama_rs wheel (maturin) and run its tests (llama-cpp-python's API)",
        &["scripts/test-python.sh"],
    ),
    (
        "criterion",
        "criterion benchmarks of sampling and decode",
        &["cargo", "bench", "--locked", "-p", "llama-benches"],
    ),
    (
        "gpu-test",
        "GPU vs CPU agreement, memory plan, state, KV types (needs a GPU build feature)",
        &["cargo", "run", "--release", "--locked", "-p", "llama-devtools", "--bin", "gpu-test", "--"],
    ),
    (
        "synth-model",
        "write a synthetic Qwen2-shaped model (random weights, real vocabulary)",
        &["cargo", "run", "--release", "--locked", "-p", "llama-devtools", "--bin", "synth-model", "--"],
    ),
    (
        "fuzz-seeds",
        "write the fuzz targets' seed corpora",
        &["cargo", "run", "--release", "--locked", "-p", "llama-devtools", "--bin", "fuzz-seeds", "--"],
    ),
    (
        "device-prepare",
        "build what scripts/device/run.sh needs on a GPU machine without Rust (.dev/)",
        &["scripts/device/prepare.sh"],
    ),
    ("device-run", "run the tests, gpu-test and benches on the device machine (there)", &["scripts/device/run.sh"]),
];

fn list() {
    println!("cargo xtask <task> [args]\n");
    for (name, what, cmd) in TASKS {
        println!("  {name:<15} {what}\n  {:<15} → {}", "", cmd.join(" "));
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(task) = args.next() else {
        list();
        return ExitCode::SUCCESS;
    };
    if matches!(task.as_str(), "-h" | "--help" | "help" | "list") {
        list();
        return ExitCode::SUCCESS;
    }
    let Some((_, _, cmd)) = TASKS.iter().find(|(name, ..)| *name == task) else {
        eprintln!("xtask: no task {task:?}; `cargo xtask` lists them");
        return ExitCode::from(2);
    };
    // Tasks run from the workspace root, wherever cargo was called from.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask/ sits in the workspace root");
    let status = Command::new(cmd[0]).args(&cmd[1..]).args(args).current_dir(root).status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(s.code().map_or(1, |c| c.clamp(1, 255) as u8)),
        Err(e) => {
            eprintln!("xtask: cannot run {}: {e}", cmd[0]);
            ExitCode::FAILURE
        }
    }
}
