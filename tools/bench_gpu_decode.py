#!/usr/bin/env python3
"""Batch-1 GPU decode against the memory-bandwidth roofline and against transformers (issue 8).

Runs on the GPU machine, in one process tree, and measures side by side:
  * the device copy bandwidth (a large device-to-device copy, bytes read + bytes written): the roofline;
  * cuBLAS bf16 matrix throughput on the GEMM shapes of a 512-token prefill (through torch.matmul);
  * for each model: kiln decode tokens/s (`kiln bench`; greedy, and sampled with SAMPLED's settings for a
    column of its own), transformers eager and sdpa decode tokens/s on the
    same prompt, and each as % of the roofline (weights read once per token + the KV cache in the model's
    dtype); kiln's 512-token prefill in TFLOP/s against cuBLAS;
  * a per-kernel profile of kiln's decode step (KILN_CUDA_PROFILE=1);
  * the first 32 greedy tokens of the float32 1B shape on the GPU against kiln's CPU executor.

Models are random-weight Llama shapes generated here with transformers (Llama-3.1-8B: hidden 4096, 32 layers,
32 heads, 8 KV heads, FFN 14336; Llama-3.2-1B: hidden 2048, 16 layers, FFN 8192, tied embeddings; vocab
128256), saved as Hugging Face directories and compiled by kiln; optionally SmolLM2-135M from --smollm2.

    python3 tools/bench_gpu_decode.py --kiln PATH/TO/kiln --work /tmp/bench --out OUT.md [--models 1b,8b]
        [--smollm2 DIR] [--check-f32]

Prints a markdown report and writes it to --out, which it also rewrites after each model (marked partial
until the end), so that a run cut short by a time limit still leaves what it measured.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
PROMPT_TOKENS = 128
NEW_TOKENS = 256
PREFILL_TOKENS = 512
# kiln's sampled decode, reported next to the greedy one (the settings of a typical chat client).
SAMPLED = ("--temperature", "0.8", "--top-p", "0.9", "--seed", "1")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def prompt_ids(n, vocab, seed=1):
    import random
    r = random.Random(seed)
    return [r.randrange(1000, min(vocab, 100000)) for _ in range(n)]


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def copy_bandwidth():
    import torch
    n = 1 << 30  # 1 GiB of bytes each way, many times the L2
    a = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    times = []
    for i in range(25):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        if i >= 5:
            times.append(s.elapsed_time(e) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / median(times)


def cublas_prefill_rate(shape, m=PREFILL_TOKENS):
    """bf16 TFLOP/s of torch.matmul (cuBLAS) over one layer's GEMMs of an m-token prefill, random data."""
    import torch
    h, f = shape["hidden_size"], shape["intermediate_size"]
    kv = shape["num_key_value_heads"] * h // shape["num_attention_heads"]
    gemms = [(h, h), (h, kv), (h, kv), (h, h), (h, f), (h, f), (f, h)]  # (K, N): q k v o gate up down
    xs = {k: torch.randn(m, k, dtype=torch.bfloat16, device="cuda") for k in {k for k, _ in gemms}}
    ws = [torch.randn(k, n, dtype=torch.bfloat16, device="cuda") * 0.02 for k, n in gemms]
    flops = sum(2 * m * k * n for k, n in gemms)
    times = []
    for i in range(30):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for (k, _), w in zip(gemms, ws):
            torch.matmul(xs[k], w)
        e.record()
        e.synchronize()
        if i >= 5:
            times.append(s.elapsed_time(e) / 1e3)
    big = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    t8 = []
    for i in range(8):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.matmul(big, big)
        e.record()
        e.synchronize()
        if i >= 3:
            t8.append(s.elapsed_time(e) / 1e3)
    del xs, ws, big
    torch.cuda.empty_cache()
    return flops / median(times), 2 * 8192 ** 3 / median(t8)


