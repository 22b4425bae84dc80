#!/usr/bin/env python3
"""examples/tasks/keyboard.nn's recipe in PyTorch, for the accuracy comparison in README:
the same data and split (examples/data/typos.csv, the last 5,000 rows for testing), an
embedding of 27 letters in 32 dimensions, a GRU of 256 units, a linear layer to 5,000
words, cross-entropy, Adam 3e-3, batch 64, 20 epochs, shuffled each epoch; test accuracy
after the last epoch, one line per seed.

    ~/peers-venv/bin/python bench/keyboard_torch.py --seeds 0 1 2
"""

import argparse
import csv
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=20)
    a = p.parse_args()
    torch.set_num_threads(1)
    with open(os.path.join(ROOT, "examples", "data", "typos.csv")) as f:
        rows = list(csv.reader(f))[1:]
    data = np.array(rows, dtype=np.int64)
    x, y = torch.tensor(data[:, :12]), torch.tensor(data[:, 12])
    xtr, ytr, xte, yte = x[:-5000], y[:-5000], x[-5000:], y[-5000:]
    for seed in a.seeds:
        torch.manual_seed(seed)
        emb = torch.nn.Embedding(27, 32)
        gru = torch.nn.GRU(32, 256, batch_first=True)
        out = torch.nn.Linear(256, 5000)
        params = list(emb.parameters()) + list(gru.parameters()) + list(out.parameters())
        opt = torch.optim.Adam(params, lr=3e-3)

        def logits(xb):
            _, h = gru(emb(xb))
            return out(h[-1])

        for _ in range(a.epochs):
            perm = torch.randperm(len(xtr))
            for i in range(0, len(xtr), 64):
                idx = perm[i:i + 64]
                loss = torch.nn.functional.cross_entropy(logits(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            acc = (logits(xte).argmax(1) == yte).float().mean().item()
        print(f"seed {seed}: test accuracy {100 * acc:.2f}%", flush=True)


if __name__ == "__main__":
    main()
