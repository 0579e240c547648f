"""ONNX export + ONNX Runtime parity, the safetensors model folder, Hugging Face save (CPU, offline)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distill.compress import dynamic_int8, pruned_params, static_int8, structured_prune
from distill.errors import ExportError, ModelError
from distill.export import (
    OrtRunner,
    ParityReport,
    check_onnx_parity,
    export_onnx,
    load_torch,
    onnx_session,
    run_onnx,
    save_hf,
    save_torch,
)
from distill.models import build

MLP_PARAMS = {"hidden": [32]}
CNN_PARAMS = {"channels": [4, 8], "hidden": 16, "dropout": 0.0}


def seeded(arch: str, params: dict, in_shape: tuple[int, ...] = (1, 8, 8), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build(arch, in_shape, 10, params).eval()


def builder(arch: str, params: dict, in_shape: tuple[int, ...] = (1, 8, 8)) -> dict:
    return {"arch": arch, "in_shape": list(in_shape), "num_classes": 10, "params": params}


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)[:300]


def predict(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs)


# --------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("arch,params", [("mlp", MLP_PARAMS), ("cnn", CNN_PARAMS)])
def test_export_onnx_round_trip_at_batch_1_and_7(tmp_path, x, arch, params):
    import onnx

    model = seeded(arch, params)
    path = export_onnx(model, x[:2], tmp_path / "out" / "model.onnx")
    assert path == tmp_path / "out" / "model.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # written atomically, nothing left over

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    session = onnx_session(path)
    for n in (1, 7):
        torch.testing.assert_close(run_onnx(session, x[:n]), predict(model, x[:n]), rtol=1e-5, atol=1e-5)


def test_ort_runner_gives_what_session_run_gives_at_every_batch_size(tmp_path, x):
    model = seeded("cnn", CNN_PARAMS)
    session = onnx_session(export_onnx(model, x[:2], tmp_path / "m.onnx"))
    runner, copying = OrtRunner(session), OrtRunner(session, copy=True)
    for n in (1, 7, 1, 300):  # a shape seen before reuses its buffers and still reads the new input
        want = run_onnx(session, x[:n])
        torch.testing.assert_close(runner(x[:n]), want, rtol=0, atol=0)
        torch.testing.assert_close(copying(x[:n]), want, rtol=0, atol=0)
    first = runner(x[:1])
    kept, copied = first.clone(), copying(x[:1])
    runner(x[1:2])  # the view follows the buffer; the copy does not
    torch.testing.assert_close(first, run_onnx(session, x[1:2]), rtol=0, atol=0)
    assert not torch.equal(first, kept) and torch.equal(copying(x[:1]), copied)
    for n in range(1, 12):  # more shapes than it keeps buffers for: still right
        torch.testing.assert_close(runner(x[:n]), run_onnx(session, x[:n]), rtol=0, atol=0)
    assert len(runner._bound) <= 8


def test_ort_runner_refuses_what_it_cannot_bind(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["ids"], ["out"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n"])])  # fmt: skip
    path = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ExportError, match="tensor\\(int64\\) in"):
        OrtRunner(onnx_session(path))


def test_export_onnx_exports_eval_mode_and_leaves_the_model_as_it_was(tmp_path, x):
    model = seeded("cnn", {"channels": [4, 8], "hidden": 16, "dropout": 0.5}).train()
    path = export_onnx(model, x[:3], tmp_path / "cnn.onnx")
    assert model.training  # not switched to eval behind the caller's back
    report = check_onnx_parity(model, path, x)  # compares with the model in eval mode (no dropout, BN running stats)
    assert report.passed and model.training


def test_check_onnx_parity_reports_the_numbers_and_uses_several_batch_sizes(tmp_path, x):
    model = seeded("mlp", MLP_PARAMS)
    path = export_onnx(model, x[:1], tmp_path / "m.onnx")
    report = check_onnx_parity(model, path, x[:100], atol=1e-5, min_argmax_agreement=1.0)
    assert isinstance(report, ParityReport) and report.passed
    assert report.n == 100 and {1, 7}.issubset(report.batch_sizes)
    assert report.max_abs_diff <= 1e-5 and report.argmax_agreement == 1.0
    assert json.loads(json.dumps(report.to_dict()))["n"] == 100


def test_parity_breaks_loudly_when_the_file_is_from_another_model(tmp_path, x):
    model_a = seeded("mlp", MLP_PARAMS)
    path = export_onnx(model_a, x[:2], tmp_path / "a.onnx")
    model_b = copy.deepcopy(model_a)  # e.g. fine-tuned after export: the file is stale
    with torch.no_grad():
        model_b[3].weight.add_(torch.randn(model_b[3].weight.shape, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ExportError) as err:
        check_onnx_parity(model_b, path, x, atol=1e-4, min_argmax_agreement=0.999)
    msg = str(err.value)
    assert "disagrees with PyTorch" in msg and "max |Δ|" in msg and "> 0.0001" in msg and "Fix:" in msg
    assert "argmax agreement" in msg

    report = check_onnx_parity(model_b, path, x, atol=1e-4, raise_on_failure=False)
    assert not report.passed and report.max_abs_diff > 1e-4 and report.argmax_agreement < 1.0


class SignBranch(nn.Module):
    """Python control flow on the data: the tracer records only the branch the example took."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(64, 10)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        logits = self.linear(t.flatten(1))
        if t.mean() > 0.5:
            return logits
        return -logits