def make_model(name, shape, out, dtype):
    """A random-weight Llama of `shape` saved as a Hugging Face directory (generated on the GPU)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    if os.path.exists(os.path.join(out, "config.json")):
        return
    torch.manual_seed(0)
    cfg = LlamaConfig(**shape, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2)
    t = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(out, max_shard_size="4GB")
    del model
    torch.cuda.empty_cache()
    log(f"{name}: generated {out} in {time.time() - t:.1f} s")


def weight_bytes(shape, dtype_bytes):
    """Bytes a decode step must read: every weight once (the embedding table only as the tied lm_head)."""
    h, f, L, v = (shape[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size"))
    kv = shape["num_key_value_heads"] * h // shape["num_attention_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * f + 2 * h
    total = L * per_layer + h + v * h  # layers, final norm, lm_head (tied or not, read once)
    return total * dtype_bytes


def kv_bytes(shape, context, dtype_bytes):
    h, L = shape["hidden_size"], shape["num_hidden_layers"]
    kv = shape["num_key_value_heads"] * h // shape["num_attention_heads"]
    return 2 * L * kv * context * dtype_bytes


def hf_shape(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    shape = {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                 "vocab_size")}
    shape["num_key_value_heads"] = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    shape["tie_word_embeddings"] = cfg.get("tie_word_embeddings", False)
    return shape


def transformers_decode(model_dir, attn, ids, new_tokens):
    """Decode tokens/s of transformers generate() (greedy, bf16) in a child process, which frees the GPU."""
    code = f"""
import json, time, torch
from transformers import AutoModelForCausalLM
m = AutoModelForCausalLM.from_pretrained({model_dir!r}, dtype=torch.bfloat16, attn_implementation={attn!r}).cuda()
ids = torch.tensor([{ids!r}], device="cuda")
def run(n):
    torch.cuda.synchronize(); t = time.perf_counter()
    out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                     pad_token_id=0)
    torch.cuda.synchronize(); return time.perf_counter() - t, out[0, ids.shape[1]:].tolist()
