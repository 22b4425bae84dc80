#!/usr/bin/env python3
"""The learning-rule examples' recipes in PyTorch, written independently of the .nn files
with torch.autograd.Function: backprop, feedback alignment, sign symmetry, direct feedback
alignment and a binarized (straight-through) MLP 64-128-128-10, forward-forward with two
layers of 128, and a spiking net of two LIF layers of 128 (fast-sigmoid surrogate), on
the shipped digits (features / 16, the first 1437 rows train and the last 360 test,
Adam 1e-3, batch 32, 30 epochs), test accuracy after the last epoch over seeds 0..4, one
Markdown row each.

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


def linear_params(i, o):
    k = 1 / math.sqrt(i)
    return (torch.nn.Parameter(torch.empty(i, o).uniform_(-k, k)),
            torch.nn.Parameter(torch.empty(o).uniform_(-k, k)))


class ForwardForward(torch.nn.Module):
    """Hinton (2022): every image with each label appended one-hot, each layer's input
    normalized to unit length and detached, goodness = sum of squared activities."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = linear_params(74, 128)
        self.w2, self.b2 = linear_params(128, 128)

    @staticmethod
    def unit(h):
        return (h / (h.pow(2).sum(-1, keepdim=True).sqrt() + 1e-4)).detach()

    def goodness(self, x):
        n = x.shape[0]
        xs = torch.cat([x[:, None, :].expand(n, 10, 64), torch.eye(10).expand(n, 10, 10)], 2)
        h1 = torch.relu(self.unit(xs) @ self.w1 + self.b1)
        h2 = torch.relu(self.unit(h1) @ self.w2 + self.b2)
        return h1.pow(2).sum(-1), h2.pow(2).sum(-1)

    def forward(self, x):
        g1, g2 = self.goodness(x)
        return g1 + g2

    def loss(self, x, y, gen, theta=2.0):
        sp = torch.nn.functional.softplus
        total = 0
        for g in self.goodness(x):
            wrong = (y + 1 + (torch.rand(y.shape, generator=gen) * 9).long()) % 10
            pos = g.gather(1, y[:, None])[:, 0]
            neg = g.gather(1, wrong[:, None])[:, 0]
            total = total + sp(theta - pos).mean() + sp(neg - theta).mean()
        return total


class FastSigmoidSpike(torch.autograd.Function):
    """Heaviside forward; snnTorch's fast sigmoid, dy / (1 + 25 |u|)^2, backward."""

    @staticmethod
    def forward(ctx, u):
        ctx.save_for_backward(u)
        return (u > 0).float()

    @staticmethod
    def backward(ctx, dy):
        (u,) = ctx.saved_tensors
        return dy / (1 + 25 * u.abs()) ** 2


class Spiking(torch.nn.Module):
    """Two layers of leaky integrate-and-fire neurons (beta 0.9, threshold 1, reset by
    subtraction without gradient) over 8 steps of the same image; a linear readout of the
    second layer's firing rates."""

    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(64, 128)
        self.l2 = torch.nn.Linear(128, 128)
        self.out = torch.nn.Linear(128, 10)

    @staticmethod
    def lif(currents):
        mem = torch.zeros_like(currents[0])
        spk = torch.zeros_like(mem)
        spikes = []
        for c in currents:
            mem = 0.9 * mem + c - spk.detach()
            spk = FastSigmoidSpike.apply(mem - 1.0)
            spikes.append(spk)
        return spikes

    def forward(self, x):
        s1 = self.lif([self.l1(x)] * 8)
        s2 = self.lif([self.l2(s) for s in s1])
        return self.out(torch.stack(s2).mean(0))


def run(rule, seed, data):
    torch.manual_seed(seed)
    xt, yt, xs, ys = data
    model = {"ff": ForwardForward, "spiking": Spiking}.get(rule, lambda: Mlp(rule))()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(30):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            loss(model, xt[idx], yt[idx], g).backward()
            opt.step()
    with torch.no_grad():
        return (model(xs).argmax(1) == ys).float().mean().item() * 100


def loss(model, x, y, gen):
    """Forward-forward's layer-local losses, or cross-entropy of the outputs."""
    if isinstance(model, ForwardForward):
        return model.loss(x, y, gen)
    return torch.nn.functional.cross_entropy(model(x), y)


def main():
    torch.set_num_threads(1)
    data = load()
    print("| rule | PyTorch, seeds 0..4 | mean |")
    print("|---|---|---|")
    for rule in sys.argv[1:] or ["backprop", "fa", "sign", "dfa", "binary", "ff", "spiking"]:
        accs = [run(rule, s, data) for s in range(5)]
        print(f"| {rule} | {' '.join(f'{a:.2f}' for a in accs)} | {statistics.mean(accs):.2f}% |", flush=True)


if __name__ == "__main__":
    main()
