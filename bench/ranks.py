#!/usr/bin/env python3
"""One process on 1 and 2 threads against 2 MPI ranks of 1 thread, in the same run.

For each model, runs `nnc bench --only train` with `--threads 1`, `--threads 2`, and
`mpirun -n 2 nnc bench --threads 1` (a build with `--features mpi`), rounds interleaved
so the shared machine's drift hits each alike, and prints one Markdown row per model:
the median step time of each and the speed-ups over one thread. The same global batch
in all three: each rank takes half of it, and one allreduce per step sums the gradients.

    cargo build --release --features mpi
    python3 bench/ranks.py [--rounds 5] [--steps 60]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.join(ROOT, "target", "release", "nnc")

LSTM = """model Seq(x: f32[B, 64, 16]) -> f32[B, 10] {
    h = lstm(x, 64)
    return dense(h, 10)
}

train Seq(y: i32[B]) {
    loss = cross_entropy(output, y)
    optimizer = adam(lr = 1e-3)
    batch = 32
}
"""

# name: (file or source, batch)
MODELS = {
    "mlp784": ("examples/mlp784.nn", 128),
    "lenet5": ("examples/lenet5.nn", 64),
    "lstm64_T64": (LSTM, 32),
}

MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


def bench(path, batch, steps, threads, ranks):
    cmd = [EXE, "bench", path, "--only", "train", "--batch", str(batch), "--threads",
           str(threads), "--steps", str(steps), "--baseline-steps", "0"]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe"] + cmd
    env = dict(os.environ, **MPI_ENV)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    recs = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    return recs[0]["ms_per_step"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--only")
    a = p.parse_args()
    print("| model | batch | 1 thread ms | 2 threads ms | 2 ranks ms | 2 threads / 1 | 2 ranks / 1 |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name, (src, batch) in MODELS.items():
            if a.only and a.only != name:
                continue
            path = src
            if not src.endswith(".nn"):
                path = os.path.join(d, name + ".nn")
                with open(path, "w") as f:
                    f.write(src)
            runs = {"t1": [], "t2": [], "r2": []}
            for _ in range(a.rounds):
                runs["t1"].append(bench(path, batch, a.steps, 1, 1))
                runs["t2"].append(bench(path, batch, a.steps, 2, 1))
                runs["r2"].append(bench(path, batch, a.steps, 1, 2))
            m = {k: statistics.median(v) for k, v in runs.items()}
            print(f"| {name} | {batch} | {m['t1']:.2f} | {m['t2']:.2f} | {m['r2']:.2f} "
                  f"| {m['t1'] / m['t2']:.2f}x | {m['t1'] / m['r2']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
