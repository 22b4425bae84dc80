#!/usr/bin/env python3
"""examples/tasks/charlm.nn's recipe in PyTorch, for the bits-per-character comparison in
README: the same text and windows (examples/data/jargon.txt cut into windows of 256 bytes,
each labelled with the bytes one further on, the last 5% of the windows held out), an
embedding of 256 byte values in 32 dimensions, an LSTM of 128 units over every step, a
linear layer to 256 logits at each step, cross-entropy averaged over every position,
Adam 3e-3, batch 32, 10 epochs, shuffled each epoch; the held-out bits per character after
each epoch, one line per seed. `--model transformer` is examples/tasks/charlm_gpt.nn's
recipe instead.

    ~/peers-venv/bin/python bench/charlm_torch.py --seeds 0 1
"""

import argparse
import math
import os
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 256


def windows():
    with open(os.path.join(ROOT, "examples", "data", "jargon.txt"), "rb") as f:
        text = torch.tensor(list(f.read()), dtype=torch.long)
    n = (len(text) - 1) // WINDOW
    x = text[: n * WINDOW].view(n, WINDOW)
    y = text[1 : n * WINDOW + 1].view(n, WINDOW)
    held = round(0.05 * n)
    return x[: n - held], y[: n - held], x[n - held :], y[n - held :]


class Lstm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(256, 32)
        self.lstm = torch.nn.LSTM(32, 128, batch_first=True)
        self.out = torch.nn.Linear(128, 256)

    def forward(self, x):
        hs, _ = self.lstm(self.emb(x))
        return self.out(hs)


class Block(torch.nn.Module):
    """The prelude's transformer_block: pre-norm causal self-attention, then a ReLU
    feed-forward of `hidden` units, each added back to its input. (q, k and v as one
    linear layer of 3d outputs: the same function and initial distribution as three.)"""

    def __init__(self, d, heads, hidden):
        super().__init__()
        self.n1, self.n2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.up, self.down = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)
        self.heads = heads

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.n1(x)).split(d, dim=-1)
        split = lambda z: z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
        a = torch.nn.functional.scaled_dot_product_attention(
            split(q), split(k), split(v), is_causal=True
        )
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(torch.relu(self.up(self.n2(x))))


class Gpt(torch.nn.Module):
    def __init__(self, d=64, heads=4, hidden=256, layers=2):
        super().__init__()
        self.emb = torch.nn.Embedding(256, d)
        self.pos = torch.nn.Parameter(torch.randn(WINDOW, d) * 0.02)
        self.blocks = torch.nn.ModuleList(Block(d, heads, hidden) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(d)
        self.out = torch.nn.Linear(d, 256)

    def forward(self, x):
        h = self.emb(x) + self.pos
        for blk in self.blocks:
            h = blk(h)
        return self.out(self.norm(h))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--model", choices=["lstm", "transformer"], default="lstm")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    xtr, ytr, xte, yte = windows()
    for seed in a.seeds:
        torch.manual_seed(seed)
        model = Lstm() if a.model == "lstm" else Gpt()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        loss_of = lambda x, y: torch.nn.functional.cross_entropy(
            model(x).reshape(-1, 256), y.reshape(-1)
        )
        start = time.time()
        for epoch in range(a.epochs):
            perm = torch.randperm(len(xtr))
            for i in range(0, len(xtr), 32):
                idx = perm[i : i + 32]
                loss = loss_of(xtr[idx], ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                test = sum(
                    loss_of(xte[i : i + 32], yte[i : i + 32]).item() * len(xte[i : i + 32])
                    for i in range(0, len(xte), 32)
                ) / len(xte)
            print(
                f"seed {seed} epoch {epoch + 1}: test loss {test:.4f}, "
                f"{test / math.log(2):.3f} bits per character ({time.time() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
