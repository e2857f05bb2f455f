# Shared environment for the project's scripts: sourced, not executed.
#
# Resolves a libtorch 2.11.0 for tch/torch-sys, in this order:
#   1. LIBTORCH already set (an unpacked official libtorch): used as is;
#   2. LIBTORCH_USE_PYTORCH=1: torch-sys asks the active python3's torch;
#   3. otherwise a CPU-only libtorch cut out of the PyPI torch wheel, fetched
#      once by scripts/fetch-libtorch.sh into the per-user cache.
# It also points RUNNER_CACHE at the per-user cache where weights live.

RUNNER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RUNNER_CACHE="${RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner}"
RUNNER_TORCH_VERSION="2.11.0"

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

# libtorch, the pretrained weights, then target/debug/runner (the demo and ci-verify.sh).
runner_build() {
    runner_setup_libtorch || return 1
    bash "$RUNNER_ROOT/scripts/fetch-weights.sh" || return 1
    (cd "$RUNNER_ROOT" && cargo build --quiet --bin runner)
}
