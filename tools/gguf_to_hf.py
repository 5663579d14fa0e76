#!/usr/bin/env python3
"""Converts a llama-architecture GGUF file into a Hugging Face model directory (float32), for testing
kiln's Hugging Face importer on real weights.

    python3 tools/gguf_to_hf.py MODEL.gguf OUT_DIR

Needs `gguf`, `numpy` and `safetensors`; with `transformers` and `torch` installed it also writes the
tokenizer transformers builds from the GGUF metadata.
Weights are dequantized with the gguf package's reference dequantizers and llama.cpp's row permutation of
the Q and K projections is undone, so the directory holds the same float32 model transformers builds when
it loads the GGUF itself. Only the `llama` architecture is handled (it is what SmolLM2 uses).
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def field(reader, key):
    f = reader.fields[key]
    value = f.parts[f.data[0]]
    if f.types[0].name == "STRING":
        return bytes(value).decode()
    return value.tolist()[0] if hasattr(value, "tolist") else value


def hf_name(name):
    if name in NAMES:
        return NAMES[name]
    _, layer, kind, suffix = name.split(".", 3)
    return f"model.layers.{layer}.{LAYER_NAMES[kind]}.{suffix}"


def unpermute(w, heads):
    """Inverse of llama.cpp's convert-time permutation, which interleaves the two rotary halves per head."""
    # llama.cpp stores row (h, i, j) of a head's [2, d/2] halves at (h, j, i); swap back.
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    reader = GGUFReader(src)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"{src}: architecture {arch!r} is not handled by this converter (only llama)")
    get = lambda k: field(reader, f"llama.{k}")
    heads, kv_heads = get("attention.head_count"), get("attention.head_count_kv")
    tensors = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        elif t.name.endswith("attn_k.weight"):
            # llama.cpp permutes K with the KV head count as the head count.
            w = unpermute(w, kv_heads)
        tensors[hf_name(t.name)] = np.ascontiguousarray(w)
    tied = "lm_head.weight" not in tensors
    vocab, hidden = tensors["model.embed_tokens.weight"].shape
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": get("feed_forward_length"), "num_hidden_layers": get("block_count"),
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "max_position_embeddings": get("context_length"), "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
        "rope_theta": get("rope.freq_base"), "tie_word_embeddings": tied, "hidden_act": "silu",
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"), "torch_dtype": "float32",
    }
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}, indent=2))
    try:
        # transformers' GGUF tokenizer conversion imports torch; CI has none and does not need the
        # tokenizer (its tests feed token ids), so the directory is then written without one.
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name).save_pretrained(out)
        tokenizer = "with its tokenizer"
    except ImportError as e:
        tokenizer = f"without a tokenizer ({e})"
    print(f"{src} -> {out}: {len(tensors)} tensors, tied embeddings: {tied}, {tokenizer}")


if __name__ == "__main__":
    main()
