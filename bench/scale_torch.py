#!/usr/bin/env python3
"""The PyTorch side of bench/scale.py: the same models, eager, one JSON line each.

    ~/peers-venv/bin/python bench/scale_torch.py embedding --vocab 30000 --steps 50
    ~/peers-venv/bin/python bench/scale_torch.py lstm --time 64 --steps 20
    ~/peers-venv/bin/python bench/scale_torch.py transformer --tokens 1024 --steps 5

Training step = forward, cross-entropy, backward, Adam (lr 1e-3), on random data of the
model's shape; the median of `--steps` timed steps after warm-up. Peak RSS of the process.
"""

import argparse
import json
import resource
import statistics
import time

import torch


def embedding(a):
    class Bag(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e = torch.nn.Embedding(a.vocab, a.dim)
            self.out = torch.nn.Linear(a.dim, a.classes)

        def forward(self, ids):
            return self.out(self.e(ids).mean(dim=1))

    model = Bag()
    x = torch.randint(0, a.vocab, (a.batch, a.ids))
    return model, x


def recurrent(a, cell):
    class Seq(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cell(a.features, a.units, batch_first=True)
            self.out = torch.nn.Linear(a.units, a.classes)

        def forward(self, x):
            _, h = self.rnn(x)
            h = h[0] if isinstance(h, tuple) else h  # the LSTM's (h, c)
            return self.out(h[-1])

    model = Seq()
    x = torch.rand(a.batch, a.time, a.features)
    return model, x


def lstm(a):
    return recurrent(a, torch.nn.LSTM)


def gru(a):
    return recurrent(a, torch.nn.GRU)


def transformer(a):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = torch.nn.TransformerEncoderLayer(
                64, 4, dim_feedforward=256, dropout=0.0, batch_first=True, norm_first=True)
            self.out = torch.nn.Linear(64, a.classes)
            self.mask = torch.nn.Transformer.generate_square_subsequent_mask(a.tokens)

        def forward(self, x):
            return self.out(self.block(x, src_mask=self.mask, is_causal=True).mean(dim=1))

    model = Block()
    x = torch.rand(a.batch, a.tokens, 64)
    return model, x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model", choices=["embedding", "lstm", "gru", "transformer"])
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--vocab", type=int, default=30000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--ids", type=int, default=32)
    p.add_argument("--time", type=int, default=16)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, x = {"embedding": embedding, "lstm": lstm, "gru": gru, "transformer": transformer}[a.model](a)
    y = torch.randint(0, a.classes, (a.batch,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1e3
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"framework": "torch", "model": a.model, "ms_per_step": ms,
                      "samples_per_s": a.batch / ms * 1e3, "peak_rss_mb": rss,
                      "config": vars(a)}))


if __name__ == "__main__":
    main()
