# Shared environment for the project's scripts: sourced, not executed.
#
# Resolves a libtorch 2.11.0 for tch/torch-sys, in this order:
#   1. LIBTORCH already set (an unpacked official libtorch): used as is;
#   2. LIBTORCH_USE_PYTORCH=1: torch-sys asks the active python3's torch;
#   3. otherwise a CPU-only libtorch cut out of the PyPI torch wheel, fetched
#      once by scripts/fetch-libtorch.sh into the per-user cache.
# It also points RUNNER_CACHE at the per-user cache where weights live, and puts
# the cached `just` and target/debug (where `runner` is built) on PATH.

RUNNER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUNNER_CACHE="${RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner}"
RUNNER_TORCH_VERSION="2.11.0"
RUNNER_JUST_VERSION="1.59.0"
export PATH="$RUNNER_CACHE/tools/bin:$RUNNER_ROOT/target/debug:$PATH"

runner_setup_libtorch() {
    if [ -n "${LIBTORCH:-}" ]; then
        echo "runner: using LIBTORCH=$LIBTORCH" >&2
    elif [ "${LIBTORCH_USE_PYTORCH:-}" = "1" ]; then
        echo "runner: using the libtorch of python3's torch (LIBTORCH_USE_PYTORCH=1)" >&2
    else
        export LIBTORCH="$RUNNER_CACHE/libtorch-$RUNNER_TORCH_VERSION-cpu"
        bash "$RUNNER_ROOT/scripts/fetch-libtorch.sh" "$LIBTORCH" || return 1
    fi
}

# `just` (the justfile's runner): the prebuilt binary of PyPI's rust-just, installed
# once into the per-user cache, unless a `just` is on PATH already. So that it works in
# the user's next shell too, it is linked into cargo's bin folder (~/.cargo/bin, on the
# PATH of anyone with cargo) when no other `just` is there.
runner_setup_just() {
    local tools="$RUNNER_CACHE/tools" dir="$RUNNER_CACHE/tools/just-$RUNNER_JUST_VERSION"
    if ! command -v just >/dev/null 2>&1; then
        if [ ! -x "$dir/bin/just" ]; then
            echo "runner: installing just $RUNNER_JUST_VERSION (pip package rust-just) into $dir" >&2
            rm -rf "$dir.partial"
            PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
                --no-warn-script-location --only-binary=:all: --target "$dir.partial" \
                "rust-just==$RUNNER_JUST_VERSION" || {
                echo "runner: could not install just (pip package rust-just); the justfile's recipes need it," \
                     "the two commands do not" >&2
                rm -rf "$dir.partial"
                return 0
            }
            rm -rf "$dir" && mv "$dir.partial" "$dir"
        fi
        mkdir -p "$tools/bin" && ln -sf "$dir/bin/just" "$tools/bin/just"
    fi
    local cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    if [ -x "$tools/bin/just" ] && [ -d "$cargo_bin" ] && [ ! -e "$cargo_bin/just" ]; then
        ln -s "$tools/bin/just" "$cargo_bin/just" &&
            echo "runner: linked just into $cargo_bin (remove that link to undo)" >&2
    fi
    return 0
}

# A venv in the per-user cache, made once: `$RUNNER_CACHE/<name>` with the pip packages
# `$2` (a stamp file tells when they change), for what the tests drive in Python.
runner_setup_venv() {
    local venv="$RUNNER_CACHE/$1" packages="$2" why="$3"
    if [ "$(cat "$venv/.installed" 2>/dev/null)" = "$packages" ]; then
        return 0
    fi
    echo "runner: installing $packages into $venv ($why; once, a few minutes)" >&2
    rm -rf "$venv"
    # shellcheck disable=SC2086
    python3 -m venv "$venv" &&
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $packages &&
        echo "$packages" > "$venv/.installed" || {
        echo "runner: could not install $packages; the tests that use $venv will fail" >&2
        return 1
    }
}

# The trackers themselves (TensorBoard's event reader, an MLflow tracking server and its
# client): `$RUNNER_CACHE/tracking-venv`. The tests find it there.
RUNNER_TRACKING_PACKAGES="tensorboard==2.21.0 mlflow==3.17.2"
runner_setup_tracking() {
    runner_setup_venv tracking-venv "$RUNNER_TRACKING_PACKAGES" "the tracking tests use them"
}

# PyTorch as users have it (the PyPI build, with its CUDA libraries: about 4.7 GB), with
# onnx and onnxruntime: `$RUNNER_CACHE/torch-venv`. The tests load exported TorchScript with
# its torch.jit.load, export ONNX with it and run that in onnxruntime; bench/compare.py
# trains the PyTorch side of the benchmarks with it.
RUNNER_TORCH_PACKAGES="torch==$RUNNER_TORCH_VERSION torchvision==0.26.0 efficientnet-lite-pytorch==0.1.0 onnx==1.23.2 onnxruntime==1.32.0"
runner_setup_torch() {
    runner_setup_venv torch-venv "$RUNNER_TORCH_PACKAGES" "PyTorch for the export test and the benchmarks"
}

# libtorch, the pretrained weights, just, then target/debug/runner (the demo and ci-verify.sh).
runner_build() {
    runner_setup_libtorch || return 1
    bash "$RUNNER_ROOT/scripts/fetch-weights.sh" || return 1
    runner_setup_just || return 1
    if [ ! -x "$RUNNER_ROOT/target/debug/runner" ]; then
        echo "runner: building target/debug/runner; the first build compiles libtorch's C++ bindings and about" \
             "300 crates, about 8 minutes on 2 cores (later builds take seconds)" >&2
    fi
    (cd "$RUNNER_ROOT" && cargo build --bin runner)
}
