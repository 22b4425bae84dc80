#!/usr/bin/env python3
"""The learning-rule examples' recipes in PyTorch, written independently of the .nn files
with torch.autograd.Function: backprop, feedback alignment, sign symmetry, direct feedback
alignment and a binarized (straight-through) MLP 64-128-128-10 on the shipped digits
(features / 16, the first 1437 rows train and the last 360 test, Adam 1e-3, batch 32,
30 epochs), test accuracy after the last epoch over seeds 0..4, one Markdown row each.

    ~/peers-venv/bin/python bench/rules_torch.py
"""

import csv
import math
import os
import statistics
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load():
    with open(os.path.join(ROOT, "examples", "data", "digits.csv")) as f:
        rows = list(csv.reader(f))
    head, rows = rows[0], rows[1:]
    li = head.index("label")
    x = torch.tensor([[float(v) / 16 for i, v in enumerate(r) if i != li] for r in rows])
    y = torch.tensor([int(float(r[li])) for r in rows])
    return x[:-360], y[:-360], x[-360:], y[-360:]


class Linear(torch.nn.Module):
    """x @ w + b with PyTorch's default init; `backward_matrix(w)` is what the error is
    sent back through instead of w (None: backprop)."""

    def __init__(self, i, o, feedback=None, binary=False):
        super().__init__()
        k = 1 / math.sqrt(i)
        self.w = torch.nn.Parameter(torch.empty(i, o).uniform_(-k, k))
        self.b = torch.nn.Parameter(torch.empty(o).uniform_(-k, k))
        self.feedback = feedback  # "random", "sign" or None
        self.binary = binary
        self.register_buffer("B", torch.empty(o, i).uniform_(-k, k))

    def forward(self, x):
        w = self.w
        if self.binary:
            w = SignSTE.apply(w) / math.sqrt(w.shape[0])
        if self.feedback is None:
            return x @ w + self.b
        back = self.B if self.feedback == "random" else None
        return FeedbackMatmul.apply(x, w, back) + self.b


class FeedbackMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w, b)
        ctx.random = b is not None
        return x @ w

    @staticmethod
    def backward(ctx, dy):
        x, w, b = ctx.saved_tensors
        back = b if ctx.random else torch.sign(w).t()
        return dy @ back, x.t() @ dy, None


class SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.sign(x)

    @staticmethod
    def backward(ctx, dy):
        return dy


class DfaHook(torch.autograd.Function):
    """0 going forward; sends the output error e to h as e @ B."""

    @staticmethod
    def forward(ctx, h, b):
        ctx.save_for_backward(b)
        return torch.zeros(h.shape[0], b.shape[0])

    @staticmethod
    def backward(ctx, e):
        (b,) = ctx.saved_tensors
        return e @ b, None


class Mlp(torch.nn.Module):
    def __init__(self, rule):
        super().__init__()
        fb = {"fa": "random", "sign": "sign"}.get(rule)
        binary = rule == "binary"
        self.rule = rule
        self.l1 = Linear(64, 128, fb, binary)
        self.l2 = Linear(128, 128, fb, binary)
        self.l3 = Linear(128, 10, fb, binary)
        if rule == "dfa":
            self.register_buffer("B1", torch.empty(10, 128).uniform_(-1 / 8, 1 / 8))
            self.register_buffer("B2", torch.empty(10, 128).uniform_(-1 / math.sqrt(128), 1 / math.sqrt(128)))

    def forward(self, x):
        h1 = torch.relu(self.l1(x))
        if self.rule != "dfa":
            h2 = torch.relu(self.l2(h1))
            return self.l3(h2)
        h2 = torch.relu(self.l2(h1.detach()))
        o = self.l3(h2.detach())
        return o + DfaHook.apply(h1, self.B1) + DfaHook.apply(h2, self.B2)


def run(rule, seed, data):
    torch.manual_seed(seed)
    xt, yt, xs, ys = data
    model = Mlp(rule)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(30):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    with torch.no_grad():
        return (model(xs).argmax(1) == ys).float().mean().item() * 100


def main():
    torch.set_num_threads(1)
    data = load()
    print("| rule | PyTorch, seeds 0..4 | mean |")
    print("|---|---|---|")
    for rule in sys.argv[1:] or ["backprop", "fa", "sign", "dfa", "binary"]:
        accs = [run(rule, s, data) for s in range(5)]
        print(f"| {rule} | {' '.join(f'{a:.2f}' for a in accs)} | {statistics.mean(accs):.2f}% |", flush=True)


if __name__ == "__main__":
    main()
