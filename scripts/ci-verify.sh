#!/usr/bin/env bash
# Reruns the committed CI experiment (tests/fixtures/ci_verify.toml) and verifies it
# against its recorded run (tests/fixtures/ci_run: config, metrics, summary) with
# `runner verify`, bit for bit. CI runs on other machines than the one that recorded it
# (Intel or AMD, with or without AVX-512), so the experiment says
# reproducibility = "portable": runner pins libtorch's instruction paths itself
# (src/sys/numerics.rs) and any x86_64 processor with AVX2 gives the same bits.
# RUNNER_VERIFY_TOLERANCE (default 0) allows an absolute difference, for a libtorch
# other than the pinned 2.11.0.
#
#   bash scripts/ci-verify.sh            verify
#   bash scripts/ci-verify.sh --record   record it anew (after a deliberate change of
#                                        runner's numbers; commit tests/fixtures/ci_run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
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
"$runner" verify "$recorded" --fresh --tolerance "${RUNNER_VERIFY_TOLERANCE:-0}"

# The same record on the other vendor's processor, whichever this one is: qemu's user-mode
# emulation of an Intel Haswell (GenuineIntel: MKL's Intel dispatch, Intel's cache sizes,
# AVX2 without AVX-512) and of an AMD EPYC Rome (AuthenticAMD). A rerun in qemu cannot
# restart itself (the new process would run natively), so it gets the portable settings of
# src/sys/numerics.rs here; runner refuses to run if they drift from the code's. About a
# minute each. Skipped where qemu-user is missing (scripts/test.sh installs it).
if [ "${RUNNER_VERIFY_TOLERANCE:-0}" = 0 ] && command -v qemu-x86_64 >/dev/null 2>&1; then
    for cpu in Haswell-v4 EPYC-Rome; do
        echo "ci-verify: the same record on an emulated $cpu (qemu-x86_64 -cpu $cpu)"
        ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=COMPATIBLE,STRICT RUNNER_NUMERICS_PINNED=portable \
            qemu-x86_64 -cpu "$cpu" "$runner" verify "$recorded" --fresh 2> >(grep -v "TCG doesn't support" >&2)
    done
fi
