"""Which ONNX int8 form of the deployment benchmark's student is smallest and fastest at batch 1?

Not a test. Needs the files `benchmarks/deploy.py` leaves in benchmarks/.work/deploy/chain
(the pruned student's fp32 ONNX file and the teacher's ONNX file). Builds int8 variants of the
student (distill's onnx_int8, dynamic/static, per channel/per tensor; ONNX Runtime's quantizer
output as it is; a QOperator file; int8 weights dequantized in the graph), then times every
file at batch 1 in one process, 1 thread, interleaved rounds, with the same call as
`distill bench` (`distill.export.OrtRunner`: IOBinding with preallocated buffers, the input copied in
every call). Writes benchmarks/results/int8_variants.md.

    .venv/bin/python experiments/2026-11-29-onnx-int8-forms/int8_variants.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from distill.compress import onnx_int8
from distill.tasks.classification.data import build_data
from distill.tasks.classification.stages import _recipe
from distill.export import OrtRunner, onnx_session
from distill.core.fsutil import write_text

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"  # deploy.py's work files, and results/
RUN = ROOT / ".work" / "deploy" / "chain"


def weight_only(src: Path, out: Path) -> None:
    """int8 weights (per output channel) + a DequantizeLinear per weight, float Gemm."""
    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type == "Gemm" and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]])
            s = np.abs(w).max(1) / 127.0
            s[s == 0] = 1.0
            q = np.clip(np.round(w / s[:, None]), -127, 127).astype(np.int8)
            m.graph.initializer.remove(inits[n.input[1]])
            m.graph.initializer.extend([numpy_helper.from_array(q, n.input[1] + "_q"),
                                        numpy_helper.from_array(s.astype(np.float32), n.input[1] + "_s")])  # fmt: skip
            nodes.append(
                helper.make_node("DequantizeLinear", [n.input[1] + "_q", n.input[1] + "_s"], [n.input[1]], axis=0)
            )
        nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, str(out))


def main() -> int:
    student, teacher = RUN / "export" / "student.onnx", RUN / "bench" / "teacher.onnx"
    if not (student.is_file() and teacher.is_file()):
        print("run benchmarks/deploy.py first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    data = build_data(_recipe(RUN).data)
    calib = data.train.x[:512]
    work = Path(tempfile.mkdtemp(prefix="int8-variants-"))
    pre = work / "pre.onnx"
    quant_pre_process(str(student), str(pre))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 64].numpy()} for i in range(0, len(calib), 64)])

        def get_next(self) -> dict | None:
            return next(self.it, None)

    files: list[tuple[str, Path, dict[str, str]]] = [("teacher (fp32)", teacher, {}), ("student fp32", student, {})]
    for name, kw in [("onnx_int8 dynamic, per channel (export default)", {}),
                     ("onnx_int8 dynamic, per tensor", {"per_channel": False}),
                     ("onnx_int8 static QDQ, per channel", {"calibration": calib}),
                     ("onnx_int8 static QDQ, per tensor", {"calibration": calib, "per_channel": False})]:  # fmt: skip
        files.append((name, onnx_int8(student, work / f"{len(files)}.onnx", **kw), {}))
    raw = work / "raw_dyn.onnx"
    quantize_dynamic(str(pre), str(raw), per_channel=True, weight_type=QuantType.QInt8)
    files.append(("ORT quantize_dynamic as written, per channel", raw, {}))
    raw_st = work / "raw_st.onnx"
    quantize_static(str(pre), str(raw_st), Reader(), quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
    files.append(("ORT quantize_static QDQ as written, per tensor", raw_st, {}))
    qop = work / "qop.onnx"
    quantize_static(str(pre), str(qop), Reader(), quant_format=QuantFormat.QOperator, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    files.append(("ORT quantize_static QOperator (u8/s8), per tensor", qop, {}))
    wo = work / "weight_only.onnx"
    weight_only(student, wo)
    files.append(("int8 weights, DequantizeLinear -> float Gemm", wo, {}))
    files.append(("the same, session.disable_quant_qdq=1 (folded at load)", wo, {"session.disable_quant_qdq": "1"}))

    floor = work / "flatten_only.onnx"  # the per-call cost of the runtime and of the call itself
    x_info = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", *data.in_shape])
    y_info = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["logits"])], "floor", [x_info], [y_info])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(floor))
    files.append(("a graph with one Flatten (the per-call floor)", floor, {}))

    sessions = [onnx_session(p, threads=1, config=cfg) for _, p, cfg in files]
    fns = [OrtRunner(s) for s in sessions]
    x1 = torch.randn(1, *data.in_shape, generator=torch.Generator().manual_seed(0))
    medians: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        for _ in range(50):
            fn(x1)
    for _ in range(21):  # interleaved rounds: a load change hits every file alike
        for i, fn in enumerate(fns):
            times = []
            for _ in range(200):
                t0 = time.perf_counter_ns()
                fn(x1)
                times.append((time.perf_counter_ns() - t0) / 1e3)
            medians[i].append(statistics.median(times))
    lat = [statistics.median(m) for m in medians]
    fp32_size = student.stat().st_size
    rows = []
    for (name, path, _), fn, us in zip(files, fns, lat):
        with torch.inference_mode():
            pred = torch.cat([fn(data.test.x[i : i + 1024]).argmax(-1) for i in range(0, len(data.test), 1024)])
        acc = float((pred == data.test.y).float().mean())
        size = path.stat().st_size
        ratio = "—" if path in (teacher, floor) else f"{fp32_size / size:.2f}×"
        acc_text = "—" if path == floor else f"{100 * acc:.2f}%"
        rows.append(f"| {name} | {size:,} B | {ratio} | {us:.2f} µs | {lat[0] / us:.2f}× | {acc_text} |")
    md = [
        "# int8 variants of the deployment student (batch 1, ONNX Runtime, 1 thread)",
        "",
        (
            "Command: `.venv/bin/python experiments/2026-11-29-onnx-int8-forms/int8_variants.py` "
            "(after `benchmarks/deploy.py`). Median of 21 "
            "interleaved rounds of 200 calls each, through `distill.export.OrtRunner` (as `distill bench` calls ONNX "
            "files); ratios against the student's fp32 file (size) and the teacher "
            "(latency)."
        ),
        "",
        "| file | size | fp32 / this | latency b1 p50 | teacher / this | test acc |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    write_text(ROOT / "results" / "int8_variants.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
