#!/usr/bin/env python3
"""Cranelift against LLVM in the same run, as ratios.

Runs `nnc bench` on each model with `--backend jit` and `--backend llvm` alternately
(jit, llvm, jit, llvm, ...: a drift of the shared machine shows in both), and prints one
Markdown row per model and measurement: each backend's median, and llvm / jit (> 1 means
LLVM is faster; for compile time, jit / llvm, so > 1 still means LLVM is better).

    cargo build --release --features llvm
    python3 bench/backends.py            # mlp784 and LeNet-5, 3 rounds
"""

import argparse
import json
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    "mlp784 (batch 128)": ["examples/mlp784.nn", "--batch", "128"],
    "LeNet-5 (batch 64)": ["examples/lenet5.nn", "--batch", "64"],
}


def bench(args, backend, steps):
    exe = os.path.join(ROOT, "target", "release", "nnc")
    cmd = [exe, "bench", *args, "--backend", backend, "--steps", str(steps),
           "--baseline-steps", "0"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {r["bench"]: r for r in map(json.loads, out.splitlines())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    a = ap.parse_args()
    rows = []
    for name, args in MODELS.items():
        runs = {"jit": [], "llvm": []}
        for _ in range(a.rounds):
            for backend in ("jit", "llvm"):
                runs[backend].append(bench(args, backend, a.steps))
        med = lambda b, kind, key: statistics.median(r[kind][key] for r in runs[b] if kind in r)
        for kind, key, label, higher in [
            ("train_step", "samples_per_s", "train step, samples/s", True),
            ("forward", "samples_per_s", "forward, samples/s", True),
            ("train_step", "compile_ms", "compile (gradient + update kernels), ms", False),
            ("update_kernel", "gb_per_s", "update kernel, 4M params, GB/s", True),
        ]:
            j, l = med("jit", kind, key), med("llvm", kind, key)
            ratio = l / j if higher else j / l
            rows.append(f"| {name} | {label} | {j:,.1f} | {l:,.1f} | {ratio:.2f}x |")
    print("| model | measurement | Cranelift | LLVM | LLVM vs Cranelift |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
