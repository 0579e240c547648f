"""Teachers are checked against the data before they teach: features matched by name, classes by label,
outputs checked on a sample (non-finite refused, probabilities detected). Real scikit-learn estimators,
real ONNX files (skl2onnx and onnx.helper), real tables (scikit-learn's wine and iris)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")
skops_io = pytest.importorskip("skops.io")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sklearn.datasets import load_iris, load_wine  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from distill.tasks.classification.data import build_data  # noqa: E402
from distill.errors import TeacherError  # noqa: E402
from distill.tasks.classification.recipe import DataConfig, TeacherConfig  # noqa: E402
from distill.tasks.classification.teachers.checks import LogOfProbabilities, label_key, output_kind  # noqa: E402
from distill.tasks.classification.teachers.from_recipe import build_external_teacher  # noqa: E402
from distill.tasks.classification.teachers.sklearn import SklearnTeacher  # noqa: E402


def _wine_frame() -> "pd.DataFrame":
    ds = load_wine(as_frame=True)
    df = ds.frame.rename(columns={"target": "label"})
    df["label"] = [ds.target_names[i] for i in ds.target]  # string labels, as a user's CSV has them
    return df


def _fit(df: "pd.DataFrame", columns: list[str], labels=None):
    y = df["label"] if labels is None else labels
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(df[columns], y)


def _save(est, path: Path) -> Path:
    skops_io.dump(est, path)
    return path


def _bundle(df: "pd.DataFrame", tmp: Path, columns: list[str] | None = None):
    csv = tmp / "table.csv"
    df.to_csv(csv, index=False)
    return build_data(DataConfig(source="table", path=str(csv), label_column="label", feature_columns=columns))


def _accuracy(teacher, split) -> float:
    from distill.tasks.classification.teachers.ensemble import teacher_logits_for

    out = teacher_logits_for(teacher, split.x, split.ids)
    return float((out.argmax(-1) == split.y).float().mean())


def _reference_accuracy(est, df: "pd.DataFrame", data, split) -> float:
    """The estimator's own accuracy on the rows of ``split``, fed the columns by name as it was fitted."""
    rows = df.iloc[[int(i.split("-")[1]) for i in split.ids]]
    return float((est.predict(rows[list(est.feature_names_in_)]) == rows["label"]).mean())


def _trusted(path: Path) -> list[str]:
    return [t for t in skops_io.get_untrusted_types(file=path)]


def _sk_cfg(path: Path) -> TeacherConfig:
    return TeacherConfig(kind="sklearn", path=str(path), trusted_types=_trusted(path))


# ------------------------------------------------------------------ scikit-learn: features by name
def test_sklearn_columns_in_another_order_are_fed_by_name(tmp_path: Path, caplog) -> None:
    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    est = _fit(df, list(reversed(features)))  # fitted on the columns in the reverse order
    data = _bundle(df, tmp_path)
    with caplog.at_level(logging.INFO, logger="distill"):
        teacher = build_external_teacher(_sk_cfg(_save(est, tmp_path / "t.skops")), data)
    assert _accuracy(teacher, data.test) == pytest.approx(_reference_accuracy(est, df, data, data.test))
    assert _accuracy(teacher, data.test) > 0.85
    assert "fed the table's columns by name" in caplog.text
    # no "X does not have valid feature names" warning: the estimator is fed a frame with its names
    assert "valid feature names" not in caplog.text


def test_sklearn_fitted_on_fewer_columns_gets_only_those(tmp_path: Path) -> None:
    df = _wine_frame()
    few = ["alcohol", "proline", "flavanoids", "color_intensity"]
    est = _fit(df, few)
    data = _bundle(df, tmp_path)
    teacher = build_external_teacher(_sk_cfg(_save(est, tmp_path / "t.skops")), data)
    assert _accuracy(teacher, data.test) == pytest.approx(_reference_accuracy(est, df, data, data.test))


