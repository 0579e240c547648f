"""Teachers of every kind, with real components: ONNX (exported from torch), scikit-learn
(saved with skops and joblib), precomputed output files (Parquet, NPZ, JSONL) and ensembles."""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from distill.errors import TeacherError
from distill.tasks.classification.teachers import TorchTeacher
from distill.tasks.classification.teachers.ensemble import EnsembleTeacher, teacher_logits_for
from distill.tasks.classification.teachers.onnx import OnnxTeacher
from distill.tasks.classification.teachers.precomputed import PrecomputedTeacher
from distill.tasks.classification.teachers.sklearn import SklearnTeacher

SAMPLE = (1, 8, 8)  # digits samples as distill's data layer shapes them


def _mlp(seed: int, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, classes)).eval()


def _x(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *SAMPLE, generator=torch.Generator().manual_seed(seed))


def _export(module: nn.Module, path: Path, sample_shape: tuple[int, ...] = SAMPLE) -> Path:
    # torch >= 2.9 defaults to the dynamo exporter, which needs the optional `onnxscript` package;
    # the TorchScript exporter (dynamo=False) works without it but announces its deprecation with a
    # DeprecationWarning attributed to the caller (so pyproject's "torch.*" filter misses it).
    # That warning is about torch's API, not about our code, so it is ignored here only.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            module, (torch.zeros(2, *sample_shape),), str(path), input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    return path


# ---------------------------------------------------------------------- ONNX
def test_onnx_teacher_matches_torch(tmp_path: Path) -> None:
    module = _mlp(0)
    teacher = OnnxTeacher(_export(module, tmp_path / "t.onnx"), batch_size=7, num_threads=1)
    assert teacher.num_classes == 10 and teacher.input_name == "x" and teacher.output_name == "logits"
    x = _x(20)
    got = teacher.logits(x)
    with torch.no_grad():
        want = module(x)
    assert got.dtype == torch.float32 and got.shape == (20, 10)
    assert torch.allclose(got, want, atol=1e-5)
    assert teacher.logits(x[:0]).shape == (0, 10)


def test_onnx_fingerprint_follows_the_file(tmp_path: Path) -> None:
    a = OnnxTeacher(_export(_mlp(0), tmp_path / "a.onnx"), num_threads=1)
    a_again = OnnxTeacher(tmp_path / "a.onnx", num_threads=1)
    b = OnnxTeacher(_export(_mlp(1), tmp_path / "b.onnx"), num_threads=1)
    assert len(a.fingerprint()) == 64
    assert a.fingerprint() == a_again.fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_onnx_wrong_sample_shape_is_a_clear_error(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)).eval()
    teacher = OnnxTeacher(_export(module, tmp_path / "flat.onnx", (64,)), num_threads=1)
    assert teacher.logits(torch.randn(3, 64)).shape == (3, 10)
    with pytest.raises(TeacherError, match=r"expects input 'x' shaped \(batch, 64\) but the samples are shaped \(1, 8, 8\)"):  # noqa: E501
        teacher.logits(_x(3))
    with pytest.raises(TeacherError, match=r"shaped \(63,\).*Fix"):
        teacher.check_sample_shape((63,))


def test_onnx_missing_invalid_and_misnamed(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="not found.*Fix"):
        OnnxTeacher(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\x01\x02")
    with pytest.raises(TeacherError, match="not a valid ONNX model.*Fix"):
        OnnxTeacher(bad)
    good = _export(_mlp(0), tmp_path / "t.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(TeacherError, match="not a valid ONNX model"):
        OnnxTeacher(truncated)
    with pytest.raises(TeacherError, match=r"no input 'pixels'; its inputs: x"):
        OnnxTeacher(good, input_name="pixels")
    with pytest.raises(TeacherError, match=r"no output 'probs'; its outputs: logits"):
        OnnxTeacher(good, output_name="probs")
    with pytest.raises(TeacherError, match="outputs 10 classes but 3 were expected"):
        OnnxTeacher(good, num_classes=3)


# ------------------------------------------------------------- scikit-learn
@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.astype(np.float32) / 16.0)[:, None], d.target.astype(np.int64)


@pytest.fixture(scope="module")
def forest(digits: tuple[np.ndarray, np.ndarray]):
    from sklearn.ensemble import RandomForestClassifier

    x, y = digits
    return RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0, n_jobs=1).fit(x.reshape(len(x), -1), y)


