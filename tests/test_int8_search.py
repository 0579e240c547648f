"""The int8 search of the ONNX exports (``distill.export.onnx_encoder.quantize_onnx``, behind export.int8 of the
text and embedding students): a token table (Gather) is a candidate to keep in float like a weight matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_a_sensitive_token_table_is_kept_in_float_and_the_matrix_quantized(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from distill.export.onnx import onnx_session
    from distill.export.onnx_encoder import _cos, _weight_nodes, quantize_onnx

    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 16)).astype(np.float32) * 0.01
    table[0] *= 1e5  # one huge row: an int8 scale for the whole table flattens every other row to zero
    matrix = rng.normal(size=(16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"], name="gather"),
         helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["m", "W"], ["y"], name="matmul")], "bag",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(matrix, "W")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    assert _weight_nodes(src) == ["gather", "matmul"]
    ids = rng.integers(1, 50, (32, 4)).astype(np.int64)
    ref = onnx_session(src).run(None, {"ids": ids})[0]
    report = quantize_onnx(src, tmp_path / "q.onnx", [{"ids": ids}], ref, score=_cos, bound=0.999, key="cosine")
    assert report["file"] is not None and report["kept_float"] == ["gather"] and report["quantized"] == 1
    got = onnx_session(tmp_path / "q.onnx").run(None, {"ids": ids})[0]
    assert _cos(ref, got) >= 0.999


def test_a_node_kept_early_goes_back_to_int8_when_the_bound_holds_without_it(tmp_path: Path) -> None:
    """Three branches: the first moves the outputs most (large weights) but the score reads only the second,
    which int8 breaks; the third moves them least. The search keeps the first, then the second in float; the
    first then goes back to int8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from distill.export.onnx import onnx_session
    from distill.export.onnx_encoder import quantize_onnx

    rng = np.random.default_rng(1)
    weights = {name: rng.normal(size=(16, 4)).astype(np.float32) * scale
               for name, scale in (("big", 100.0), ("small", 1.0), ("tiny", 0.01))}  # fmt: skip
    graph = helper.make_graph(
        [*(helper.make_node("MatMul", ["x", n], [n + "_y"], name=n) for n in weights),
         helper.make_node("Concat", [n + "_y" for n in weights], ["y"], axis=1)], "three",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 12])],
        [numpy_helper.from_array(w, n) for n, w in weights.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    x = rng.normal(size=(32, 16)).astype(np.float32)
    ref = onnx_session(src).run(None, {"x": x})[0]

    def second_branch_exact(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a[:, 4:8] - b[:, 4:8]).max() < 1e-5)

    report = quantize_onnx(src, tmp_path / "q.onnx", [{"x": x}], ref, score=second_branch_exact, bound=1.0, key="exact")
    assert report["file"] is not None and report["kept_float"] == ["small"] and report["quantized"] == 2
