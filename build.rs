//! Embeds libtorch's directory as the binaries' run path (RUNPATH), so that
//! `runner` starts without LD_LIBRARY_PATH. RUNPATH rather than RPATH: a user
//! (or a GPU machine with its own CUDA libtorch) can still override it with
//! LD_LIBRARY_PATH.
//!
//! Also compiles src/train/foreach.cpp, the optimizers' multi-tensor operations, and
//! src/sys/numerics.cpp, libtorch's CPU capability, against the same libtorch's headers
//! (tch binds neither).
//!
//! And names the commit it is built from (`RUNNER_COMMIT`, for summary.json).

fn main() {
    commit();
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

/// `RUNNER_COMMIT`: the checkout's commit (12 hex digits), `unknown` outside a git checkout.
/// Rebuilt when HEAD moves (a commit, a checkout).
fn commit() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RUNNER_COMMIT={commit}");
    let Ok(head) = std::fs::read_to_string(".git/HEAD") else { return };
    println!("cargo:rerun-if-changed=.git/HEAD");
    // Only files that exist: cargo reruns a script every build for a path that does not.
    for path in [head.strip_prefix("ref: ").map(|r| format!(".git/{}", r.trim())), Some(".git/packed-refs".into())]
        .into_iter()
        .flatten()
    {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