def _expected_log_proba(est, x: np.ndarray) -> torch.Tensor:
    p = est.predict_proba(x.reshape(len(x), -1))
    return torch.from_numpy(np.log(np.maximum(p, 1e-7)).astype(np.float32))


def test_sklearn_teacher_gives_log_probabilities(forest, digits) -> None:
    x, _ = digits
    teacher = SklearnTeacher(forest)
    assert teacher.num_classes == 10
    got = teacher.logits(torch.from_numpy(x[:50]))
    assert got.dtype == torch.float32 and got.shape == (50, 10)
    assert torch.allclose(got, _expected_log_proba(forest, x[:50]), atol=1e-6)
    assert got.min() >= np.log(1e-7) - 1e-4  # clipped, never -inf
    assert len(teacher.fingerprint()) == 64 and teacher.fingerprint() == SklearnTeacher(forest).fingerprint()


def test_sklearn_skops_needs_its_untrusted_types_listed(forest, digits, tmp_path: Path) -> None:
    sio = pytest.importorskip("skops.io")
    path = tmp_path / "forest.skops"
    sio.dump(forest, path)
    with pytest.raises(TeacherError, match=r"does not trust by default: 'sklearn\.tree\._tree\.Tree'.*trusted_types"):
        SklearnTeacher.from_path(path)
    teacher = SklearnTeacher.from_path(path, trusted_types=["sklearn.tree._tree.Tree"])
    x = torch.from_numpy(digits[0][:30])
    assert torch.allclose(teacher.logits(x), _expected_log_proba(forest, digits[0][:30]), atol=1e-6)


def test_sklearn_skops_safe_estimator_loads_without_flags(digits, tmp_path: Path) -> None:
    sio = pytest.importorskip("skops.io")
    from sklearn.linear_model import LogisticRegression

    x, y = digits
    est = LogisticRegression(max_iter=300).fit(x.reshape(len(x), -1)[:400], y[:400])
    path = tmp_path / "lr.skops"
    sio.dump(est, path)
    teacher = SklearnTeacher.from_path(path)
    assert torch.allclose(teacher.logits(torch.from_numpy(x[:10])), _expected_log_proba(est, x[:10]), atol=1e-6)
    fp = teacher.fingerprint()
    est2 = LogisticRegression(max_iter=300, C=0.1).fit(x.reshape(len(x), -1)[:400], y[:400])
    sio.dump(est2, path)
    assert SklearnTeacher.from_path(path).fingerprint() != fp  # the cache key follows the file


@pytest.mark.parametrize("suffix", [".joblib", ".pkl"])
def test_sklearn_pickle_needs_the_trust_flag(forest, digits, tmp_path: Path, caplog, suffix: str) -> None:
    import joblib

    path = tmp_path / f"forest{suffix}"
    if suffix == ".joblib":
        joblib.dump(forest, path)
    else:
        path.write_bytes(pickle.dumps(forest))
    with pytest.raises(TeacherError, match=r"runs whatever code.*trust_pickle=True"):
        SklearnTeacher.from_path(path)
    with caplog.at_level(logging.WARNING, logger="distill"):
        teacher = SklearnTeacher.from_path(path, trust_pickle=True)
    assert any("trust_pickle" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    x = torch.from_numpy(digits[0][:20])
    assert torch.allclose(teacher.logits(x), _expected_log_proba(forest, digits[0][:20]), atol=1e-6)


def test_sklearn_errors(forest, tmp_path: Path) -> None:
    from sklearn.svm import LinearSVC

    with pytest.raises(TeacherError, match="not found"):
        SklearnTeacher.from_path(tmp_path / "missing.skops")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"x")
    with pytest.raises(TeacherError, match="unknown scikit-learn teacher format '.bin'"):
        SklearnTeacher.from_path(odd)
    with pytest.raises(TeacherError, match="fitted on 64 features but the samples have 16"):
        SklearnTeacher(forest).logits(torch.zeros(2, 1, 4, 4))
    svc = LinearSVC().fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(TeacherError, match="no predict_proba"):
        SklearnTeacher(svc)


