#!/usr/bin/env python3
"""The ONNX oracle: checks an exported model with onnx's full checker, runs it with
onnxruntime on the rows of a CSV (the `label` column dropped) and compares with the CSV
`nnc predict` wrote for the same rows: the same class for every row, every output within
1e-5 relative (of the row's largest output). Prints one summary line; exits 1 on a
mismatch.

    python check.py model.onnx rows.csv nnc_predictions.csv [Op,Op,...] [flips]

The optional fourth argument lists ONNX operators the graph must contain; the fifth, how
many rows may differ by more (still of the same class): a spiking net's membrane within
rounding of its threshold fires in one runtime and not in the other.
"""

import csv
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, rows_path, nnc_path = sys.argv[1:4]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    for want in (sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []):
        if want not in ops:
            print(f"{model_path}: no {want} node (it has {sorted(ops)})")
            return 1
    with open(rows_path) as f:
        rows = list(csv.reader(f))
    head = rows[0]
    keep = [i for i, h in enumerate(head) if h != "label"]
    x = np.array([[float(r[i]) for i in keep] for r in rows[1:]], dtype=np.float32)
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    # Rows of the CSV in the model's input shape (LeNet-5's [N, 1, 28, 28]).
    x = x.reshape([len(x)] + [int(d) for d in inp.shape[1:]])
    y = sess.run(None, {inp.name: x})[0].reshape(len(x), -1)
    with open(nnc_path) as f:
        pred = list(csv.reader(f))
    cols = [i for i, h in enumerate(pred[0]) if h.startswith("out")]
    want = np.array([[float(r[i]) for i in cols] for r in pred[1:]], dtype=np.float64)
    if want.shape != y.shape:
        print(f"shapes differ: onnxruntime {y.shape}, nnc {want.shape}")
        return 1
    flips = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    scale = np.maximum(np.abs(want).max(axis=1, keepdims=True), 1e-6)
    row_rel = (np.abs(y - want) / scale).max(axis=1)
    over = int((row_rel > 1e-5).sum())
    rel = float(np.sort(row_rel)[len(row_rel) - 1 - min(flips, len(row_rel) - 1)])
    same = int((y.argmax(1) == want.argmax(1)).sum())
    print(f"{model_path}: {len(x)} rows, same class {same}/{len(x)}, {over} rows beyond 1e-5 "
          f"(allowed {flips}), max relative difference {float(row_rel.max()):.2e}")
    return 0 if same == len(x) and over <= flips and rel <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
