#!/usr/bin/env python3
"""Trains kiln's default model: a small Llama-architecture decoder for Python code, with its own tokenizer.

Runs on the lent GPU machine (torch, transformers and tokenizers are there; no network needed):

    python3 tools/train_default_model.py OUT_DIR [--seconds 270]

Data: the Python standard library and installed packages of the machine it runs on (up to 60 MB of .py
files; a fixed 2% of files held out). Tokenizer: byte-level BPE with 4096 entries trained on the same files. Model: LlamaForCausalLM,
hidden 256, 4 layers, 8 heads with 4 KV heads (GQA), SwiGLU 512, tied embeddings, about 3.4M parameters,
saved in bfloat16 (under 8 MB).

Induction: a quarter of the training sequences have a span copied from earlier in the same sequence to
a later point, so that the model learns to continue by copying from its context, which larger models do and
which n-gram speculative decoding relies on.

Writes OUT_DIR/model (Hugging Face layout: config.json, generation_config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) and OUT_DIR/goldens (transformers float32 references: golden.json
with prompts, ids, 64 greedy tokens each, decoded text; logits_<i>.f32 last-position logits).
"""
import argparse
import json
import math
import random
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB, SEQ, BATCH = 4096, 512, 64
EOT = "<|endoftext|>"
PROMPTS = [
    "def fibonacci(n):",
    "import os\nimport sys\n\n\ndef main():",
    "class Stack:\n    \"\"\"A last-in first-out stack.\"\"\"\n\n    def __init__(self):",
    "def parse_args(argv):\n    parser = argparse.ArgumentParser()\n    parser.add_argument(\"--input\")\n"
    "    parser.add_argument(\"--output\")\n    return parser.parse_args(argv)\n\n\ndef parse_config(argv):",
]


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def python_files(limit_bytes=60_000_000):
    """The standard library, then installed packages (sorted, so the choice is reproducible on one image)."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    texts, total = [], 0
    for root in roots:
        for p in sorted(root.rglob("*.py")):
            if total > limit_bytes or (root == roots[0] and "site-packages" in p.parts):
                continue
            try:
                if not 200 < p.stat().st_size < 200_000:
                    continue
                text = p.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            texts.append(text)
            total += len(text)
    log(f"{len(texts)} files, {total / 1e6:.1f} MB of Python from {[str(r) for r in roots]}")
    return texts


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOT], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=None,
                                   model_max_length=2048)


def with_copied_spans(seq, rng):
    """Copies 1-3 spans from earlier in `seq` to later positions (induction examples)."""
    n, out = len(seq), seq.copy()
    for _ in range(rng.randint(1, 3)):
        length = rng.randint(8, 128)
        src = rng.randint(0, n // 2 - length)
        dst = rng.randint(src + length, n - length)
        out[dst:dst + length] = out[src:src + length]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=270)
    args = ap.parse_args()
    t0 = time.time()
    random.seed(0)
    torch.manual_seed(0)
    texts = python_files()
    rng = random.Random(0)
    order = list(range(len(texts)))
    rng.shuffle(order)
    held_out = set(order[: len(order) // 50])
    train_texts = [t for i, t in enumerate(texts) if i not in held_out]
    test_texts = [t for i, t in enumerate(texts) if i in held_out]

    hf_tok = train_tokenizer(train_texts)
    eot = hf_tok.convert_tokens_to_ids(EOT)
    enc = hf_tok.backend_tokenizer.encode_batch(train_texts)
    stream = np.concatenate([np.array(e.ids + [eot], dtype=np.int64) for e in enc])
    test_stream = np.concatenate(
        [np.array(e.ids + [eot], dtype=np.int64) for e in hf_tok.backend_tokenizer.encode_batch(test_texts)])
    log(f"tokenizer trained: {len(stream) / 1e6:.2f}M train tokens ({sum(map(len, train_texts)) / len(stream):.2f} "
        f"chars/token), {len(test_stream) / 1e6:.2f}M held out; {time.time() - t0:.0f}s")

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=2048,
                         rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         bos_token_id=eot, eos_token_id=eot, initializer_range=0.02)
    dev = torch.device("cuda")
    model = LlamaForCausalLM(config).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    data = torch.from_numpy(stream).to(dev)
    test = torch.from_numpy(test_stream).to(dev)
    warmup, step, budget = 200, 0, args.seconds
    train_start = time.time()
    expected_steps = None
    while True:
        elapsed = time.time() - train_start
        if elapsed > budget:
            break
        if step == 100:
            expected_steps = int(budget / (elapsed / 100))
        total = expected_steps or 10_000
        lr = 3e-3 * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(data) - SEQ - 1, (BATCH,), device=dev)
        batch = torch.stack([data[s:s + SEQ + 1] for s in starts.tolist()]).cpu().numpy()
        for i in range(BATCH // 2):  # half of the batch teaches copying from context
            batch[i] = with_copied_spans(batch[i], rng)
        batch = torch.from_numpy(batch).to(dev)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=batch[:, :-1]).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 500 == 0:
            log(f"step {step:6d}  loss {loss.item():.3f}  lr {lr:.2e}")
        step += 1

    model.eval()
    with torch.no_grad():
        losses = []
        for s in range(0, min(len(test) - SEQ - 1, 200 * SEQ), SEQ):
            x = test[s:s + SEQ + 1][None]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = model(input_ids=x[:, :-1]).logits.float()
            losses.append(torch.nn.functional.cross_entropy(logits[0], x[0, 1:]).item())
        # Induction: held-out chunks followed by themselves; top-1 accuracy on the second copies.
        accs = []
        for s in range(0, 16 * 256, 256):
            x = test[s:s + 256][None]
            rep = torch.cat([x, x], dim=1)
            logits = model(input_ids=rep).logits.float()
            accs.append((logits[0, 256:-1].argmax(-1) == rep[0, 257:]).float().mean().item())
        copy_acc = float(np.mean(accs))
    log(f"trained {step} steps in {time.time() - train_start:.0f}s; held-out loss {np.mean(losses):.3f} "
        f"(ppl {math.exp(np.mean(losses)):.1f}); copy accuracy on a repeated held-out chunk {copy_acc:.3f}")

    out = args.out / "model"
    model = model.to(torch.bfloat16).cpu()
    model.generation_config.eos_token_id = eot
    model.generation_config.bos_token_id = eot
    model.save_pretrained(out, safe_serialization=True)
    hf_tok.save_pretrained(out)
    log(f"saved: {sorted((p.name, p.stat().st_size) for p in out.iterdir())}")

    # References: transformers in float32 on the CPU, eager attention, from the saved bf16 weights.
    ref = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    tok = PreTrainedTokenizerFast.from_pretrained(out)
    gold_dir = args.out / "goldens"
    gold_dir.mkdir(parents=True, exist_ok=True)
    golden = {"transformers": transformers.__version__, "torch": torch.__version__, "trained_steps": step,
              "held_out_loss": float(np.mean(losses)), "copy_accuracy": copy_acc, "parameters": n_params,
              "prompts": []}
    with torch.no_grad():
        for i, text in enumerate(PROMPTS):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = ref(torch.tensor([ids])).logits[0, -1]
            np.asarray(logits, dtype="<f4").tofile(gold_dir / f"logits_{i}.f32")
            seq, greedy, gap = list(ids), [], float("inf")
            for _ in range(64):
                l = ref(torch.tensor([seq])).logits[0, -1].double()
                t2 = torch.topk(l, 2).values
                gap = min(gap, float(t2[0] - t2[1]))
                nxt = int(l.argmax())
                greedy.append(nxt)
                seq.append(nxt)
            golden["prompts"].append({"text": text, "ids": ids, "greedy": greedy, "min_top2_gap": gap,
                                      "max_abs_logit": float(logits.abs().max()), "greedy_text": tok.decode(greedy)})
            log(f"prompt {i}: gap {gap:.2e}\n{text}{tok.decode(greedy)}\n" + "-" * 60)
    (gold_dir / "golden.json").write_text(json.dumps(golden, indent=1))
    log(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