def test_sklearn_estimator_that_saw_some_classes(digits) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = digits
    keep = np.isin(y, [0, 2, 5])
    est = LogisticRegression(max_iter=300).fit(x[keep].reshape(keep.sum(), -1), y[keep])
    teacher = SklearnTeacher(est, num_classes=10)
    out = teacher.logits(torch.from_numpy(x[:5]))
    assert out.shape == (5, 10)
    assert torch.allclose(out[:, [0, 2, 5]], _expected_log_proba(est, x[:5]), atol=1e-6)
    assert torch.allclose(out[:, 1], torch.full((5,), float(np.log(np.float32(1e-7)))))
    with pytest.raises(TeacherError, match="cannot be matched"):
        SklearnTeacher(est, num_classes=4)


# ---------------------------------------------------------------- precomputed
IDS = [f"digits-{i:04d}" for i in range(12)]


def _outputs(n: int = 12, c: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c)).astype(np.float32) * 2


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _write_jsonl(path: Path, ids: list[str], rows: np.ndarray, key: str = "logits") -> Path:
    path.write_text("".join(json.dumps({"id": i, key: r.tolist()}) + "\n" for i, r in zip(ids, rows)))
    return path


def _write(fmt: str, path_stem: Path, ids: list[str], rows: np.ndarray, key: str) -> Path:
    import pandas as pd

    if fmt == "jsonl":
        return _write_jsonl(path_stem.with_suffix(".jsonl"), ids, rows, key)
    if fmt == "npz":
        p = path_stem.with_suffix(".npz")
        np.savez(p, ids=np.array(ids, dtype=str), **{key: rows})
        return p
    p = path_stem.with_suffix(".parquet")
    if fmt == "parquet-list":
        pd.DataFrame({"id": ids, key: list(rows)}).to_parquet(p)
    else:  # one column per class, written in a scrambled order to check the ordering by trailing number
        prefix = "prob_" if key == "probs" else "class"
        cols = {f"{prefix}{c}": rows[:, c] for c in range(rows.shape[1])}
        order = [f"{prefix}{c}" for c in (2, 0, 3, 1)]
        pd.DataFrame({"id": ids, **{k: cols[k] for k in order}}).to_parquet(p)
    return p


@pytest.mark.parametrize("fmt", ["jsonl", "npz", "parquet-list", "parquet-columns"])
@pytest.mark.parametrize("key", ["logits", "probs"])
def test_precomputed_reads_every_format(tmp_path: Path, fmt: str, key: str) -> None:
    logits = _outputs()
    rows = logits if key == "logits" else _probs(logits)
    path = _write(fmt, tmp_path / "out", IDS, rows, key)
    teacher = PrecomputedTeacher.from_file(path, IDS)
    assert teacher.num_classes == 4 and teacher.needs_ids
    order = [IDS[i] for i in (5, 0, 11, 3)]
    got = teacher.logits_for_ids(order)
    want = rows[[5, 0, 11, 3]] if key == "logits" else np.log(rows[[5, 0, 11, 3]])
    assert got.dtype == torch.float32
    assert torch.allclose(got, torch.from_numpy(want.astype(np.float32)), atol=1e-5)
    if key == "probs":  # log-probabilities give the same softmax as the logits they came from
        same = torch.softmax(torch.from_numpy(logits[[5, 0, 11, 3]]), 1)
        assert torch.allclose(torch.softmax(got, 1), same, atol=1e-5)
    assert len(teacher.fingerprint()) == 64


def test_precomputed_missing_ids_error_names_how_many_and_which(tmp_path: Path) -> None:
    ids = [f"digits-{i:04d}" for i in range(1200)]
    kept = [i for n, i in enumerate(ids) if n not in (1, 7, 900)]
    path = _write_jsonl(tmp_path / "x.jsonl", kept, _outputs(len(kept)))
    with pytest.raises(TeacherError) as err:
        PrecomputedTeacher.from_file(path, ids)
    msg = str(err.value)
    assert "teacher outputs file x.jsonl lacks 3 of the 1,200 sample ids (digits-0001, digits-0007, digits-0900)" in msg
    assert "Fix:" in msg