def test_parity_catches_a_model_that_exports_wrongly(tmp_path, x):
    model = SignBranch().eval()
    bright = torch.ones(2, 1, 8, 8)
    # The exporter warns that the trace may be wrong; the parity check proves that it is.
    with pytest.warns(torch.jit.TracerWarning, match="Python boolean"):
        path = export_onnx(model, bright, tmp_path / "branchy.onnx")
    check_onnx_parity(model, path, torch.ones(8, 1, 8, 8))  # inputs that take the traced branch agree
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        check_onnx_parity(model, path, x[:50])  # digits have mean < 0.5: the other branch
    report = check_onnx_parity(model, path, x[:50], raise_on_failure=False)
    assert report.argmax_agreement < 0.5 and report.max_abs_diff > 0.1


def test_export_onnx_refuses_quantized_models_and_missing_inputs(tmp_path, x):
    with pytest.raises(ExportError, match="onnx_int8"):
        export_onnx(dynamic_int8(seeded("mlp", MLP_PARAMS)), x[:2], tmp_path / "q.onnx")
    with pytest.raises(ExportError, match="example input"):
        export_onnx(seeded("mlp", MLP_PARAMS), torch.zeros(0, 1, 8, 8), tmp_path / "e.onnx")
    with pytest.raises(ExportError, match="does not run on the example input"):
        export_onnx(seeded("mlp", MLP_PARAMS), torch.zeros(2, 3, 3), tmp_path / "wrong_shape.onnx")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ExportError, match="no ONNX file"):
        check_onnx_parity(seeded("mlp", MLP_PARAMS), tmp_path / "missing.onnx", x[:4])


# --------------------------------------------------------------------------- safetensors model folder


@pytest.mark.parametrize("arch,params", [("mlp", MLP_PARAMS), ("cnn", CNN_PARAMS)])
def test_save_and_load_torch_round_trip(tmp_path, x, arch, params):
    model = seeded(arch, params)
    out = save_torch(model, tmp_path / "model", builder=builder(arch, params))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["builder"] == builder(arch, params) and cfg["quantization"] is None and len(cfg["sha256"]) == 64
    again = load_torch(out)
    assert not again.training
    assert torch.equal(predict(again, x), predict(model, x))


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_quantized_models_save_load_and_predict(tmp_path, x, kind):
    model = seeded("cnn", CNN_PARAMS)
    q = dynamic_int8(model) if kind == "dynamic" else static_int8(model, x[:200], method="histogram")
    out = save_torch(q, tmp_path / kind, builder=builder("cnn", CNN_PARAMS))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["kind"] == f"{kind}_int8"
    again = load_torch(out)
    assert torch.equal(predict(again, x), predict(q, x))  # int8 weights and scales restored exactly


