//! The extension finds the shared libraries of a `cpu-all` build (libllama, libggml and
//! the CPU variant modules, which `scripts/build-wheel.sh` puts into the package next to
//! it) through `$ORIGIN`; a static build has none to find and is unaffected.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN");
    }
}