def test_precomputed_extra_and_duplicate_ids_are_errors(tmp_path: Path) -> None:
    extra = [*IDS, "other-1", "other-2"]
    path = _write_jsonl(tmp_path / "x.jsonl", extra, _outputs(len(extra)))
    with pytest.raises(TeacherError, match=r"has 2 ids that are not sample ids of the data \(other-1, other-2\)"):
        PrecomputedTeacher.from_file(path, IDS)
    many = [*IDS, *[f"x{i}" for i in range(7)]]
    path = _write_jsonl(tmp_path / "y.jsonl", many, _outputs(len(many)))
    with pytest.raises(TeacherError, match=r"has 7 ids .* \(x0, x1, x2, x3, x4, \.\.\.\)"):
        PrecomputedTeacher.from_file(path, IDS)
    both = [*IDS[2:], "stray"]
    path = _write_jsonl(tmp_path / "z.jsonl", both, _outputs(len(both)))
    with pytest.raises(TeacherError, match=r"lacks 2 of the 12 .*; it also has 1 id that is not a sample id of the data \(stray\)"):
        PrecomputedTeacher.from_file(path, IDS)
    dup = [*IDS, IDS[3]]
    path = _write_jsonl(tmp_path / "d.jsonl", dup, _outputs(len(dup)))
    with pytest.raises(TeacherError, match=r"repeats 1 id \('digits-0003' \(line 4 and line 13\)\)"):
        PrecomputedTeacher.from_file(path, IDS)


