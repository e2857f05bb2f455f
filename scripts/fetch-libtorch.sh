#!/usr/bin/env bash
# Fetch a CPU-only libtorch 2.11.0 into DEST (default: the per-user cache), once.
#
# The PyPI torch==2.11.0 wheel for Linux x86_64 is the CUDA build; its CPU
# libraries and headers are all tch needs. libtorch_cpu.so lists libcudart and
# libcupti as DT_NEEDED (for its profiler), so those two come from their small
# nvidia wheels; nothing calls them on a machine without a GPU.
set -euo pipefail
version=2.11.0
dest="${1:-${RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner}/libtorch-$version-cpu}"

if [ -f "$dest/.complete" ]; then
    exit 0
fi
case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) ;;
    *) echo "fetch-libtorch: only Linux x86_64 is automated; set LIBTORCH to an unpacked libtorch $version" >&2
       exit 1 ;;
esac

echo "fetch-libtorch: fetching libtorch $version (CPU) into $dest" >&2
work="$(mktemp -d "${TMPDIR:-/tmp}/runner-libtorch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheels" \
    "torch==$version" 'nvidia-cuda-runtime==13.0.96.*' 'nvidia-cuda-cupti==13.0.85.*'

python3 - "$work/wheels" "$work/libtorch" <<'PY'
import pathlib, shutil, sys, zipfile

wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(out / "lib").mkdir(parents=True)
keep_torch_libs = {"libc10.so", "libtorch_cpu.so", "libtorch.so", "libgomp.so.1",
                   "libshm.so", "libtorch_global_deps.so"}
keep_nvidia_libs = {"libcudart.so.13", "libcupti.so.13"}

def extract(zf, member, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)

found = set()
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            base = name.rsplit("/", 1)[-1]
            if name.startswith("torch/include/") and not name.endswith("/"):
                extract(zf, info, out / "include" / name[len("torch/include/"):])
            elif name.startswith("torch/lib/") and base in keep_torch_libs:
                extract(zf, info, out / "lib" / base); found.add(base)
            elif name.startswith("nvidia/") and "/lib/" in name and base in keep_nvidia_libs:
                extract(zf, info, out / "lib" / base); found.add(base)
missing = (keep_torch_libs | keep_nvidia_libs) - found
if missing:
    sys.exit(f"fetch-libtorch: the wheels lacked {sorted(missing)}")
PY
# torch-sys reads the version from this file when it exists.
echo "$version" > "$work/libtorch/build-version"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$work/libtorch" "$dest"
touch "$dest/.complete"
echo "fetch-libtorch: done ($(du -sh "$dest" | cut -f1))" >&2