run(4)
first = sorted(run(1)[0] for _ in range(3))[1]
runs = [run({new_tokens}) for _ in range(2)]
total = sorted(r[0] for r in runs)[0]
print(json.dumps({{"decode_tok_s": ({new_tokens} - 1) / (total - first), "tokens": runs[0][1][:32]}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"transformers {attn} failed: {r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def kiln_cmd(kiln, *args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    t = time.time()
    r = subprocess.run([kiln, *args], capture_output=True, text=True, env=e)
    if r.returncode != 0:
        raise RuntimeError(f"kiln {' '.join(args[:3])} ... failed ({r.returncode}): {r.stderr[-3000:]}")
    log(f"kiln {args[0]} {os.path.basename(args[1])}: {time.time() - t:.1f} s")
    return r


def kiln_bench(kiln, artifact, ids, new_tokens, repeats, extra=(), env=None):
    r = kiln_cmd(kiln, "bench", artifact, "--device", "cuda", "--prompt-ids", ",".join(map(str, ids)),
                 "--new-tokens", str(new_tokens), "--repeats", str(repeats), "--warmup", "1", "--json", *extra,
                 env=env)
    return json.loads(r.stdout), r.stderr


def kiln_tokens(kiln, model, ids, device, n=32):
    r = kiln_cmd(kiln, "run", model, "--device", device, "--prompt-ids", ",".join(map(str, ids)),
                 "--max-new-tokens", str(n), "--ignore-eos", "--json")
    return json.loads(r.stdout)["token_ids"]


def prefill_flops(shape, m=PREFILL_TOKENS):
    h, f, L = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    heads = shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * h // heads
    linear = 2 * m * L * (2 * h * h + 2 * h * kv + 3 * h * f)
    attention = 4 * L * h * m * (m + 1) // 2  # q.k and p.v over the causal triangle
    logits = 2 * h * shape["vocab_size"]  # the last row only
    return linear + attention + logits


def render(head, repeats, rows, prefill_rows, correctness, profiles, prefill_profiles, pending):
    """The report from what has been measured so far; `pending` names what is still to run (empty when done)."""
    report = list(head)
    if pending:
        report += [f"**Partial report**: written before {pending} had run (the script rewrites it after each "
                   f"model and at the end, so that a run cut short leaves what it measured).", ""]
    report += ["## Decode, batch 1", "",
               f"Prompt {PROMPT_TOKENS} random token ids, {NEW_TOKENS} greedy tokens. Roofline = copy bandwidth / "
               f"(weight bytes + KV cache bytes in bf16 at the mean context of "
               f"{PROMPT_TOKENS + NEW_TOKENS // 2} tokens). kiln: median of {repeats} runs after a warm-up "
               f"(min / max in brackets); transformers: best of 2, decode only (a 1-token generate subtracted). "
               f"kiln sampled: the same runs with `{' '.join(SAMPLED)}` (median), not part of the ratios.", "",
               "| model | weights read / token | roofline tok/s | kiln tok/s | kiln % roofline | eager tok/s | "
               "eager % | sdpa tok/s | sdpa % | kiln / eager | kiln / sdpa | kiln sampled tok/s |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = r["kiln_spread"]
        pct = lambda x: f"{100 * x / r['roof']:.1f}%" if x else "-"
        num = lambda x: f"{x:.1f}" if x else "-"
        ratio = lambda x: f"{r['kiln'] / x:.1f}x" if x else "-"
        report.append(
            f"| {r['model']} | {r['weights_gb']:.2f} GB | {r['roof']:.0f} | {r['kiln']:.1f} ({sp['min']:.1f} / "
            f"{sp['max']:.1f}) | **{pct(r['kiln'])}** | {num(r.get('eager'))} | {pct(r.get('eager'))} | "
            f"{num(r.get('sdpa'))} | {pct(r.get('sdpa'))} | {ratio(r.get('eager'))} | {ratio(r.get('sdpa'))} | "
            f"{r['kiln_sampled']:.1f} |")
    if prefill_rows:
        report += ["", f"## Prefill, {PREFILL_TOKENS} tokens", "",
                   "kiln: prompt tokens over the time to the first token (`kiln bench --new-tokens 2`), in TFLOP/s "
                   "of the model's matrix work (linear layers, causal attention, last-row logits). cuBLAS: torch."
                   "matmul bf16 over one layer's GEMMs at M = 512 on random data; 8192^3 for reference.", "",
                   "| model | kiln time | kiln TFLOP/s | cuBLAS layer GEMMs TFLOP/s | kiln / cuBLAS | cuBLAS 8192^3 |",
                   "|---|---|---|---|---|---|"]
        for label, t, kf, cb, big in prefill_rows:
            report.append(f"| {label} | {1e3 * t:.1f} ms | {kf / 1e12:.0f} | {cb / 1e12:.0f} | "
                          f"**{100 * kf / cb:.0f}%** | {big / 1e12:.0f} |")
    report += correctness
    if profiles:
        report += ["", "## Per-kernel profile of kiln's decode step", "",
                   "`KILN_CUDA_PROFILE=1 kiln bench ... --new-tokens 16 --repeats 1`: every launch timed with device "
                   "events, graphs off (so launch gaps are not included and the sum is below the graph step).", ""]
        for label, text in profiles:
            report += [f"### {label}", "", "```", text, "```", ""]
    if prefill_profiles:
        report += [f"## Per-kernel profile of kiln's {PREFILL_TOKENS}-token prefill", "",
                   "`KILN_CUDA_PROFILE=1 kiln bench ... --new-tokens 2 --repeats 1` on the prefill prompt (the warm-up "
                   "and the measured run: two prefill steps).", ""]
        for label, text in prefill_profiles:
            report += [f"### {label}", "", "```", text, "```", ""]
    return "\n".join(report) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", required=True)
    ap.add_argument("--work", default="/tmp/bench-gpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="1b,8b")
    ap.add_argument("--smollm2", help="a SmolLM2-135M Hugging Face directory (bf16)")
    ap.add_argument("--check-f32", action="store_true", help="1B shape in float32: GPU vs CPU greedy tokens")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--prefill-all", action="store_true", help="prefill of every model (default: the 8B shape)")
    args = ap.parse_args()
    import torch
    os.makedirs(args.work, exist_ok=True)
    dev = torch.cuda.get_device_name()
    date = time.strftime("%Y-%m-%d")
    bw = copy_bandwidth()
    log(f"{dev}: copy bandwidth {bw / 1e12:.2f} TB/s")
    head = [f"# GPU decode, {dev}, {date}", "",
            f"Command: `python3 tools/bench_gpu_decode.py {' '.join(sys.argv[1:])}`", "",
            f"Device copy bandwidth (1 GiB device-to-device copy, read + write, median of 20): "
            f"**{bw / 1e12:.2f} TB/s**, the roofline below.", ""]
    rows = []
    profiles = []
    prefill_rows = []
    prefill_profiles = []
    correctness = []
    names = [m for m in args.models.split(",") if m]
    models = [(f"Llama-{name.upper()} shape (random bf16)", name) for name in names]
    if args.smollm2:
        models.append(("SmolLM2-135M (bf16)", None))
    f32_pending = ["the f32 GPU-vs-CPU check"] if args.check_f32 else []

    def write(pending):
        md = render(head, args.repeats, rows, prefill_rows, correctness, profiles, prefill_profiles, ", ".join(pending))
        with open(args.out, "w") as f:
            f.write(md)
        return md

    for at, (label, name) in enumerate(models):
        if name:
            d = os.path.join(args.work, f"llama-{name}-bf16")
            make_model(name, SHAPES[name], d, torch.bfloat16)
            shape = SHAPES[name]
        else:
            d, shape = args.smollm2, hf_shape(args.smollm2)
        ids = prompt_ids(PROMPT_TOKENS, shape["vocab_size"])
        wbytes = weight_bytes(shape, 2)
        step_bytes = wbytes + kv_bytes(shape, PROMPT_TOKENS + NEW_TOKENS // 2, 2)
        roof = bw / step_bytes
        # kiln first (the figures the report is for), transformers after it (the slowest part of a run).
        # kiln runs the Hugging Face directory itself (imported in about a second, kernels compiled by NVRTC
        # for this GPU): the same kernels an artifact compiled with --target cuda:sm_90 carries.
        art = d
        bench, _ = kiln_bench(args.kiln, art, ids, NEW_TOKENS, args.repeats)
        k = bench["plain"]["decode_tokens_per_s"]["median"]
        log(f"{label} kiln: {k:.1f} tok/s ({100 * k / roof:.1f}% of roofline)")
        # The same decode sampled (the device draw after every step instead of the argmax).
        sampled, _ = kiln_bench(args.kiln, art, ids, NEW_TOKENS, args.repeats, extra=SAMPLED)
        ks = sampled["plain"]["decode_tokens_per_s"]["median"]
        log(f"{label} kiln sampled: {ks:.1f} tok/s")
        row = dict(model=label, weights_gb=wbytes / 1e9, roof=roof, kiln=k,
                   kiln_spread=bench["plain"]["decode_tokens_per_s"], kiln_sampled=ks)
        rows.append(row)
        # Per-kernel profile of a short decode (each launch timed with events: no graph, serialized).
        _, err = kiln_bench(args.kiln, art, ids, 16, 1, env={"KILN_CUDA_PROFILE": "1"})
        tables = ["kiln CUDA profile:" + t for t in err.split("kiln CUDA profile:")[1:]]
        profiles.append((label, "".join(t for t in tables if "decode steps" in t).strip()))
        if "8B" in label or len(models) == 1 or args.prefill_all:
            pids = prompt_ids(PREFILL_TOKENS, shape["vocab_size"], seed=2)
            pb, _ = kiln_bench(args.kiln, art, pids, 2, args.repeats)
            rate = pb["plain"]["prefill_tokens_per_s"]["median"]
            kiln_flops = prefill_flops(shape) * rate / PREFILL_TOKENS
            cublas, big = cublas_prefill_rate(shape)
            prefill_rows.append((label, PREFILL_TOKENS / rate, kiln_flops, cublas, big))
            # The prefill's kernels, timed one by one (the table of the profile's prefill steps).
            _, err = kiln_bench(args.kiln, art, pids, 2, 1, env={"KILN_CUDA_PROFILE": "1"})
            tables = ["kiln CUDA profile:" + t for t in err.split("kiln CUDA profile:")[1:]]
            prefill_profiles.append((label, "".join(t for t in tables if "prefill steps" in t).strip()))
        later = [m for m, _ in models[at + 1:]]
        if not args.no_transformers:
            write([f"transformers on {label}"] + later + f32_pending)
            for attn in ("eager", "sdpa"):
                try:
                    hf = transformers_decode(d, attn, ids, NEW_TOKENS)
                    row[attn] = hf["decode_tok_s"]
                    log(f"{label} transformers {attn}: {hf['decode_tok_s']:.1f} tok/s")
                except RuntimeError as e:
                    log(str(e))
        write(later + f32_pending)
    if args.check_f32:
        d = os.path.join(args.work, "llama-1b-f32")
        make_model("1b f32", SHAPES["1b"], d, torch.float32)
        ids = prompt_ids(PROMPT_TOKENS, SHAPES["1b"]["vocab_size"])
        gpu = kiln_tokens(args.kiln, d, ids, "cuda")
        cpu = kiln_tokens(args.kiln, d, ids, "cpu")
        same = gpu == cpu
        correctness += ["", "## Correctness", "",
                        f"Llama-1B shape in float32, {PROMPT_TOKENS}-token prompt, first 32 greedy tokens, `kiln run "
                        f"--device cuda` vs `--device cpu`: **{'identical' if same else 'DIFFERENT'}**.", "",
                        f"GPU: {gpu}", "", f"CPU: {cpu}"]
        if not same:
            correctness += ["", "FAIL: the GPU's greedy tokens differ from the CPU executor's."]
    print(write([]))


if __name__ == "__main__":
    main()