def test_sklearn_column_the_table_lacks_is_refused_with_both_lists(tmp_path: Path) -> None:
    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    est = _fit(df, features)
    data = _bundle(df, tmp_path, columns=features[:-1])  # the student's table leaves proline out
    with pytest.raises(TeacherError) as err:
        build_external_teacher(_sk_cfg(_save(est, tmp_path / "t.skops")), data)
    msg = str(err.value)
    assert "columns the data does not give it: proline" in msg
    assert "The teacher's features, in its order: alcohol" in msg and "the data's feature columns: alcohol" in msg
    assert "Fix:" in msg


# ------------------------------------------------------------------ scikit-learn: classes by label
def test_sklearn_integer_codes_against_string_labels_are_refused(tmp_path: Path) -> None:
    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    codes = df["label"].map({"class_0": 0, "class_1": 1, "class_2": 2})
    est = _fit(df, features, labels=codes)
    data = _bundle(df, tmp_path)
    with pytest.raises(TeacherError) as err:
        build_external_teacher(_sk_cfg(_save(est, tmp_path / "t.skops")), data)
    msg = str(err.value)
    assert "its classes 0, 1, 2 are not labels of the data" in msg
    assert "the data's labels: class_0, class_1, class_2" in msg


def test_sklearn_classes_are_matched_by_value(tmp_path: Path) -> None:
    """Labels 10/20/30 in the table; the estimator saw only 20 and 30 (as floats): columns land at their class."""
    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    df["label"] = df["label"].map({"class_0": 10, "class_1": 20, "class_2": 30})
    seen = df[df["label"] != 10]
    est = _fit(seen, features, labels=seen["label"].astype(float))
    data = _bundle(df, tmp_path)
    teacher = build_external_teacher(_sk_cfg(_save(est, tmp_path / "t.skops")), data)
    out = teacher.logits(data.test.x)
    assert out.shape[1] == 3
    assert float(out[:, 0].exp().max()) < 1e-6  # class 10: never seen by the estimator
    keep = data.test.y != 0
    pred = est.predict(df.iloc[[int(i.split("-")[1]) for i in data.test.ids]][features])
    assert (out.argmax(-1).numpy() == np.array([data.class_names.index(str(int(p))) for p in pred])).all()
    assert bool(keep.any())


def test_label_key_spellings() -> None:
    assert label_key(1) == label_key(1.0) == label_key("1") == label_key(np.int64(1)) == "1"
    assert label_key(" cat ") == "cat" and label_key(1.5) == "1.5" and label_key(b"dog") == "dog"


# ------------------------------------------------------------------ scikit-learn: warnings once
class _Noisy(LogisticRegression):
    """A real estimator that warns on every predict_proba, as many do (version mismatches, feature names)."""

    def predict_proba(self, X):
        warnings.warn("this estimator has something to say", UserWarning, stacklevel=2)
        return super().predict_proba(X)


def test_sklearn_warnings_are_logged_once(caplog) -> None:
    x, y = load_iris(return_X_y=True)
    teacher = SklearnTeacher(_Noisy(max_iter=500).fit(x, y), batch_size=8)
    with caplog.at_level(logging.WARNING, logger="distill"), warnings.catch_warnings():
        warnings.simplefilter("error")  # none escapes to the user's console
        teacher.logits(torch.from_numpy(x).float())
        teacher.logits(torch.from_numpy(x).float())
    assert caplog.text.count("this estimator has something to say") == 1


