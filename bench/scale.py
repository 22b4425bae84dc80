#!/usr/bin/env python3
"""Costs at the sizes users have: nnc against PyTorch eager in the same run, as ratios.

Embeddings of 1k to 50k rows (32 ids per row, mean, dense, batch 32, Adam), LSTMs and GRUs
over T = 16 to 1024 steps (16 features, 64 units, and 256 at T = 256; batch 32, Adam) and a causal pre-norm
transformer block over 256 and 1024 tokens (d = 64, 4 heads, hidden 256, batch 16). For each configuration:
nnc, then PyTorch, then nnc again (A-B-A: a drift of the shared machine shows as a
spread), one Markdown row with both figures, the ratio and peak RSS.

    python3 bench/scale.py --python ~/peers-venv/bin/python
    python3 bench/scale.py --only embedding --nnc target/release/nnc --nnc /tmp/nnc-old

With several `--nnc` binaries (say, before and after a change), each is measured in the
same run and gets its own column.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EMBEDDING = """model Bag(ids: i32[B, {ids}]) -> f32[B, 10] {{
    e = embedding(ids, {vocab}, {dim})
    return dense(mean(e, axis = 1), 10)
}}

train Bag(y: i32[B]) {{
    loss = cross_entropy(output, y)
    optimizer = adam(lr = 1e-3)
    batch = 32
}}
"""

LSTM = """model Seq(x: f32[B, {time}, 16]) -> f32[B, 10] {{
    h = lstm(x, {units})
    return dense(h, 10)
}}

train Seq(y: i32[B]) {{
    loss = cross_entropy(output, y)
    optimizer = adam(lr = 1e-3)
    batch = 32
}}
"""

GRU = LSTM.replace("lstm(x, {units})", "gru(x, {units})")

TRANSFORMER = """model Block(x: f32[B, {tokens}, 64]) -> f32[B, 10] {{
    h = transformer_block(x, 4, 256, causal = true)
    return dense(mean(h, axis = 1), 10)
}}

train Block(y: i32[B]) {{
    loss = cross_entropy(output, y)
    optimizer = adam(lr = 1e-3)
    batch = {batch}
}}
"""

CONFIGS = {
    "embedding": [dict(vocab=v, dim=64, ids=32) for v in (1000, 30000, 50000)],
    "lstm": [dict(time=t, units=64) for t in (16, 64, 256, 1024)] + [dict(time=256, units=256)],
    "gru": [dict(time=t, units=64) for t in (16, 256, 1024)],
    "transformer": [dict(tokens=t, batch=16) for t in (256, 1024)],
}
TEMPLATES = {"embedding": EMBEDDING, "lstm": LSTM, "gru": GRU, "transformer": TRANSFORMER}


def run_nnc(exe, src, steps, timeout):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.nn")
        with open(path, "w") as f:
            f.write(src)
        cmd = [exe, "bench", path, "--only", "train", "--threads", "1",
               "--steps", str(steps), "--baseline-steps", "0"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        recs = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
        return recs[-1] if out.returncode == 0 and recs else None


def run_torch(python, model, cfg, steps):
    args = [python, os.path.join(ROOT, "bench", "scale_torch.py"), model, "--steps", str(steps)]
    for k, v in cfg.items():
        args += [f"--{k}", str(v)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--python", default=os.path.expanduser("~/peers-venv/bin/python"))
    p.add_argument("--nnc", action="append", help="nnc binaries to compare (default: target/release/nnc)")
    p.add_argument("--only", choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--timeout", type=float, default=600)
    a = p.parse_args()
    exes = a.nnc or [os.path.join(ROOT, "target", "release", "nnc")]
    names = [os.path.basename(os.path.dirname(e)) if os.path.basename(e) == "nnc" else os.path.basename(e)
             for e in exes]
    head = " | ".join(f"{n} ms/step (A, A') | {n} peak RSS MB | {n} vs torch" for n in names)
    print(f"| model | config | torch ms/step | torch peak RSS MB | {head} |")
    print("|" + "---|" * (4 + 3 * len(exes)))
    for model, cfgs in CONFIGS.items():
        if a.only and model != a.only:
            continue
        template = TEMPLATES[model]
        for cfg in cfgs:
            src = template.format(**cfg)
            first = [run_nnc(e, src, a.steps, a.timeout) for e in exes]
            torch = run_torch(a.python, model, cfg, a.steps)
            second = [run_nnc(e, src, a.steps, a.timeout) for e in exes]
            cells = []
            for r1, r2 in zip(first, second):
                if r1 is None or r2 is None:
                    cells.append("failed or timed out | - | -")
                    continue
                ms = [r["ms_per_step"] for r in (r1, r2)]
                rss = max(r.get("peak_rss_mb", 0) for r in (r1, r2))
                held = r1.get("step_mb")
                rss_text = f"{rss:.0f}" + (f" (step holds {held:.0f})" if held else "")
                ratio = torch["ms_per_step"] / statistics.median(ms)
                cells.append(f"{ms[0]:.2f}, {ms[1]:.2f} | {rss_text} | {ratio:.2f}x")
            conf = ", ".join(f"{k}={v}" for k, v in cfg.items())
            print(f"| {model} | {conf} | {torch['ms_per_step']:.2f} | {torch['peak_rss_mb']:.0f} | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
