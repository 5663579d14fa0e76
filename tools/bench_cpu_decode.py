#!/usr/bin/env python3
"""CPU greedy decoding speed: kiln against transformers, side by side in one run.

    python3 tools/bench_cpu_decode.py --kiln target/release/kiln --model DIR [--new-tokens 128] [--repeats 3]

DIR is a Hugging Face model directory (float32 SmolLM2-135M-Instruct converted by tools/gguf_to_hf.py,
for example); both engines load the same files. For each engine and repeat, after one warm-up run:
prefill time of the prompt, then decode tokens/s over the remaining new tokens (greedy, batch 1, KV cache
on, float32). transformers runs eager and sdpa attention with torch using every core, as kiln does.
Prints a markdown table with medians and the kiln/transformers ratio; the greedy tokens of both engines
are compared too (they should agree).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "def quicksort(items):\n    \"\"\"Sort a list with the quicksort algorithm.\"\"\"\n"


def kiln_run(kiln, model, ids, new_tokens):
    cmd = [kiln, "run", model, "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", str(new_tokens),
           "--json", "--ignore-eos"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    s = r["stats"]
    return s["prefill_seconds"], (len(r["token_ids"]) - 1) / s["decode_seconds"], r["token_ids"]


def hf_run(model, ids, new_tokens):
    x = torch.tensor([ids])
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(x, use_cache=True)
        prefill = time.perf_counter() - t0
        past, tok = out.past_key_values, int(out.logits[0, -1].argmax())
        toks = [tok]
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            out = model(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, int(out.logits[0, -1].argmax())
            toks.append(tok)
        decode = time.perf_counter() - t1
    return prefill, (new_tokens - 1) / decode, toks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    ids = AutoTokenizer.from_pretrained(args.model)(PROMPT, add_special_tokens=False)["input_ids"]
    rows = {}
    for name, fn in [("kiln", lambda: kiln_run(args.kiln, args.model, ids, args.new_tokens))] + [
        (f"transformers ({attn})", (lambda m: lambda: hf_run(m, ids, args.new_tokens))(
            AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=attn).eval()))
        for attn in ("eager", "sdpa")
    ]:
        fn()  # warm-up
        runs = [fn() for _ in range(args.repeats)]
        rows[name] = runs
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; prompt {len(ids)} tokens, {args.new_tokens} new tokens, "
          f"{args.repeats} repeats after a warm-up\n")
    print("| engine | prefill ms (median) | decode tok/s (min / median / max) | kiln ÷ engine |")
    print("|---|---|---|---|")
    kiln_med = statistics.median(r[1] for r in rows["kiln"])
    for name, runs in rows.items():
        tps = sorted(r[1] for r in runs)
        med = statistics.median(tps)
        print(f"| {name} | {statistics.median(r[0] for r in runs) * 1e3:.1f} | {tps[0]:.1f} / {med:.1f} / {tps[-1]:.1f} "
              f"| {kiln_med / med:.2f}x |")
    same = rows["kiln"][0][2] == rows["transformers (eager)"][0][2]
    print(f"\ngreedy tokens identical (kiln vs transformers eager): {same}")


if __name__ == "__main__":
    main()