# ------------------------------------------------------------------ ONNX: outputs, classes, features
def _skl2onnx(est, n_features: int, path: Path, columns: list[str] | None = None) -> Path:
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType

    types = [(c, FloatTensorType([None, 1])) for c in columns] if columns else \
        [("input", FloatTensorType([None, n_features]))]  # fmt: skip
    model = skl2onnx.convert_sklearn(est, initial_types=types, options={id(est): {"zipmap": False}},
                                     target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_probability_output_is_detected_and_read_as_log_probs(tmp_path: Path) -> None:
    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    est = _fit(df, features)
    data = _bundle(df, tmp_path)
    path = _skl2onnx(est, len(features), tmp_path / "t.onnx")
    teacher = build_external_teacher(TeacherConfig(kind="onnx", path=str(path)), data)
    assert isinstance(teacher, LogOfProbabilities)
    assert output_kind(teacher.logits(data.test.x)) == "log_probs"
    assert _accuracy(teacher, data.test) == pytest.approx(_reference_accuracy(est, df, data, data.test))
    with pytest.raises(TeacherError, match=r"values: probs \(or auto\)"):
        build_external_teacher(TeacherConfig(kind="onnx", path=str(path), values="logits"), data)


def test_onnx_class_labels_are_matched_or_refused(tmp_path: Path) -> None:
    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    data = _bundle(df, tmp_path)
    # labels in another order than the data's sorted labels: the outputs are reordered
    relabel = {"class_0": "c", "class_1": "a", "class_2": "b"}
    df2 = df.assign(label=df["label"].map(relabel))
    est = _fit(df2, features)
    path = _skl2onnx(est, len(features), tmp_path / "t.onnx")
    data2 = _bundle(df2, tmp_path)
    teacher = build_external_teacher(TeacherConfig(kind="onnx", path=str(path)), data2)
    assert _accuracy(teacher, data2.test) == pytest.approx(_reference_accuracy(est, df2, data2, data2.test))
    # the same teacher against data labelled otherwise is refused, naming both
    with pytest.raises(TeacherError) as err:
        build_external_teacher(TeacherConfig(kind="onnx", path=str(path)), data)
    assert "The teacher's classes: a, b, c; the data's labels: class_0, class_1, class_2" in str(err.value)


def test_onnx_one_input_per_column_is_fed_by_name(tmp_path: Path) -> None:
    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    shuffled = list(np.random.default_rng(0).permutation(features))
    est = _fit(df, shuffled)
    path = _skl2onnx(est, len(features), tmp_path / "t.onnx", columns=shuffled)
    data = _bundle(df, tmp_path)
    teacher = build_external_teacher(TeacherConfig(kind="onnx", path=str(path)), data)
    assert _accuracy(teacher, data.test) == pytest.approx(_reference_accuracy(est, df, data, data.test))
    with pytest.raises(TeacherError, match="columns the data does not give it: "):
        build_external_teacher(TeacherConfig(kind="onnx", path=str(path)), _bundle(df, tmp_path, features[1:]))


def _linear_onnx(path: Path, weight: np.ndarray, softmax: bool = False) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("MatMul", ["x", "w"], ["scores" if not softmax else "z"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["scores"], axis=-1))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_nan_outputs_name_the_teacher(tmp_path: Path) -> None:
    df = _wine_frame()
    data = _bundle(df, tmp_path)
    weight = np.ones((13, 3))
    weight[2, 1] = np.nan
    path = _linear_onnx(tmp_path / "nan.onnx", weight)
    with pytest.raises(TeacherError) as err:
        build_external_teacher(TeacherConfig(kind="onnx", path=str(path)), data)
    assert "the ONNX teacher nan.onnx (teacher) gives NaN or infinite outputs" in str(err.value)


def test_onnx_values_contradicted_by_the_outputs(tmp_path: Path) -> None:
    data = _bundle(_wine_frame(), tmp_path)
    weight = np.random.default_rng(0).normal(size=(13, 3)) / 100
    logits = _linear_onnx(tmp_path / "logits.onnx", weight)
    probs = _linear_onnx(tmp_path / "probs.onnx", weight, softmax=True)
    assert not isinstance(build_external_teacher(TeacherConfig(kind="onnx", path=str(logits)), data),
                          LogOfProbabilities)
    assert isinstance(build_external_teacher(TeacherConfig(kind="onnx", path=str(probs)), data), LogOfProbabilities)
    with pytest.raises(TeacherError, match="values: probs"):
        build_external_teacher(TeacherConfig(kind="onnx", path=str(logits), values="probs"), data)
    with pytest.raises(TeacherError, match="log_probs"):
        build_external_teacher(TeacherConfig(kind="onnx", path=str(logits), values="log_probs"), data)


def test_values_and_output_name_only_where_they_apply() -> None:
    from pydantic import ValidationError

    for bad in ({"kind": "sklearn", "path": "t.skops", "values": "probs"}, {"values": "probs"},
                {"kind": "precomputed", "path": "o.parquet", "output_name": "y"}):
        with pytest.raises(ValidationError):
            TeacherConfig(**bad)


# ------------------------------------------------------------------ the property
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.permutations(list(range(4))), relabel=st.sampled_from(["names", "codes", "shuffled_codes"]),
       kind=st.sampled_from(["sklearn", "onnx_columns"]))
