#!/usr/bin/env python3
"""Builds the tiny random Hugging Face models kiln's import tests use, and their transformers goldens.

Run on a machine with torch and transformers (the lent GPU machine has both; CPU works too):

    python3 tools/make_hf_fixtures.py OUT_DIR

For each architecture it writes OUT_DIR/<arch>/{config.json, model.safetensors, generation_config.json,
golden.json}. golden.json holds, for 3 seeded prompts: the prompt ids, the last-position logits of the
prompt in float32 with eager attention, 32 greedy tokens computed by re-running the full sequence each
step (no KV cache, so the reference does not share kiln's cache logic), and the smallest gap between the
top two logits seen while decoding (a tiny gap would make greedy comparisons fragile).

Weights use a larger initializer range than the defaults so that logits are spread out and greedy
decoding is not decided by rounding noise.
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM

VOCAB = 256
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2)


def configs():
    return {
        "llama": transformers.LlamaConfig(
            **COMMON, num_hidden_layers=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
            rope_theta=500000.0),
        "mistral": transformers.MistralConfig(
            **COMMON, num_hidden_layers=2, sliding_window=8, rope_theta=10000.0, tie_word_embeddings=False),
        "qwen2": transformers.Qwen2Config(
            **COMMON, num_hidden_layers=2, tie_word_embeddings=True, rope_theta=1000000.0),
        "qwen3": transformers.Qwen3Config(
            **COMMON, num_hidden_layers=2, head_dim=16, tie_word_embeddings=True, rope_theta=1000000.0),
        "gemma3": transformers.Gemma3TextConfig(
            **COMMON, num_hidden_layers=4, head_dim=16, sliding_window=8,
            layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
            query_pre_attn_scalar=16, final_logit_softcapping=30.0, rope_theta=1000000.0,
            rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
            hidden_activation="gelu_pytorch_tanh"),
        "gpt2": transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2,
            activation_function="gelu_new"),
    }


def greedy(model, ids, steps):
    ids = list(ids)
    out, min_gap = [], float("inf")
    for _ in range(steps):
        logits = model(torch.tensor([ids])).logits[0, -1].double()
        top2 = torch.topk(logits, 2).values
        min_gap = min(min_gap, float(top2[0] - top2[1]))
        nxt = int(torch.argmax(logits))
        out.append(nxt)
        ids.append(nxt)
    return out, min_gap


def main():
    out_dir = Path(sys.argv[1])
    torch.use_deterministic_algorithms(True)
    print("transformers", transformers.__version__, "torch", torch.__version__)
    for arch, config in configs().items():
        torch.manual_seed(1234)
        config._attn_implementation = "eager"
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
        if arch == "gemma3":
            # Gemma's norm weights start at zero ((1 + w) scaling); give them spread so the offset matters.
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if "norm" in name:
                        p.normal_(0.0, 0.3)
        d = out_dir / arch
        model.save_pretrained(d, safe_serialization=True)
        gen = torch.Generator().manual_seed(99)
        prompts = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in (5, 11, 17)]
        golden = {"architecture": type(model).__name__, "transformers": transformers.__version__,
                  "prompts": [], "last_logits": [], "greedy": [], "min_top2_gap": []}
        with torch.no_grad():
            for p in prompts:
                logits = model(torch.tensor([p])).logits[0, -1]
                toks, gap = greedy(model, p, 32)
                golden["prompts"].append(p)
                golden["last_logits"].append([float(x) for x in logits])
                golden["greedy"].append(toks)
                golden["min_top2_gap"].append(gap)
        (d / "golden.json").write_text(json.dumps(golden))
        spread = max(abs(x) for x in golden["last_logits"][0])
        print(f"{arch:8s} max|logit| {spread:8.3f}  min top-2 gap {min(golden['min_top2_gap']):.2e}  "
              f"files {sorted(f.name for f in d.iterdir())}")


if __name__ == "__main__":
    main()
