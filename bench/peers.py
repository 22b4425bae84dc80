#!/usr/bin/env python3
"""nnc against PyTorch and JAX in the same run, as ratios.

For each benchmark and thread count, runs `nnc bench` (release build), then the peer
script from ../shared/peers, then `nnc bench` again (A-B-A, so a drift of the shared
machine shows as a spread), and prints one Markdown row: nnc's median, each peer's
figure, and nnc / best peer. Samples per second for training, microseconds for the
batch-1 forward pass (lower is better; the ratio is then peer / nnc, so > 1 means nnc
is faster either way).

    python3 bench/peers.py --python ~/peers-venv/bin/python
    python3 bench/peers.py --only cnn_train --threads 1
    python3 bench/peers.py --backend llvm --only mlp_train --threads 1

The peers need a venv outside the repository (../shared/peers/README.md):
    python3 -m venv ~/peers-venv && ~/peers-venv/bin/pip install -r ../shared/peers/requirements.txt
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (nnc bench arguments, peer script, peer frameworks, what is compared)
BENCHES = {
    "mlp_train": (["examples/mlp784.nn", "--batch", "128", "--only", "train"],
                  "mlp_train.py", "jax,torch", "train"),
    "cnn_train": (["examples/lenet5.nn", "--batch", "64", "--only", "train"],
                  "cnn_train.py", "jax,torch", "train"),
    "mlp_infer_b1": (["examples/mlp784.nn", "--batch", "1", "--only", "forward"],
                     "mlp_infer.py", "jax,torch", "latency"),
}


def nnc(args, threads, steps, backend):
    exe = os.path.join(ROOT, "target", "release", "nnc")
    cmd = [exe, "bench", *args, "--threads", str(threads), "--steps", str(steps),
           "--baseline-steps", "0", "--backend", backend]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rec = [json.loads(line) for line in out.splitlines() if line.startswith("{")][-1]
    return rec


def peer(python, peers, script, frameworks, threads, batch_one):
    cmd = [python, os.path.join(peers, script), "--framework", frameworks,
           "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{script} failed:\n{out.stderr[-2000:]}")
    recs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if batch_one:
        recs = [r for r in recs if r.get("batch") == 1]
    return recs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=os.path.expanduser("~/peers-venv/bin/python"))
    ap.add_argument("--peers", default=os.path.join(ROOT, "..", "shared", "peers"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--only", default=",".join(BENCHES))
    # As many timed steps as the peer scripts time (5 chunks of 200, after 30 warm-up
    # steps): 300 steps (a quarter of a second) let one burst of the shared machine's
    # load move nnc's figure by 10-15%.
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--backend", default="jit", choices=["jit", "llvm"],
                    help="nnc's code generator (llvm builds nnc with --features llvm)")
    a = ap.parse_args()
    features = ["--features", "llvm"] if a.backend == "llvm" else []
    subprocess.run(["cargo", "build", "--release", "-q", *features], cwd=ROOT, check=True)
    print("| benchmark | threads | nnc (before / after the peers) | peers | nnc vs best peer |")
    print("|---|---|---|---|---|")
    for name in a.only.split(","):
        args, script, fws, kind = BENCHES[name]
        for t in [int(x) for x in a.threads.split(",")]:
            first = nnc(args, t, a.steps, a.backend)
            peers = peer(a.python, a.peers, script, fws, t, kind == "latency")
            last = nnc(args, t, a.steps, a.backend)
            if kind == "latency":
                ours = [r["ms_per_step"] * 1000 for r in (first, last)]
                theirs = {p["framework"]: p["p50_us"] for p in peers}
                best = min(theirs.values())
                ratio = best / statistics.median(ours)
                fmt = lambda v: f"{v:.1f} µs"
            else:
                ours = [r["samples_per_s"] for r in (first, last)]
                theirs = {p["framework"]: p["samples_per_s"] for p in peers}
                best = max(theirs.values())
                ratio = statistics.median(ours) / best
                fmt = lambda v: f"{v / 1000:.1f}k/s"
            peer_text = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(theirs.items()))
            ours_text = " / ".join(fmt(v) for v in ours)
            print(f"| {name} | {t} | {ours_text} | {peer_text} | **{ratio:.2f}x** |",
                  flush=True)


if __name__ == "__main__":
    main()
