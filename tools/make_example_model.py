#!/usr/bin/env python3
"""Writes examples/tiny-llama.kir and examples/tiny-llama.safetensors: a 2-layer Llama-architecture
decoder (GQA, rotary embeddings, SwiGLU MLP, tied embeddings) with seeded random weights.

It is the model the README's first command runs until the Hugging Face importer lands: small enough to
commit (~40 KB), and it exercises every model-level op the CPU executor has, with f32 and f16 weights.
Pure Python (no numpy) so it runs anywhere; the output is byte-for-byte deterministic.

    python3 tools/make_example_model.py [OUT_DIR]
"""
import json
import math
import random
import struct
import sys
from pathlib import Path

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 64, 32, 2, 4, 2, 8, 64
ROPE_THETA, EPS = 10000.0, "1e-5"  # EPS as kiln prints it


def f32_text(x):
    """The shortest decimal that rounds to the same f32, as kiln's text form prints floats."""
    target = struct.unpack("<f", struct.pack("<f", x))[0]
    for digits in range(1, 10):
        s = f"{target:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(s)))[0] == target:
            return s if any(c in s for c in ".e") else s + ".0"
    raise AssertionError(x)


def tensor(rng, shape, std, dtype="F32"):
    n = math.prod(shape)
    values = [rng.gauss(0.0, std) for _ in range(n)]
    fmt = {"F32": "<f", "F16": "<e"}[dtype]
    return dtype, shape, b"".join(struct.pack(fmt, v) for v in values)


def ones(shape):
    return "F32", shape, b"".join(struct.pack("<f", 1.0) for _ in range(math.prod(shape)))


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "examples"
    rng = random.Random(20261121)
    w = {"embed": tensor(rng, [VOCAB, HIDDEN], 1.0), "final_norm": ones([HIDDEN])}
    scale = 1.0 / math.sqrt(HIDDEN)
    for l in range(LAYERS):
        p = f"layers.{l}."
        w[p + "attn_norm"] = ones([HIDDEN])
        w[p + "wq"] = tensor(rng, [HEADS * HEAD_DIM, HIDDEN], scale)
        w[p + "wk"] = tensor(rng, [KV_HEADS * HEAD_DIM, HIDDEN], scale)
        w[p + "wv"] = tensor(rng, [KV_HEADS * HEAD_DIM, HIDDEN], scale)
        w[p + "wo"] = tensor(rng, [HIDDEN, HEADS * HEAD_DIM], scale)
        w[p + "mlp_norm"] = ones([HIDDEN])
        w[p + "w_gate"] = tensor(rng, [FFN, HIDDEN], scale, "F16")
        w[p + "w_up"] = tensor(rng, [FFN, HIDDEN], scale, "F16")
        w[p + "w_down"] = tensor(rng, [HIDDEN, FFN], 1.0 / math.sqrt(FFN), "F16")
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "tiny-llama.safetensors", w)

    lines, n = [], [2]  # %0 = ids, %1 = positions

    def node(text):
        v = f"%{n[0]}"
        n[0] += 1
        lines.append(f"  {v} = {text}")
        return v

    def weight(name):
        dtype, shape, _ = w[name]
        return node(f'weight {{name = "{name}"}} : {dtype.lower()}[{", ".join(map(str, shape))}]')

    act = lambda d: f"f32[1, seq, {d}]"
    heads4 = lambda h: f"f32[1, seq, {h}, {HEAD_DIM}]"
    emb = weight("embed")
    x = node(f"embedding({emb}, %0) : {act(HIDDEN)}")
    q_shape = node(f"constant {{value = [0, 0, {HEADS}, {HEAD_DIM}]}} : i64[4]")
    kv_shape = node(f"constant {{value = [0, 0, {KV_HEADS}, {HEAD_DIM}]}} : i64[4]")
    flat = node(f"constant {{value = [0, 0, {HEADS * HEAD_DIM}]}} : i64[3]")
    rope = f"{{style = half, theta = {ROPE_THETA}, rotary_dim = {HEAD_DIM}, scaling = none}}"
    for l in range(LAYERS):
        p = f"layers.{l}."
        h = node(f"rms_norm({x}, {weight(p + 'attn_norm')}) {{eps = {EPS}, offset = 0.0}} : {act(HIDDEN)}")
        q = node(f"linear({h}, {weight(p + 'wq')}) : {act(HEADS * HEAD_DIM)}")
        k = node(f"linear({h}, {weight(p + 'wk')}) : {act(KV_HEADS * HEAD_DIM)}")
        v = node(f"linear({h}, {weight(p + 'wv')}) : {act(KV_HEADS * HEAD_DIM)}")
        q = node(f"reshape({q}, {q_shape}) {{allowzero = false}} : {heads4(HEADS)}")
        k = node(f"reshape({k}, {kv_shape}) {{allowzero = false}} : {heads4(KV_HEADS)}")
        v = node(f"reshape({v}, {kv_shape}) {{allowzero = false}} : {heads4(KV_HEADS)}")
        q = node(f"rope({q}, %1) {rope} : {heads4(HEADS)}")
        k = node(f"rope({k}, %1) {rope} : {heads4(KV_HEADS)}")
        a = node(f"attention({q}, {k}, {v}, %1) {{layer = {l}, scale = {f32_text(1 / math.sqrt(HEAD_DIM))}, causal = true, sinks = 0}} : {heads4(HEADS)}")
        a = node(f"reshape({a}, {flat}) {{allowzero = false}} : {act(HEADS * HEAD_DIM)}")
        o = node(f"linear({a}, {weight(p + 'wo')}) : {act(HIDDEN)}")
        x = node(f"add({x}, {o}) : {act(HIDDEN)}")
        h = node(f"rms_norm({x}, {weight(p + 'mlp_norm')}) {{eps = {EPS}, offset = 0.0}} : {act(HIDDEN)}")
        g = node(f"linear({h}, {weight(p + 'w_gate')}) : {act(FFN)}")
        u = node(f"linear({h}, {weight(p + 'w_up')}) : {act(FFN)}")
        s = node(f"swiglu({g}, {u}) : {act(FFN)}")
        d = node(f"linear({s}, {weight(p + 'w_down')}) : {act(HIDDEN)}")
        x = node(f"add({x}, {d}) : {act(HIDDEN)}")
    h = node(f"rms_norm({x}, {weight('final_norm')}) {{eps = {EPS}, offset = 0.0}} : {act(HIDDEN)}")
    logits = node(f"logits({h}, {emb}) : {act(VOCAB)}")
    text = "\n".join(
        [
            "// A 2-layer Llama-architecture decoder with seeded random weights, written by",
            "// tools/make_example_model.py. Inputs: token ids and their positions; output: logits.",
            "graph @tiny_llama(%0: i64[1, seq], %1: i64[1, seq]) {",
            *lines,
            f"  return {logits}",
            "}",
            "",
        ]
    )
    (out / "tiny-llama.kir").write_text(text)


if __name__ == "__main__":
    main()
