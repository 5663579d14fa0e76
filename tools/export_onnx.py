#!/usr/bin/env python3
"""Exports a Hugging Face causal LM to ONNX with torch.onnx.export(dynamo=True), as kiln's ONNX tests use it.

    /opt/bench-venv/bin/python tools/export_onnx.py HF_DIR OUT.onnx [--detach-weights] [--check]

The graph is logits-only: input `input_ids: int64[1, seq]` (seq dynamic), output `logits: float32[1, seq,
vocab]`, exported in float32 with the default (sdpa) attention and the exporter's default optimisation, the
way a user exports a model. No KV cache: kiln's raising pass (passes/src/raise_decoder.rs) recognises the
attention subgraphs and gives them the runtime KV cache.

--detach-weights makes the .onnx small enough to commit although the weights are not: every initializer
that equals a tensor of HF_DIR/model.safetensors (as float32, possibly transposed, as the exporter folds
`x @ W.T` into a pre-transposed initializer) is stored as external data in OUT.onnx.data, in a canonical
layout (manifest order, float32 little-endian, no padding), and OUT.weights.json records for each of them
the source tensor, whether it is transposed, its offset and its length. kiln's tests rebuild OUT.onnx.data
from the safetensors file with that manifest (tests/src/onnx_exports.rs), so CI needs no torch. Initializers
that match no source tensor (rotary inverse frequencies, shape constants) stay inline.

--check runs the exported graph with onnx.reference on one prompt and compares its last-position logits
with transformers (slow for large models: use it on the tiny ones).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def export(hf_dir: Path, out: Path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()

    class LogitsOnly(torch.nn.Module):
        """`input_ids -> logits`, without the cache objects a CausalLM returns."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, use_cache=False).logits

    example = torch.tensor([[1, 2, 3, 4, 5]], dtype=torch.long)
    seq = torch.export.Dim("seq", min=1, max=4096)
    program = torch.onnx.export(LogitsOnly(model).eval(), (example,), dynamo=True, input_names=["input_ids"],
                                output_names=["logits"], dynamic_shapes={"input_ids": {1: seq}})
    out.parent.mkdir(parents=True, exist_ok=True)
    # One file with every initializer inline (detach_weights moves the large ones out afterwards).
    program.save(str(out), external_data=False)
    return model


def source_tensors(hf_dir: Path):
    import torch
    from safetensors.torch import load_file as load_torch

    # bf16 has no numpy dtype: read through torch and widen to float32 (exact).
    tensors = load_torch(str(hf_dir / "model.safetensors"))
    return {name: t.float().numpy() for name, t in tensors.items()}


def detach_weights(out: Path, hf_dir: Path, min_elements: int = 1024):
    model = onnx.load(str(out))
    sources = source_tensors(hf_dir)
    by_shape = {}
    for name, t in sources.items():
        by_shape.setdefault(t.shape, []).append((name, False))
        if t.ndim == 2:
            by_shape.setdefault(t.shape[::-1], []).append((name, True))
    data_name = out.name + ".data"
    manifest, offset, blobs, inline = [], 0, [], 0
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype != np.float32 or value.size < min_elements:
            inline += value.nbytes
            continue
        match = None
        for name, transposed in by_shape.get(value.shape, []):
            src = sources[name].T if transposed else sources[name]
            if np.array_equal(src, value):
                match = (name, transposed)
                break
        if match is None:
            print(f"export_onnx: initializer {init.name} {list(value.shape)} matches no source tensor; kept inline",
                  file=sys.stderr)
            inline += value.nbytes
            continue
        raw = np.ascontiguousarray(value, dtype="<f4").tobytes()
        manifest.append({"initializer": init.name, "source": match[0], "transposed": match[1],
                         "offset": offset, "length": len(raw)})
        blobs.append(raw)
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
        offset += len(raw)
    # The per-node debug records (namespaces, stack traces with this machine's paths) are most of the file
    # and no part of the computation.
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(out))
    (out.parent / data_name).write_bytes(b"".join(blobs))
    (out.parent / (out.stem + ".weights.json")).write_text(json.dumps(
        {"data_file": data_name, "source": "model.safetensors", "dtype": "float32", "tensors": manifest},
        indent=1) + "\n")
    print(f"export_onnx: {len(manifest)} initializers ({offset} bytes) detached to {data_name}; "
          f"{inline} bytes inline", file=sys.stderr)


def check(out: Path, model):
    import torch
    from onnx.reference import ReferenceEvaluator

    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], dtype=np.int64) % model.config.vocab_size
    sess = ReferenceEvaluator(str(out))
    got = sess.run(None, {"input_ids": ids})[0][0, -1]
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits[0, -1].numpy()
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"export_onnx: onnx.reference vs transformers, last-position logits: max diff {rel:.2e} of max|logit|",
          file=sys.stderr)
    if rel > 1e-4:
        sys.exit(f"export_onnx: the exported graph disagrees with transformers ({rel:.2e})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--detach-weights", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    model = export(args.hf_dir, args.out)
    if args.check:
        check(args.out, model)
    if args.detach_weights:
        detach_weights(args.out, args.hf_dir)
    print(f"export_onnx: wrote {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
