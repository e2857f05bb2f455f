#!/usr/bin/env bash
# Reruns the committed CI experiment (tests/fixtures/ci_verify.toml) and verifies it
# against its recorded run (tests/fixtures/ci_run: config, metrics, summary) with
# `runner verify`. CI runs on another machine than the one that recorded it, so the
# comparison allows an absolute difference of RUNNER_VERIFY_TOLERANCE (default 1e-5);
# on the recording machine `--tolerance 0` holds.
#
#   bash scripts/ci-verify.sh            verify
#   bash scripts/ci-verify.sh --record   record it anew (after a deliberate change of
#                                        runner's numbers; commit tests/fixtures/ci_run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The same instruction set on every x86_64 machine, recording and verifying alike: oneDNN
# otherwise picks AVX-512 kernels where the CPU has them and AVX2 ones where not, and
# their sums differ in the last bits (on one Intel machine: 9e-5 in a phase-2 train loss
# after 3 epochs). MKL_CBWR asks MKL for results that do not depend on the CPU model.
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"
export ATEN_CPU_CAPABILITY="${ATEN_CPU_CAPABILITY:-avx2}"
export MKL_CBWR="${MKL_CBWR:-AVX2}"
source scripts/env.sh
runner_build
runner=target/debug/runner
if [ ! -d target/ci-shapes ]; then
    "$runner" data synth --out target/ci-shapes --classes 3 --per-class 24 --size 64 --seed 7 >/dev/null
fi
recorded=tests/fixtures/ci_run
if [ "${1:-}" = "--record" ]; then
    rm -rf target/ci-record
    RUNNER_THREADS=2 "$runner" run tests/fixtures/ci_verify.toml --out target/ci-record --quiet
    run_dir=$(ls -d target/ci-record/ci_verify/*/)
    mkdir -p "$recorded"
    cp "$run_dir"/config.toml "$run_dir"/metrics.csv "$run_dir"/summary.json "$run_dir"/manifest.csv "$recorded"/
    echo "recorded $run_dir into $recorded"
fi
"$runner" verify "$recorded" --tolerance "${RUNNER_VERIFY_TOLERANCE:-1e-5}"
