//! Embeds libtorch's directory as the binaries' run path (RUNPATH), so that
//! `runner` starts without LD_LIBRARY_PATH. RUNPATH rather than RPATH: a user
//! (or a GPU machine with its own CUDA libtorch) can still override it with
//! LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        if os == "linux" {
            println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        } else if os == "macos" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        }
    }
}
