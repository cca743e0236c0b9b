//! `llama-rs-server` built with `LLAMA_BUILD_CONFIG=cpu-all` links llama.cpp's shared
//! libraries and loads the CPU variant modules from beside them: with `$ORIGIN` in its
//! run path the binary, `libllama.so.0`, `libggml*.so*` and the modules can ship as one
//! directory (README: "Which CPU code a build contains"). A static build is unaffected.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN");
    }
}
