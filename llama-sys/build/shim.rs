//! A few C entry points over llama.cpp's C++-only API (`shim/`), compiled with `cc`.

use std::path::Path;

pub fn build(src: &Path, out_dir: &Path) -> Result<(), String> {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .file("shim/llama_rs_ext.cpp")
        .include("shim")
        .include(src.join("include"))
        .include(src.join("src"))
        .include(src.join("ggml").join("include"))
        .out_dir(out_dir.join("shim"))
        .warnings(false);
    b.try_compile("llama_rs_ext").map_err(|e| format!("compiling shim/llama_rs_ext.cpp: {e}"))
}
