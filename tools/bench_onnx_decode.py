#!/usr/bin/env python3
"""Decode speed of a raised ONNX export against the same model imported from Hugging Face, side by side.

    python3 tools/bench_onnx_decode.py --kiln target/release/kiln \\
        --pair default=models/default:EXPORT_DIR/default/model.onnx \\
        --pair smollm2=~/.cache/kiln/smollm2/hf:EXPORT_DIR/smollm2/model.onnx [--new-tokens 128] [--repeats 5]

Each pair is NAME=HF_DIR:MODEL.onnx, the ONNX file exported from HF_DIR by tools/export_onnx.py (with its
weights next to it; a `--detach-weights` export needs its data file rebuilt first, which kiln's tests do
under $KILN_CACHE/onnx/). For each pair, after one warm-up run each, the two models alternate `repeats`
times through `kiln run --json --ignore-eos` (greedy, same prompt ids, same number of new tokens), so a
machine busy with something else slows both alike. Per-token decode time is `decode_seconds / (new
tokens - 1)` (the first token comes from the prefill). Prints a markdown table with medians and the
ONNX/HF ratio; the greedy tokens of both are compared (they must be identical). No Python dependencies.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

PROMPT_IDS = [1, 31, 2001, 440, 975, 1100, 26, 253, 198, 2012, 30, 3320, 45, 1284, 28, 12, 4011, 7, 77, 199]


def kiln_run(kiln, model, ids, new_tokens):
    cmd = [kiln, "run", str(model), "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", str(new_tokens),
           "--json", "--ignore-eos"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    s = r["stats"]
    return s["prefill_seconds"], s["decode_seconds"] / (len(r["token_ids"]) - 1), r["token_ids"]


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--pair", action="append", required=True, help="NAME=HF_DIR:MODEL.onnx")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {len(PROMPT_IDS)} prompt tokens, {args.new_tokens} new tokens, "
          f"{args.repeats} alternating repeats after a warm-up\n")
    print("| model | import | prefill ms (median) | decode ms/token (min / median / max) | ONNX ÷ HF (median) |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for pair in args.pair:
        name, paths = pair.split("=", 1)
        hf, onnx = (os.path.expanduser(p) for p in paths.rsplit(":", 1))
        runs = {"HF": [], "ONNX": []}
        tokens = {}
        for model, key in ((hf, "HF"), (onnx, "ONNX")):
            tokens[key] = kiln_run(args.kiln, model, PROMPT_IDS, args.new_tokens)[2]
        for _ in range(args.repeats):
            for model, key in ((hf, "HF"), (onnx, "ONNX")):
                prefill, per_token, toks = kiln_run(args.kiln, model, PROMPT_IDS, args.new_tokens)
                if toks != tokens[key]:
                    raise SystemExit(f"{name} {key}: greedy tokens changed between runs")
                runs[key].append((prefill, per_token))
        med = {k: statistics.median(t for _, t in v) for k, v in runs.items()}
        ratio = med["ONNX"] / med["HF"]
        worst = max(worst, ratio)
        for key in ("HF", "ONNX"):
            per = sorted(t for _, t in runs[key])
            prefill = statistics.median(p for p, _ in runs[key])
            cell = f"{ratio:.3f}x" if key == "ONNX" else ""
            print(f"| {name} | {key} | {prefill * 1e3:.1f} | {per[0] * 1e3:.2f} / {med[key] * 1e3:.2f} / "
                  f"{per[-1] * 1e3:.2f} | {cell} |")
        same = tokens["HF"] == tokens["ONNX"]
        print(f"| {name} | greedy tokens identical | {same} | | |")
        if not same:
            raise SystemExit(f"{name}: the ONNX export decodes other tokens than the HF import")
    print(f"\nworst ONNX/HF per-token decode time ratio: {worst:.3f}x")


if __name__ == "__main__":
    main()
