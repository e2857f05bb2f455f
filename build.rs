//! Embeds libtorch's directory as the binaries' run path (RUNPATH), so that
//! `runner` starts without LD_LIBRARY_PATH. RUNPATH rather than RPATH: a user
//! (or a GPU machine with its own CUDA libtorch) can still override it with
//! LD_LIBRARY_PATH.
//!
//! Also compiles src/train/foreach.cpp, the optimizers' multi-tensor operations, and
//! src/sys/numerics.cpp, libtorch's CPU capability, against the same libtorch's headers
//! (tch binds neither).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=src/train/foreach.cpp");
    println!("cargo:rerun-if-changed=src/sys/numerics.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)");
    };
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    } else if os == "macos" {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    // libtorch's layouts (an unpacked libtorch, a Python torch, the cut of
    // scripts/fetch-libtorch.sh) all keep the headers beside lib/.
    let include = std::path::Path::new(&lib).parent().expect("lib has a parent").join("include");
    // torch-sys's default: the C++11 ABI of every libtorch 2.x build.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .include(&include)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .opt_level(2)
        .file("src/train/foreach.cpp")
        .file("src/sys/numerics.cpp")
        .compile("runner_cxx");
}
