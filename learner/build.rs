//! Keeps libtorch_cuda linked into the learner's binaries and tests. No symbol of it is
//! referenced, so `--as-needed` would drop it and `tch::Cuda::is_available()` would then
//! report no GPU on a machine that has one. Skipped when libtorch has no CUDA library.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(dir) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        return;
    };
    let lib = dir.join("lib");
    if lib.join("libtorch_cuda.so").is_file() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        for kind in ["bins", "tests"] {
            println!("cargo:rustc-link-arg-{kind}=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
