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

# Every run of every spec under experiments/ (or the given paths and flags), then the report.
# e.g. `just sweep --dry-run`, `just sweep experiments/quickstart.toml --shard 0/2`.
sweep *ARGS: build
    target/debug/runner sweep {{ARGS}}

# reports/summary.{csv,parquet,md}, reports/plots/ and reports/index.html from reports/runs.
report: build
    target/debug/runner report

# Rerun recorded runs and compare their metrics, e.g. `just verify reports/runs/quickstart/*`.
verify +DIRS: build
    target/debug/runner verify {{DIRS}}

# What CI does last: rerun the committed CI experiment and verify it against its record.
verify-ci:
    bash scripts/ci-verify.sh

# runner against the PyTorch tutorial recipe (docs/performance.md), with the PyTorch of
# runner_setup_torch (or PYTHON: one with torch, torchvision and efficientnet-lite-pytorch).
bench *ARGS: build
    {{with_torch}} runner_setup_torch && python3 bench/compare.py --python "${PYTHON:-$RUNNER_CACHE/torch-venv/bin/python}" {{ARGS}}

test *ARGS: setup
    {{with_torch}} runner_setup_tracking && runner_setup_torch && cargo test {{ARGS}}

lint: setup
    cargo fmt --check
    {{with_torch}} cargo clippy --all-targets -- -D warnings

# What CI runs: rustfmt --check, clippy -D warnings, every test.
ci:
    bash scripts/test.sh

# Regenerate the reference logits (needs torch and efficientnet-lite-pytorch in python3).
fixtures:
    python3 scripts/make_fixtures.py "${RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner}/weights/efficientnet-lite0-57934424.pth" > tests/fixtures/efficientnet_lite0_logits.json