def test_precomputed_jsonl_problems_name_their_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"id": i, "logits": r.tolist()}) for i, r in zip(IDS, _outputs())]
    lines[2] = json.dumps({"id": IDS[2], "logits": [1.0, 2.0, 3.0]})  # line 3: wrong width
    lines[4] = '{"id": "digits-0004", "logits": [1.0, 2.0'  # line 5: malformed
    lines[6] = json.dumps({"id": IDS[6], "logits": [1.0, float("nan"), 0.0, 0.0]})  # line 7: NaN
    lines[8] = json.dumps({"id": IDS[8], "logits": [1.0, None, 0.0, 0.0]})  # line 9: null
    lines[9] = json.dumps({"id": IDS[9], "scores": [1.0, 0.0, 0.0, 0.0]})  # line 10: no logits/probs
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TeacherError) as err:
        PrecomputedTeacher.from_file(path, IDS)
    msg = str(err.value)
    assert "line 3 has 3 values, expected 4 (the width of line 1)" in msg
    assert "line 5 is not valid JSON" in msg
    assert "line 10 needs exactly one of 'logits' or 'probs'" in msg
    # value checks come after the structure is fixed
    lines[2] = json.dumps({"id": IDS[2], "logits": [1.0, 2.0, 3.0, 4.0]})
    lines[4] = json.dumps({"id": IDS[4], "logits": [1.0, 2.0, 3.0, 4.0]})
    lines[9] = json.dumps({"id": IDS[9], "logits": [1.0, 2.0, 3.0, 4.0]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TeacherError, match=r"line 7 has a non-finite value; line 9 has a non-finite value"):
        PrecomputedTeacher.from_file(path, IDS)


def test_precomputed_width_and_probability_checks(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "ok.jsonl", IDS, _outputs())
    with pytest.raises(TeacherError, match="line 1 has 4 values, expected 10"):
        PrecomputedTeacher.from_file(path, IDS, num_classes=10)
    p = _probs(_outputs())
    p[3] *= 0.5
    path = _write("parquet-list", tmp_path / "p", IDS, p, "probs")
    with pytest.raises(TeacherError, match=r"row 3 has probabilities summing to 0\.5, not 1"):
        PrecomputedTeacher.from_file(path, IDS)
    npz = tmp_path / "w.npz"
    np.savez(npz, ids=np.array(IDS), logits=_outputs(11))
    with pytest.raises(TeacherError, match=r"shaped \(11, 4\); it must be \(len\(ids\), classes\) = \(12, C\)"):
        PrecomputedTeacher.from_file(npz, IDS)
    np.savez(npz, ids=np.array(IDS, dtype=object), logits=_outputs())
    with pytest.raises(TeacherError, match="does not unpickle"):
        PrecomputedTeacher.from_file(npz, IDS)


def test_precomputed_file_errors_and_raw_input(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="not found"):
        PrecomputedTeacher.from_file(tmp_path / "none.jsonl", IDS)
    csv = tmp_path / "t.csv"
    csv.write_text("id,a\n")
    with pytest.raises(TeacherError, match="unknown teacher outputs format '.csv'"):
        PrecomputedTeacher.from_file(csv, IDS)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(TeacherError, match="cannot read teacher outputs file .* as Parquet"):
        PrecomputedTeacher.from_file(junk, IDS)
    teacher = PrecomputedTeacher.from_file(_write_jsonl(tmp_path / "ok.jsonl", IDS, _outputs()), IDS)
    with pytest.raises(TeacherError, match="looks outputs up by sample id"):
        teacher.logits(torch.zeros(2, 4))
    with pytest.raises(TeacherError, match=r"no outputs for 1 of the 2 requested sample ids \(nope\)"):
        teacher.logits_for_ids([IDS[0], "nope"])


def test_precomputed_fingerprint_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "o.jsonl"
    a = PrecomputedTeacher.from_file(_write_jsonl(path, IDS, _outputs(seed=0)), IDS).fingerprint()
    assert PrecomputedTeacher.from_file(path, IDS).fingerprint() == a
    b = PrecomputedTeacher.from_file(_write_jsonl(path, IDS, _outputs(seed=1)), IDS).fingerprint()
    assert a != b


# ------------------------------------------------------------------ ensemble
def test_ensemble_is_the_mean_of_member_probabilities(forest, digits) -> None:
    x = torch.from_numpy(digits[0][:40])
    torch_teacher = TorchTeacher(_mlp(3), 10)
    sk_teacher = SklearnTeacher(forest)
    pa = torch.softmax(torch_teacher.logits(x), 1)
    pb = torch.softmax(sk_teacher.logits(x), 1)

    ens = EnsembleTeacher([torch_teacher, sk_teacher])
    assert ens.num_classes == 10 and not ens.needs_ids
    got = ens.logits(x)
    assert got.dtype == torch.float32 and got.shape == (40, 10)
    assert torch.allclose(got.exp(), (pa + pb) / 2, atol=1e-6)
    assert torch.allclose(got.exp().sum(1), torch.ones(40), atol=1e-5)  # log-probabilities

    weighted = EnsembleTeacher([torch_teacher, sk_teacher], weights=[3.0, 1.0])
    assert torch.allclose(weighted.logits(x).exp(), 0.75 * pa + 0.25 * pb, atol=1e-6)

    geo = EnsembleTeacher([torch_teacher, sk_teacher], combine="mean_logits").logits(x)
    want = torch.log_softmax((torch.log(pa) + torch.log(pb)) / 2, 1)
    assert torch.allclose(geo, want, atol=1e-5)


def test_ensemble_fingerprint_and_checks(forest) -> None:
    a, b = TorchTeacher(_mlp(3), 10), SklearnTeacher(forest)
    fp = EnsembleTeacher([a, b]).fingerprint()
    assert fp == EnsembleTeacher([a, b]).fingerprint()
    assert fp != EnsembleTeacher([a, b], weights=[2, 1]).fingerprint()
    assert fp != EnsembleTeacher([b, a], weights=[1, 1]).fingerprint()
    assert fp != EnsembleTeacher([a, TorchTeacher(_mlp(4), 10)]).fingerprint()
    with pytest.raises(TeacherError, match=r"disagree on the number of classes \(member 0: 10, member 1: 3\)"):
        EnsembleTeacher([a, TorchTeacher(_mlp(5, classes=3), 3)])
    with pytest.raises(TeacherError, match="2 teachers but 3 weights"):
        EnsembleTeacher([a, b], weights=[1, 1, 1])
    with pytest.raises(TeacherError, match="finite and >= 0"):
        EnsembleTeacher([a, b], weights=[1, -1])
    with pytest.raises(TeacherError, match="combine must be one of"):
        EnsembleTeacher([a, b], combine="vote")


def test_ensemble_with_a_precomputed_member(tmp_path: Path) -> None:
    x = _x(12, seed=3)
    torch_teacher = TorchTeacher(_mlp(6, classes=4), 4)
    rows = _outputs()
    file_teacher = PrecomputedTeacher.from_file(_write("npz", tmp_path / "o", IDS, rows, "logits"), IDS)
    ens = EnsembleTeacher([torch_teacher, file_teacher])
    assert ens.needs_ids
    with pytest.raises(TeacherError, match="logits_for"):
        ens.logits(x)
    got = ens.logits_for(x, IDS)
    want = (torch.softmax(torch_teacher.logits(x), 1) + torch.softmax(torch.from_numpy(rows), 1)) / 2
    assert torch.allclose(got.exp(), want, atol=1e-6)
    assert torch.allclose(teacher_logits_for(ens, x, IDS), got)
    assert torch.allclose(teacher_logits_for(file_teacher, None, IDS[:3]), torch.from_numpy(rows[:3]))
    assert torch.allclose(teacher_logits_for(torch_teacher, x, None), torch_teacher.logits(x))