def test_int8_model_folder_is_smaller(tmp_path):
    params = {"hidden": [256]}
    model = seeded("mlp", params, in_shape=(1, 28, 28))
    fp32 = save_torch(model, tmp_path / "fp32", builder=builder("mlp", params, (1, 28, 28)))
    int8 = save_torch(dynamic_int8(model), tmp_path / "int8", builder=builder("mlp", params, (1, 28, 28)))
    ratio = (fp32 / "model.safetensors").stat().st_size / (int8 / "model.safetensors").stat().st_size
    assert ratio > 3.5


def test_pruned_model_needs_its_pruned_widths(tmp_path, x):
    model = seeded("cnn", CNN_PARAMS)
    pruned = structured_prune(model, 0.5, x[:2])
    with pytest.raises(ExportError, match="pruned_params"):
        save_torch(pruned, tmp_path / "p", builder=builder("cnn", CNN_PARAMS))
    assert not (tmp_path / "p").exists() or not any((tmp_path / "p").iterdir())
    out = save_torch(pruned, tmp_path / "p", builder=builder("cnn", pruned_params(pruned, "cnn", CNN_PARAMS)))
    assert torch.equal(predict(load_torch(out), x), predict(pruned, x))
    # pruned, then quantized
    q = dynamic_int8(pruned)
    out_q = save_torch(q, tmp_path / "pq", builder=builder("cnn", pruned_params(pruned, "cnn", CNN_PARAMS)))
    assert torch.equal(predict(load_torch(out_q), x), predict(q, x))


def test_load_torch_refuses_incomplete_or_changed_folders(tmp_path, x):
    with pytest.raises(ModelError, match="config.json"):
        load_torch(tmp_path / "nothing")
    out = save_torch(seeded("mlp", MLP_PARAMS), tmp_path / "m", builder=builder("mlp", MLP_PARAMS))
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_torch(out)
    with pytest.raises(ExportError, match="builder lacks"):
        save_torch(seeded("mlp", MLP_PARAMS), tmp_path / "n", builder={"arch": "mlp"})


# --------------------------------------------------------------------------- Hugging Face


class PretrainedLike:
    """The save_pretrained protocol of Hugging Face models and tokenizers (writes its files into a folder)."""

    def __init__(self, files: dict[str, str], fail: bool = False):
        self.files, self.fail = files, fail

    def save_pretrained(self, save_directory: str, safe_serialization: bool = False) -> None:
        assert safe_serialization, "save_hf must ask for safetensors"
        for name, text in self.files.items():
            (Path(save_directory) / name).write_text(text)
        if self.fail:
            raise OSError("disk went away")


class TokenizerLike:
    def save_pretrained(self, save_directory: str) -> None:
        (Path(save_directory) / "tokenizer.json").write_text("{}")


def test_save_hf_writes_a_complete_folder_or_nothing(tmp_path):
    target = tmp_path / "hf"
    save_hf(PretrainedLike({"model.safetensors": "v1", "config.json": "{}"}), TokenizerLike(), target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    with pytest.raises(OSError):
        save_hf(PretrainedLike({"model.safetensors": "v2"}, fail=True), None, target)
    assert (target / "model.safetensors").read_text() == "v1"  # the old export is intact
    save_hf(PretrainedLike({"model.safetensors": "v3"}), None, target)
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary folders left
    with pytest.raises(ExportError, match="save_torch"):
        save_hf(nn.Linear(2, 2), None, tmp_path / "plain")


def test_save_hf_with_a_real_transformers_model(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed in this environment (optional dependency)"
    )
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3
    )
    model = transformers.BertForSequenceClassification(config).eval()
    out = save_hf(model, None, tmp_path / "bert")
    again = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    assert (out / "model.safetensors").is_file()
