//! Developer tools of llama-rs (`publish = false`): the llama-bench comparison
//! (`bench`), the GPU harness (`gpu-test`), synthetic models (`synth-model`) and fuzz seed
//! corpora (`fuzz-seeds`). `cargo xtask` lists how each is run.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar on stderr over `len` steps of a long run (benchmark repetitions); drawn only
/// when stderr is a terminal, so logs and piped tables stay clean.
pub fn steps_progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {elapsed}").unwrap().progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
