"""Repeated weights in an ONNX graph are stored once and the outputs stay the same, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from lmdev.compress.onnxshare import share_weights

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _graph(path):
    """y = (x @ A) + (x @ A_copy) + (x @ B) with A_copy equal to A and B = A^T (A is square)."""
    from onnx import TensorProto, helper, numpy_helper

    a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    inits = [numpy_helper.from_array(a, "A"), numpy_helper.from_array(a.copy(), "A_copy"),
             numpy_helper.from_array(np.ascontiguousarray(a.T), "B")]
    nodes = [helper.make_node("MatMul", ["x", w], [f"m{i}"]) for i, w in enumerate(["A", "A_copy", "B"])]
    nodes += [helper.make_node("Add", ["m0", "m1"], ["s"]), helper.make_node("Add", ["s", "m2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_an_equal_and_a_transposed_copy_are_dropped_with_the_same_outputs(tmp_path):
    _graph(tmp_path / "in.onnx")
    shared = share_weights(tmp_path / "in.onnx", tmp_path / "out.onnx")
    assert shared.dropped == ["A_copy", "B"] and shared.bytes_saved == 2 * 64 * 64 * 4
    assert [i.name for i in onnx.load(str(tmp_path / "out.onnx")).graph.initializer] == ["A"]
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    before, after = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"])
                     .run(None, {"x": x})[0] for f in ("in.onnx", "out.onnx"))
    assert np.array_equal(before, after)
