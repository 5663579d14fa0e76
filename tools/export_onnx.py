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

--with-past exports the ONNX Runtime / Optimum decoder interface instead: inputs `input_ids`,
`attention_mask`, `position_ids` and `past_key_values.{i}.key|value`, outputs `logits` and
`present.{i}.key|value`. kiln binds that interface to its own KV cache on import
(frontends/src/onnx/cache_interface.rs).

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


def export(hf_dir: Path, out: Path, with_past: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    if with_past:
        return export_with_past(model, out)

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


def cache_shape(config):
    """(layers, kv_heads, head_dim) of a decoder config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, kv_heads, head_dim


def export_with_past(model, out: Path):
    """The ONNX Runtime / Optimum decoder interface: inputs `input_ids`, `attention_mask` ([1, past + seq]),
    `position_ids` and `past_key_values.{i}.key|value` ([1, kv_heads, past, head_dim]); outputs `logits` and
    `present.{i}.key|value` (the past with this step appended)."""
    import torch
    from transformers import DynamicCache

    layers, kv_heads, head_dim = cache_shape(model.config)

    class WithPast(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            o = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       past_key_values=cache, use_cache=True)
            presents = []
            for layer in o.past_key_values.layers:
                presents += [layer.keys, layer.values]
            return (o.logits, *presents)

    past_len, seq_len = 3, 2
    example = (torch.tensor([[5, 6]]), torch.ones(1, past_len + seq_len, dtype=torch.long), torch.tensor([[3, 4]]),
               *[torch.randn(1, kv_heads, past_len, head_dim) for _ in range(2 * layers)])
    seq = torch.export.Dim("seq", min=1, max=4096)
    past = torch.export.Dim("past", min=1, max=4096)
    total = torch.export.Dim("total", min=2, max=8192)
    past_names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    dynamic = {"input_ids": {1: seq}, "attention_mask": {1: total}, "position_ids": {1: seq},
               "past": tuple({2: past} for _ in range(2 * layers))}
    program = torch.onnx.export(WithPast(model).eval(), example, dynamo=True,
                                input_names=["input_ids", "attention_mask", "position_ids", *past_names],
                                output_names=["logits", *present_names], dynamic_shapes=dynamic)
    out.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(out), external_data=False)
    return model


def check_with_past(out: Path, model):
    """onnx.reference on 3 new tokens after a 5-token past computed by transformers, against transformers'
    logits for all 8 tokens at the last 3 positions."""
    import torch
    from onnx.reference import ReferenceEvaluator

    layers, _, _ = cache_shape(model.config)
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], dtype=np.int64) % model.config.vocab_size
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits[0, 5:].numpy()
        cache = model(torch.from_numpy(ids[:, :5]), use_cache=True).past_key_values
    feeds = {"input_ids": ids[:, 5:], "attention_mask": np.ones((1, 8), dtype=np.int64),
             "position_ids": np.array([[5, 6, 7]], dtype=np.int64)}
    for i, layer in enumerate(cache.layers[:layers]):
        feeds[f"past_key_values.{i}.key"] = layer.keys.numpy()
        feeds[f"past_key_values.{i}.value"] = layer.values.numpy()
    got = ReferenceEvaluator(str(out)).run(None, feeds)[0][0]
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"export_onnx: onnx.reference with a past vs transformers, logits of the new tokens: max diff {rel:.2e} "
          f"of max|logit|", file=sys.stderr)
    if rel > 1e-4:
        sys.exit(f"export_onnx: the exported graph disagrees with transformers ({rel:.2e})")


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
    ap.add_argument("--with-past", action="store_true",
                    help="export the ONNX Runtime / Optimum cache interface (past_key_values inputs, present outputs)")
    args = ap.parse_args()
    model = export(args.hf_dir, args.out, args.with_past)
    if args.check:
        (check_with_past if args.with_past else check)(args.out, model)
    if args.detach_weights:
        detach_weights(args.out, args.hf_dir)
    print(f"export_onnx: wrote {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
