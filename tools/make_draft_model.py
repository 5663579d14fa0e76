#!/usr/bin/env python3
"""Writes a draft model for speculative decoding: the first LAYERS decoder layers of a Hugging Face
Llama-family model, with its embeddings, final norm and LM head unchanged (an early exit without a
trained exit head), as a Hugging Face directory with the same tokenizer.

    python3 tools/make_draft_model.py ~/.cache/kiln/smollm2/hf ~/.cache/kiln/smollm2/draft-6 --layers 6
    kiln run ~/.cache/kiln/smollm2/hf --speculate draft:~/.cache/kiln/smollm2/draft-6 ...

It is an honest but weak draft model: nothing is trained, so the hidden state after LAYERS layers is read
by a head that expects the last layer's. Its per-token cost is LAYERS / num_hidden_layers of the decoder
layers plus the whole embedding and head, which for a small-vocabulary-heavy model like SmolLM2-135M
(the 49152 x 576 head is a fifth of the weights) stays well above LAYERS / num_hidden_layers.
"""
import argparse
import json
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="Hugging Face model directory (config.json, model.safetensors)")
    ap.add_argument("out", type=Path, help="directory to write")
    ap.add_argument("--layers", type=int, required=True, help="decoder layers to keep, from the first")
    args = ap.parse_args()

    config = json.loads((args.source / "config.json").read_text())
    total = config["num_hidden_layers"]
    if not 1 <= args.layers < total:
        raise SystemExit(f"--layers must be between 1 and {total - 1} (the model has {total} layers)")
    shards = sorted(args.source.glob("*.safetensors"))
    if not shards:
        raise SystemExit(f"{args.source} has no .safetensors weights")

    kept = {}
    layer = re.compile(r"\.layers\.(\d+)\.")
    for shard in shards:
        for name, tensor in load_file(shard).items():
            m = layer.search(name)
            if m is None or int(m.group(1)) < args.layers:
                kept[name] = tensor

    args.out.mkdir(parents=True, exist_ok=True)
    config["num_hidden_layers"] = args.layers
    for key in ("layer_types",):  # per-layer lists must shrink with the layers
        if isinstance(config.get(key), list):
            config[key] = config[key][: args.layers]
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(kept, str(args.out / "model.safetensors"), metadata={"format": "pt"})
    for extra in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja",
                  "special_tokens_map.json"):
        if (args.source / extra).exists():
            shutil.copy(args.source / extra, args.out / extra)
    size = sum(t.numel() * t.element_size() for t in kept.values())
    print(f"{args.out}: the first {args.layers} of {total} layers, {len(kept)} tensors, {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
