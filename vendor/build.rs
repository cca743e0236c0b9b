//! Exports the pinned upstream commit from pin.toml (the one place it is written) as
//! `LLAMA_CPP_COMMIT` for `UPSTREAM_COMMIT`.

fn main() {
    println!("cargo:rerun-if-changed=pin.toml");
    let pin = std::fs::read_to_string("pin.toml").expect("vendor/pin.toml");
    let commit = pin
        .lines()
        .find_map(|l| l.trim().strip_prefix("commit = \"")?.strip_suffix('"'))
        .expect("pin.toml has a `commit = \"...\"` line");
    println!("cargo:rustc-env=LLAMA_CPP_COMMIT={commit}");
}
