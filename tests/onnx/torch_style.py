#!/usr/bin/env python3
"""Writes ONNX models laid out as PyTorch's exporter writes them (for `nnc import`'s test):
a CNN (Conv with bias, Relu, MaxPool, Flatten, Gemm with transB = 1) and an MLP (MatMul
then Add of the bias, Relu, Gemm), for rows of 64 features (the 8x8 digits), with a
symbolic batch and seeded random weights.

    python torch_style.py cnn.onnx mlp.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def init(rng, name, *shape):
    scale = 1.0 / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else shape[0])
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def save(path, nodes, inits, in_shape, out_dim, name):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size"] + in_shape)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", out_dim])
    graph = helper.make_graph(nodes, name, [x], [y], inits)
    model = helper.make_model(graph, producer_name="pytorch", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def main():
    cnn_path, mlp_path = sys.argv[1:3]
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1], name="/conv1/Conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="/Relu"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="/pool/MaxPool"),
        helper.make_node("Flatten", ["p1"], ["f"], axis=1, name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["g1"], alpha=1.0, beta=1.0, transB=1,
                         name="/fc1/Gemm"),
        helper.make_node("Relu", ["g1"], ["r2"], name="/Relu_1"),
        helper.make_node("Gemm", ["r2", "fc2.weight", "fc2.bias"], ["logits"], alpha=1.0, beta=1.0,
                         transB=1, name="/fc2/Gemm"),
    ]
    inits = [
        init(rng, "conv1.weight", 4, 1, 3, 3), init(rng, "conv1.bias", 4),
        init(rng, "fc1.weight", 32, 64), init(rng, "fc1.bias", 32),
        init(rng, "fc2.weight", 10, 32), init(rng, "fc2.bias", 10),
    ]
    save(cnn_path, nodes, inits, [1, 8, 8], 10, "main_graph")
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["m1"], name="/l1/MatMul"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="/l1/Add"),
        helper.make_node("Tanh", ["a1"], ["t1"], name="/Tanh"),
        helper.make_node("Gemm", ["t1", "w2", "b2"], ["logits"], transB=1, name="/l2/Gemm"),
    ]
    inits = [init(rng, "w1", 64, 48), init(rng, "b1", 48), init(rng, "w2", 10, 48), init(rng, "b2", 10)]
    save(mlp_path, nodes, inits, [64], 10, "mlp")


if __name__ == "__main__":
    main()
