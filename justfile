# Everyday recipes. The README's two commands (scripts/demo.sh, scripts/test.sh)
# work without `just`; these wrap the same steps.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Every cargo call goes through scripts/env.sh, which resolves libtorch
# ($LIBTORCH, LIBTORCH_USE_PYTORCH=1, or the per-user cached CPU build).
with_torch := "source scripts/env.sh && runner_setup_libtorch &&"

default:
    @just --list

# Fetch libtorch and the pretrained weights (once; cached per user).
setup:
    {{with_torch}} bash scripts/fetch-weights.sh

build: setup
    {{with_torch}} cargo build

# The offline demo: synthetic shapes, efficientnet_lite0 two-phase.
demo *ARGS:
    bash scripts/demo.sh {{ARGS}}

# Run an experiment spec, e.g. `just run experiments/quickstart.toml`.
run SPEC *ARGS: build
    target/debug/runner run {{SPEC}} {{ARGS}}

sweep:
    @echo "runner sweep is not implemented yet (issue 7); run specs one by one with 'just run SPEC'" >&2; exit 1

report:
    @echo "runner report is not implemented yet (issue 7); each run writes metrics.csv and curves.png in its directory" >&2; exit 1

# runner against the PyTorch tutorial recipe (docs/performance.md); PYTHON must have torch,
# torchvision and efficientnet-lite-pytorch, e.g. PYTHON=~/.cache/runner/bench-venv/bin/python.
bench *ARGS: build
    python3 bench/compare.py --python "${PYTHON:-python3}" {{ARGS}}

test *ARGS: setup
    {{with_torch}} cargo test {{ARGS}}

lint: setup
    cargo fmt --check
    {{with_torch}} cargo clippy --all-targets -- -D warnings

# What CI runs: rustfmt --check, clippy -D warnings, every test.
ci:
    bash scripts/test.sh

# Regenerate the reference logits (needs torch and efficientnet-lite-pytorch in python3).
fixtures:
    python3 scripts/make_fixtures.py "${RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner}/weights/efficientnet-lite0-57934424.pth" > tests/fixtures/efficientnet_lite0_logits.json
