"""Pruning and int8 quantization on tiny models (CPU, offline, seconds)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.compress import (
    count_nonzero_parameters,
    cosine_similarity,
    dynamic_int8,
    magnitude_prune,
    onnx_int8,
    pruned_params,
    sensitivity_int8,
    sparsity,
    static_int8,
    structured_prune,
)
from distill.errors import DistillError, ExportError, ModelError
from distill.models import build, count_parameters

MLP_PARAMS = {"hidden": [32]}
CNN_PARAMS = {"channels": [4, 8], "hidden": 16, "dropout": 0.0}


# --------------------------------------------------------------------------- helpers


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (offline), as (N, 1, 8, 8) floats in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, torch.from_numpy(d.target.astype(np.int64))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float = 0.01) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def seeded(arch: str, in_shape: tuple[int, ...], params: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build(arch, in_shape, 10, params).eval()


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return digits()


@pytest.fixture(scope="module")
def trained_mlp(data) -> nn.Module:
    x, y = data
    return train(seeded("mlp", (1, 8, 8), MLP_PARAMS), x, y, steps=150)


@pytest.fixture(scope="module")
def trained_cnn(data) -> nn.Module:
    x, y = data
    return train(seeded("cnn", (1, 8, 8), CNN_PARAMS), x, y, steps=100)


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


# --------------------------------------------------------------------------- magnitude pruning


def test_magnitude_prune_reaches_the_target_globally_and_leaves_the_input_alone(data):
    model = seeded("mlp", (1, 8, 8), MLP_PARAMS)
    with torch.no_grad():
        model[1].weight.mul_(10.0)  # the first layer's weights are larger: global pruning must spare it
    before = copy.deepcopy(model.state_dict())
    pruned = magnitude_prune(model, 0.5)

    assert sparsity(model) == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert sparsity(pruned) == pytest.approx(0.5, abs=1e-3)
    # permanent: no weight_orig / weight_mask, same keys and shapes as an unpruned model
    assert pruned.state_dict().keys() == model.state_dict().keys()
    first, last = pruned[1].weight, pruned[3].weight
    assert float((first == 0).float().mean()) < float((last == 0).float().mean())
    assert count_nonzero_parameters(pruned) < count_nonzero_parameters(model)
    x, _ = data
    assert predict(pruned, x[:4]).shape == (4, 10)


def test_magnitude_prune_keeps_the_largest_weights():
    model = seeded("cnn", (1, 8, 8), CNN_PARAMS)
    pruned = magnitude_prune(model, 0.3)
    def weights(m: nn.Module) -> torch.Tensor:
        layers = [w for w in m.modules() if isinstance(w, (nn.Linear, nn.Conv2d))]
        return torch.cat([w.weight.detach().abs().flatten() for w in layers])

    kept, orig = weights(pruned), weights(model)
    removed = orig[kept == 0]
    assert float(removed.max()) <= float(orig[kept != 0].min())
    assert sparsity(pruned) == pytest.approx(0.3, abs=1e-3)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_magnitude_prune_rejects_a_bad_sparsity(bad):
    with pytest.raises(ModelError, match="sparsity must be in"):
        magnitude_prune(seeded("mlp", (1, 8, 8), MLP_PARAMS), bad)


# --------------------------------------------------------------------------- structured pruning


def test_structured_prune_shrinks_mlp_layers(data):
    x, _ = data
    model = seeded("mlp", (1, 8, 8), MLP_PARAMS)  # 64 -> 32 -> 10
    pruned = structured_prune(model, 0.5, x[:2])
    linears = [m for m in pruned if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 16), (16, 10)]
    assert count_parameters(pruned) < count_parameters(model)
    assert predict(pruned, x[:5]).shape == (5, 10)
    assert model[1].out_features == 32  # the input model is untouched


def test_structured_prune_shrinks_cnn_channels_and_the_linear_after_flatten(data):
    x, _ = data
    model = seeded("cnn", (1, 8, 8), CNN_PARAMS)  # conv 1->4, conv 4->8, 8*4*4=128 -> 16 -> 10
    pruned = structured_prune(model, 0.5, x[:2])
    convs = [m for m in pruned if isinstance(m, nn.Conv2d)]
    bns = [m for m in pruned if isinstance(m, nn.BatchNorm2d)]
    linears = [m for m in pruned if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 2), (2, 4)]
    assert [b.num_features for b in bns] == [2, 4]
    assert [(m.in_features, m.out_features) for m in linears] == [(4 * 4 * 4, 8), (8, 10)]
    assert count_parameters(pruned) < count_parameters(model) / 2
    assert predict(pruned, x[:3]).shape == (3, 10)
    # the builder rebuilds exactly these shapes
    rebuilt = build("cnn", (1, 8, 8), 10, pruned_params(pruned, "cnn", CNN_PARAMS))
    rebuilt.load_state_dict(pruned.state_dict())


@pytest.mark.parametrize(
    "arch,params",
    [
        ("mlp", MLP_PARAMS),
        ("cnn", CNN_PARAMS),
        ("mlp", {"hidden": [32, 24]}),
        ("cnn", {"channels": [4, 8], "hidden": 0, "batch_norm": False}),  # conv -> flatten -> output layer
    ],
)
def test_structured_prune_at_amount_zero_is_the_same_function(data, arch, params):
    x, _ = data
    model = seeded(arch, (1, 8, 8), params)
    same = structured_prune(model, 0.0, x[:2])
    assert torch.equal(predict(same, x[:64]), predict(model, x[:64]))


def test_structured_prune_cnn_without_batchnorm_or_hidden_layer(data):
    x, _ = data
    model = seeded("cnn", (1, 8, 8), {"channels": [4, 8], "hidden": 0, "batch_norm": False})
    pruned = structured_prune(model, 0.5, x[:2])  # criterion auto = L1 of each filter (no BN to read)
    convs = [m for m in pruned if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.bias.shape[0]) for c in convs] == [(1, 2, 2), (2, 4, 4)]
    assert (pruned[-1].in_features, pruned[-1].out_features) == (4 * 16, 10)

    def top(conv: nn.Conv2d, k: int) -> torch.Tensor:  # the k filters of largest L1 norm, in their order
        return torch.topk(conv.weight.detach().abs().sum(dim=(1, 2, 3)), k).indices.sort().values

    keep0, keep1 = top(model[0], 2), top(model[3], 4)
    assert torch.equal(pruned[0].weight, model[0].weight[keep0])
    assert torch.equal(pruned[3].weight, model[3].weight[keep1][:, keep0])
    assert torch.equal(pruned[3].bias, model[3].bias[keep1])


def test_structured_prune_of_dead_channels_is_exact(data):
    """Channels whose BN scale and shift are 0 output exact zeros: removing them (and their
    channel-major blocks in the Linear after Flatten) must not change the output at all.
    A wrong Flatten mapping would remove live features and change it."""
    x, _ = data
    model = seeded("cnn", (1, 8, 8), CNN_PARAMS)
    with torch.no_grad():
        for bn, dead in ((model[1], [0, 3]), (model[5], [1, 2, 5, 6])):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.1, 0.1)
            bn.weight[dead] = 0.0
            bn.bias[dead] = 0.0
        model[8].weight[1::2] = 0.0  # and half of the hidden neurons (pruned too) are dead
        model[8].bias[1::2] = -1.0
    pruned = structured_prune(model, 0.5, x[:2])  # criterion auto = BN |gamma|
    assert (pruned[8].in_features, pruned[8].out_features) == (4 * 16, 8)
    torch.testing.assert_close(predict(pruned, x[:128]), predict(model, x[:128]), rtol=1e-5, atol=1e-5)


def test_structured_prune_of_dead_neurons_is_exact(data):
    x, _ = data
    model = seeded("mlp", (1, 8, 8), MLP_PARAMS)
    with torch.no_grad():
        model[1].weight[::2] = 0.0  # neurons 0, 2, 4, ... of the first hidden layer are dead
        model[1].bias[::2] = -1.0  # (ReLU of a negative constant is 0)
    pruned = structured_prune(model, 0.5, x[:2], criterion="l1")
    assert pruned[1].out_features == 16 and pruned[3].in_features == 16
    torch.testing.assert_close(predict(pruned, x[:128]), predict(model, x[:128]))


def test_structured_prune_never_touches_input_or_output(data):
    x, _ = data
    model = seeded("mlp", (1, 8, 8), {"hidden": [3]})
    pruned = structured_prune(model, 0.9, x[:2])
    assert pruned[1].in_features == 64 and pruned[1].out_features == 1  # at least one unit stays
    assert pruned[-1].out_features == 10


def test_pruned_model_trains(data):
    x, y = data
    pruned = structured_prune(seeded("cnn", (1, 8, 8), CNN_PARAMS), 0.5, x[:2]).train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    before = [p.detach().clone() for p in pruned.parameters()]
    loss = F.cross_entropy(pruned(x[:32]), y[:32])
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.shape == p.shape for p in pruned.parameters())
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, pruned.parameters()))
    with torch.no_grad():
        assert F.cross_entropy(pruned(x[:32]), y[:32]).item() < loss.item()


def test_structured_prune_explains_what_it_cannot_do(data):
    x, _ = data

    class NotSequential(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, t):
            return self.a(t)

    with pytest.raises(ModelError, match="magnitude_prune"):
        structured_prune(NotSequential(), 0.5, torch.zeros(1, 4))
    with pytest.raises(ModelError, match="amount must be in"):
        structured_prune(seeded("mlp", (1, 8, 8), MLP_PARAMS), 1.0, x[:2])
    with pytest.raises(ModelError, match="nothing to prune"):
        structured_prune(seeded("mlp", (1, 8, 8), {"hidden": []}), 0.5, x[:2])
    with pytest.raises(ModelError, match="example_input"):
        structured_prune(seeded("mlp", (1, 8, 8), MLP_PARAMS), 0.5, torch.zeros(1, 3, 5, 5))
    with pytest.raises(ModelError, match="criterion 'bn'"):
        structured_prune(seeded("mlp", (1, 8, 8), MLP_PARAMS), 0.5, x[:2], criterion="bn")


def test_structured_prune_half_the_channels_cuts_the_compute():
    # the measured latency drop lives in benchmarks/deploy.py (timed side by side), not in a timed test
    from distill.bench import count_flops

    model = seeded("cnn", (1, 28, 28), {"channels": [32, 64], "hidden": 128, "dropout": 0.0})
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    pruned = structured_prune(model, 0.5, x[:2])
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32]
    full, half = count_flops(model, (1, 28, 28)), count_flops(pruned, (1, 28, 28))
    assert half < 0.4 * full, f"pruned CNN has {half / full:.2f} of the FLOPs"
    with torch.inference_mode():
        assert pruned(x).shape == model(x).shape


# --------------------------------------------------------------------------- PyTorch int8


def test_dynamic_int8_quantizes_linear_layers_and_still_predicts(data, trained_mlp):
    x, _ = data
    q = dynamic_int8(trained_mlp)
    kinds = [m._get_name() for m in q]
    assert kinds == ["Flatten", "DynamicQuantizedLinear", "ReLU", "DynamicQuantizedLinear"]
    assert q[1].weight().qscheme() == torch.per_channel_affine
    assert all(isinstance(m, nn.Linear) for m in trained_mlp if "Linear" in type(m).__name__)  # input untouched
    assert agreement(predict(q, x), predict(trained_mlp, x)) >= 0.98
    assert q.distill_quantization == {"kind": "dynamic_int8", "per_channel": True, "keep_float": []}

    per_tensor = dynamic_int8(trained_mlp, per_channel=False)
    assert per_tensor[1].weight().qscheme() == torch.per_tensor_affine


def test_dynamic_int8_keeps_named_layers_in_float(trained_mlp):
    q = dynamic_int8(trained_mlp, keep_float=["3"])
    assert type(q[3]) is nn.Linear and type(q[1]) is not nn.Linear
    with pytest.raises(ModelError, match="not the name of an nn.Linear"):
        dynamic_int8(trained_mlp, keep_float=["classifier"])


@pytest.mark.parametrize("method", ["minmax", "histogram"])
def test_static_int8_cnn_fuses_calibrates_and_predicts(data, trained_cnn, method):
    x, _ = data
    q = static_int8(trained_cnn, x[:256], method=method)
    names = [m._get_name() for m in q.modules()]
    assert "QuantizedConvReLU2d" in names and "QuantizedLinearReLU" in names  # fused
    assert "Quantize" in names and "DeQuantize" in names
    out = predict(q, x)
    assert out.dtype == torch.float32 and out.shape == (len(x), 10)
    assert agreement(out, predict(trained_cnn, x)) >= 0.95
    assert q.distill_quantization["kind"] == "static_int8"


def test_static_int8_mlp_per_tensor(data, trained_mlp):
    x, _ = data
    q = static_int8(trained_mlp, x[:256], per_channel=False)
    assert agreement(predict(q, x), predict(trained_mlp, x)) >= 0.95


def test_static_int8_says_what_it_cannot_do(data, trained_mlp):
    x, _ = data
    with pytest.raises(ModelError, match="calibration"):
        static_int8(trained_mlp, torch.zeros(0, 1, 8, 8))
    with pytest.raises(ModelError, match="unknown calibration method"):
        static_int8(trained_mlp, x[:8], method="kl")
    with pytest.raises(ModelError, match="nn.Sequential"):
        static_int8(nn.ModuleDict({"a": nn.Linear(2, 2)}), x[:8])  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="no int8 kernel"):
        static_int8(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.GELU(), nn.Linear(8, 2)), x[:8])


# --------------------------------------------------------------------------- sensitivity


def test_sensitivity_int8_strict_bound_keeps_the_most_sensitive_layers_in_float(data, trained_mlp):
    x, _ = data
    model = copy.deepcopy(trained_mlp)
    q, report = sensitivity_int8(model, x[:256], bound=0.99999, per_channel=False)
    alone = [r["metric_alone"] for r in report.layers]
    assert sorted(r["layer"] for r in report.layers) == ["1", "3"] and alone == sorted(alone)
    assert report.all_int8_metric < 0.99999, "the premise of this test: full int8 moves this output"
    assert report.keep_float, report
    # greedy, most sensitive first
    assert report.keep_float == [r["layer"] for r in report.layers][: len(report.keep_float)]
    assert report.met and report.final_metric >= 0.99999
    for name in report.keep_float:
        assert type(q.get_submodule(name)) is nn.Linear
    measured = cosine_similarity(predict(model, x[:256]), predict(q, x[:256]))
    assert report.final_metric == pytest.approx(measured, abs=1e-6)
    assert report.to_dict()["keep_float"] == report.keep_float


def test_sensitivity_int8_loose_bound_quantizes_everything(data, trained_mlp):
    x, _ = data
    q, report = sensitivity_int8(trained_mlp, x[:256], bound=0.5)
    assert report.keep_float == [] and report.met
    assert report.final_metric == report.all_int8_metric
    assert not any(type(m) is nn.Linear for m in q.modules())


class TinyEncoder(nn.Module):
    """A BERT-shaped encoder (named Linear layers nested in blocks, dict inputs), not a Sequential."""

    def __init__(self, vocab: int = 50, dim: int = 32, layers: int = 2, classes: int = 3):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, dim)
        self.layer = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.query, block.key, block.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
            block.output = nn.Linear(dim, dim)
            block.intermediate, block.out = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            block.norm1, block.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.layer.append(block)
        self.classifier = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(input_ids)
        mask = (1.0 - attention_mask[:, None, :].float()) * -1e4
        for b in self.layer:
            att = torch.softmax(b.query(h) @ b.key(h).transpose(1, 2) / h.shape[-1] ** 0.5 + mask, dim=-1)
            h = b.norm1(h + b.output(att @ b.value(h)))
            h = b.norm2(h + b.out(F.gelu(b.intermediate(h))))
        return self.classifier(h[:, 0])


def test_sensitivity_int8_works_on_a_bert_shaped_model_through_run_model():
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    g = torch.Generator().manual_seed(1)
    batch = {
        "input_ids": torch.randint(0, 50, (16, 12), generator=g),
        "attention_mask": torch.ones(16, 12, dtype=torch.long),
    }

    def run_model(m: nn.Module) -> torch.Tensor:
        return m(**batch)

    q, report = sensitivity_int8(model, run_model, bound=0.99999)
    names = {r["layer"] for r in report.layers}
    assert "layer.0.query" in names and "classifier" in names and len(names) == 13
    assert report.keep_float and report.met
    assert run_model(q).shape == (16, 3)
    assert type(q.get_submodule(report.keep_float[0])) is nn.Linear

    # a custom metric (higher is better) and a subset of candidate layers
    q2, r2 = sensitivity_int8(
        model, run_model, bound=-1e9, metric=lambda a, b: -float((a - b).abs().max()), layers=["classifier"]
    )
    assert [r["layer"] for r in r2.layers] == ["classifier"] and r2.keep_float == []
    assert type(q2.get_submodule("layer.0.query")) is nn.Linear  # not a candidate: stays float
    assert type(q2.get_submodule("classifier")) is not nn.Linear


# --------------------------------------------------------------------------- ONNX Runtime int8


@pytest.fixture(scope="module")
def mnist_sized_mlp(data) -> tuple[nn.Module, torch.Tensor]:
    """MLP 784 -> 256 -> 10 on digits upsampled to 28x28 (big enough for int8 to matter), briefly trained."""
    x, y = data
    x28 = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    model = train(seeded("mlp", (1, 28, 28), {"hidden": [256]}), x28, y, steps=40, lr=0.003)
    return model, x28


def _export(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    from distill.export import export_onnx

    return export_onnx(model, x[:2], path)


@pytest.mark.parametrize("calibrated", [False, True], ids=["dynamic", "static-qdq"])
def test_onnx_int8_is_smaller_and_still_predicts(tmp_path, mnist_sized_mlp, calibrated):
    from distill.export import onnx_session, run_onnx

    model, x = mnist_sized_mlp
    fp32 = _export(model, x, tmp_path / "model.onnx")
    out = tmp_path / "int8" / "model.int8.onnx"
    result = onnx_int8(fp32, out, calibration=x[:256] if calibrated else None)
    assert result == out and out.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.int8.onnx"]  # nothing half-written left
    ratio = fp32.stat().st_size / out.stat().st_size
    assert ratio >= 2.0, f"int8 file only {ratio:.2f}x smaller"
    got = torch.cat([run_onnx(onnx_session(out), x[i : i + 100]) for i in range(0, len(x), 100)])
    assert agreement(got, predict(model, x)) >= 0.95


def _ort_out(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_onnx_int8_file_is_compacted_without_changing_what_it_computes(tmp_path, data, trained_mlp):
    """Against ONNX Runtime's own quantizer output: same outputs bit for bit, fewer bytes, no long names."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    x, _ = data
    fp32 = _export(trained_mlp, x, tmp_path / "m.onnx")
    pre, plain = tmp_path / "pre.onnx", tmp_path / "plain.int8.onnx"
    quant_pre_process(str(fp32), str(pre))
    quantize_dynamic(str(pre), str(plain), per_channel=True, weight_type=QuantType.QInt8)
    ours = onnx_int8(fp32, tmp_path / "m.int8.onnx")
    assert ours.stat().st_size < plain.stat().st_size - 1000
    np.testing.assert_array_equal(_ort_out(ours, x[:64]), _ort_out(plain, x[:64]))
    m = onnx.load(str(ours))
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    assert not m.graph.value_info and all(not n.name for n in m.graph.node)
    assert max(len(t) for n in m.graph.node for t in [*n.input, *n.output]) <= len("logits")
    assert {o.domain for o in m.opset_import} <= {"", "ai.onnx"} | {n.domain for n in m.graph.node}
    assert [n.op_type for n in m.graph.node] == [n.op_type for n in onnx.load(str(plain)).graph.node]


