//! Helpers shared by the example binaries.

use indicatif::{ProgressBar, ProgressStyle};
use llama_rs::{Model, ModelParams};

/// Loads a model with a progress bar on stderr.
pub fn load_with_progress(path: &std::path::Path, params: ModelParams) -> llama_rs::Result<Model> {
    let bar = ProgressBar::new(100);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:40}] {percent:>3}%").unwrap().progress_chars("=> "));
    bar.set_message(format!("loading {}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    let b2 = bar.clone();
    let model = Model::load(
        path,
        params.progress(move |p| {
            b2.set_position((p * 100.0) as u64);
            true
        }),
    );
    bar.finish_and_clear();
    model
}

/// The process's arguments with llama.cpp's multi-letter single-dash flags (`-ngl 99`,
/// `-ctk q8_0`, ...) rewritten to the double-dash long names clap knows (`--ngl`).
pub fn llama_style_args(multi_letter: &[&str]) -> Vec<String> {
    std::env::args()
        .map(|a| {
            let flag = a.split('=').next().unwrap_or(&a);
            if multi_letter.contains(&flag) {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}