def test_property_permuted_columns_and_relabelled_classes(order, relabel, kind) -> None:
    """Whatever the table's column order and label spelling: the teacher scores what the estimator scores on the
    same rows, or the run is refused with a TeacherError; never a silently wrong teacher."""
    ds = load_iris(as_frame=True)
    fitted = ds.frame.rename(columns={"target": "label"})
    fitted["label"] = [ds.target_names[i] for i in ds.target]
    features = [c for c in fitted.columns if c != "label"]
    est = _fit(fitted, features)
    table = fitted[[features[i] for i in order] + ["label"]].copy()
    if relabel == "codes":
        table["label"] = table["label"].map({n: i for i, n in enumerate(ds.target_names)})
    elif relabel == "shuffled_codes":
        table["label"] = table["label"].map({"setosa": 2, "versicolor": 0, "virginica": 1})
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        data = _bundle(table, tmp_path)
        if kind == "sklearn":
            cfg = _sk_cfg(_save(est, tmp_path / "t.skops"))
        else:
            cfg = TeacherConfig(kind="onnx", path=str(_skl2onnx(est, 4, tmp_path / "t.onnx", columns=features)))
        try:
            teacher = build_external_teacher(cfg, data)
        except TeacherError as exc:
            assert relabel != "names"  # the estimator's own labels always match
            assert "are not labels of the data" in str(exc)
            return
        rows = table.iloc[[int(i.split("-")[1]) for i in data.test.ids]]
        want = float((est.predict(rows[features]) == fitted.loc[rows.index, "label"]).mean())
        assert _accuracy(teacher, data.test) == pytest.approx(want)


def test_torch_checkpoint_teacher_that_outputs_probabilities_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    import yaml
    from safetensors.torch import save_file

    from distill.cli import main
    from tests.conftest import tiny_recipe
    from tests.factories import softmax_mlp

    monkeypatch.chdir(tmp_path)
    save_file(softmax_mlp((1, 8, 8), 10).state_dict(), "t.safetensors")
    raw = tiny_recipe(teacher={"arch": None, "factory": "tests.factories:softmax_mlp", "params": {},
                               "checkpoint": "t.safetensors"})  # fmt: skip
    Path("r.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", "r.yaml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "outputs probabilities" in err and "remove the final softmax" in err and "Traceback" not in err
    assert not Path("runs").exists()


def test_onnx_zipmap_output_is_refused_with_the_option_that_turns_it_off(tmp_path: Path) -> None:
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import FloatTensorType

    df = _wine_frame()
    features = [c for c in df.columns if c != "label"]
    est = _fit(df, features)
    model = skl2onnx.convert_sklearn(est, initial_types=[("input", FloatTensorType([None, 13]))],
                                     target_opset={"": 17, "ai.onnx.ml": 3})  # ZipMap on: a list of dicts
    (tmp_path / "zip.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(TeacherError) as err:
        build_external_teacher(TeacherConfig(kind="onnx", path=str(tmp_path / "zip.onnx")), _bundle(df, tmp_path))
    assert "no (batch, classes) float output" in str(err.value) and "'zipmap': False" in str(err.value)