def test_onnx_int8_static_keeps_float_outputs(tmp_path, data, trained_mlp):
    """Static QDQ: the quantizer's Q/DQ pair on the logits is dropped; the last layer outputs float."""
    import onnx

    x, _ = data
    fp32 = _export(trained_mlp, x, tmp_path / "m.onnx")
    out = onnx_int8(fp32, tmp_path / "m.static.onnx", calibration=x[:128], per_channel=False)
    m = onnx.load(str(out))
    producer = {t: n for n in m.graph.node for t in n.output}
    assert producer["logits"].op_type not in ("DequantizeLinear", "QuantizeLinear")
    used = {t for n in m.graph.node for t in n.input}
    assert all(i.name in used for i in m.graph.initializer)
    assert sum(n.op_type == "QuantizeLinear" for n in m.graph.node) >= 1  # still int8 inside
    expected = predict(trained_mlp, x[:300])
    assert agreement(torch.from_numpy(_ort_out(out, x[:300])), expected) >= 0.95


def test_onnx_int8_static_calibration_methods_and_cnn(tmp_path, data, trained_cnn):
    from distill.export import check_onnx_parity

    x, _ = data
    fp32 = _export(trained_cnn, x, tmp_path / "cnn.onnx")
    for method in ("minmax", "entropy", "percentile"):
        out = onnx_int8(fp32, tmp_path / f"cnn.{method}.onnx", calibration=x[:128], method=method, per_channel=False)
        report = check_onnx_parity(trained_cnn, out, x[:256], atol=10.0, min_argmax_agreement=0.9)
        assert report.passed
    dyn = onnx_int8(fp32, tmp_path / "cnn.dyn.onnx")
    assert check_onnx_parity(trained_cnn, dyn, x[:256], atol=10.0, min_argmax_agreement=0.9).passed


def test_onnx_int8_errors_are_distill_errors(tmp_path, data, trained_mlp):
    x, _ = data
    with pytest.raises(ExportError, match="no ONNX file"):
        onnx_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    fp32 = _export(trained_mlp, x, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="unknown calibration method"):
        onnx_int8(fp32, tmp_path / "out.onnx", calibration=x[:8], method="kl")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(DistillError):
        onnx_int8(broken, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
