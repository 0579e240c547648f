"""Teachers that are not torch modules, end to end from the CLI: a scikit-learn forest on a CSV
table, precomputed outputs keyed by sample id (a black-box API), and an ensemble of both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.cli import main
from distill.core.results import by_role


@pytest.fixture
def table(tmp_path: Path) -> Path:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=600, n_features=8, n_informative=6, n_classes=3, random_state=0)
    df = pd.DataFrame(x * 10 + 50, columns=[f"f{i}" for i in range(8)])  # raw scale far from standardised
    df["label"] = np.array(["a", "b", "c"])[y]
    df["uid"] = [f"s{i}" for i in range(len(df))]
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def forest(table: Path, tmp_path: Path) -> Path:
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    df = pd.read_csv(table)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(df[[f"f{i}" for i in range(8)]].to_numpy(), df["label"])
    path = tmp_path / "forest.joblib"
    joblib.dump(model, path)
    return path


def _recipe(table: Path, teacher: dict) -> dict:
    return {
        "name": "kinds",
        "data": {"source": "table", "path": str(table), "label_column": "label", "id_column": "uid", "feature_columns": [f"f{i}" for i in range(8)]},
        "teacher": teacher,
        "student": {"arch": "mlp", "params": {"hidden": [16]}},
        "distill": [{"loss": "kd", "weight": 0.7, "temperature": 2.0}, {"loss": "ce", "weight": 0.3}],
        "train": {"epochs": 5, "batch_size": 32},
        "eval": {"baseline": True, "latency_runs": 3, "warmup_runs": 1, "throughput_runs": 2, "throughput_batch": 32},
        "output": {"report": False},
    }  # fmt: skip


def test_random_forest_teacher_on_a_csv_table_distills_into_an_mlp(table, forest, write_recipe, capsys) -> None:
    raw = _recipe(table, {"kind": "sklearn", "path": str(forest), "trust_pickle": True, "license": "MIT"})
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/kinds/metrics.json").read_text())
    assert m["teacher"]["source"] == "sklearn"
    # the forest was trained on raw values: fed raw values it is far better than chance
    assert by_role(m)["teacher"]["test_acc"] > 0.7
    assert by_role(m)["student"]["test_acc"] > 0.5
    assert by_role(m)["teacher"]["cost"]["flops"] is None and by_role(m)["teacher"]["cost"]["latency_ms_p50"] > 0
    table_md = Path("runs/kinds/comparison.md").read_text()
    # provenance: the card and the report say where the teacher came from, not "trained in this run"
    assert main(["report", "runs/kinds"]) == 0
    card = Path("runs/kinds/README.md").read_text()
    assert f"| weights | loaded from the scikit-learn file {forest} |" in card
    assert "| weights | trained in this run |" not in card
    assert f"loaded from the scikit-learn file {forest}" in Path("runs/kinds/report.html").read_text()
    assert "| FLOPs / sample | — |" in table_md
    assert "pickle" in Path("runs/kinds/run.log").read_text().lower()
    assert main(["eval", "runs/kinds", "-q"]) == 0


def test_pickled_teacher_needs_the_trust_flag(table, forest, write_recipe, capsys) -> None:
    raw = _recipe(table, {"kind": "sklearn", "path": str(forest)})
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "trust_pickle" in err and "Traceback" not in err


def _outputs_file(table: Path, path: Path, drop: int = 0, extra: int = 0) -> Path:
    df = pd.read_csv(table)
    rng = np.random.default_rng(0)
    onehot = np.eye(3)[pd.Categorical(df["label"]).codes]
    probs = 0.7 * onehot + 0.3 * rng.dirichlet(np.ones(3), len(df))  # a decent but imperfect "API"
    rows = [{"id": uid, "probs": p.tolist()} for uid, p in zip(df["uid"], probs)]
    rows = rows[drop:] + [{"id": f"ghost{i}", "probs": [1 / 3] * 3} for i in range(extra)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_precomputed_outputs_teacher(table, write_recipe, tmp_path: Path) -> None:
    path = _outputs_file(table, tmp_path / "api.jsonl")
    raw = _recipe(table, {"kind": "precomputed", "path": str(path), "name": "a hosted API", "license": "proprietary"})
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/kinds/metrics.json").read_text())
    assert by_role(m)["teacher"]["test_acc"] > 0.9
    assert by_role(m)["teacher"]["cost"]["latency_ms_p50"] is None
    assert "licence" in Path("runs/kinds/run.log").read_text()  # proprietary: the run warns


@pytest.mark.parametrize("drop,extra,message", [(3, 0, "lacks 3 of the 600"), (0, 2, "2 ids")], ids=["missing", "extra"])
def test_precomputed_outputs_with_missing_or_extra_ids(table, write_recipe, tmp_path: Path, capsys, drop, extra, message) -> None:
    path = _outputs_file(table, tmp_path / "api.jsonl", drop=drop, extra=extra)
    raw = _recipe(table, {"kind": "precomputed", "path": str(path)})
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and ("s0" in err or "ghost0" in err), err


def test_ensemble_of_a_forest_and_precomputed_outputs(table, forest, write_recipe, tmp_path: Path) -> None:
    path = _outputs_file(table, tmp_path / "api.jsonl")
    raw = _recipe(table, {"kind": "ensemble", "members": [
        {"kind": "sklearn", "path": str(forest), "trust_pickle": True},
        {"kind": "precomputed", "path": str(path)},
    ], "weights": [1, 1]})  # fmt: skip
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    m = json.loads(Path("runs/kinds/metrics.json").read_text())
    assert m["teacher"]["source"] == "ensemble" and by_role(m)["teacher"]["test_acc"] > 0.8


def test_feature_losses_refuse_a_non_torch_teacher(table, forest, write_recipe, capsys) -> None:
    raw = _recipe(table, {"kind": "sklearn", "path": str(forest), "trust_pickle": True})
    raw["distill"] = [{"loss": "hint", "student_layer": "2", "teacher_layer": "2"}]
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    assert "need a torch teacher" in capsys.readouterr().err


def test_teacher_fitted_on_a_frame_in_another_column_order_is_fed_by_name(table, tmp_path, write_recipe, capsys) -> None:
    """The estimator saw the columns reversed; the run feeds them by name, scores what the estimator scores on the
    test rows, and prints none of scikit-learn's "feature names" warnings."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    df = pd.read_csv(table)
    reversed_cols = [f"f{i}" for i in reversed(range(8))]
    est = LogisticRegression(max_iter=1000).fit(df[reversed_cols], df["label"])
    sio.dump(est, tmp_path / "lr.skops")
    raw = _recipe(table, {"kind": "sklearn", "path": str(tmp_path / "lr.skops")})
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    captured = capsys.readouterr()
    assert "feature names" not in captured.out + captured.err
    m = json.loads(Path("runs/kinds/metrics.json").read_text())
    from distill.tasks.classification.data import build_data
    from distill.tasks.classification.recipe import DataConfig

    test_ids = set(build_data(DataConfig(**raw["data"])).test.ids.tolist())  # the run's own seeded split
    rows = df[df["uid"].isin(test_ids)]
    want = float((est.predict(rows[reversed_cols]) == rows["label"]).mean())
    assert by_role(m)["teacher"]["test_acc"] == pytest.approx(want, abs=1e-6)
    assert want > 0.7


def test_teacher_with_integer_codes_for_string_labels_is_refused_before_anything_is_written(
    table, tmp_path, write_recipe, capsys
) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    df = pd.read_csv(table)
    codes = df["label"].map({"a": 0, "b": 1, "c": 2})
    sio.dump(LogisticRegression(max_iter=1000).fit(df[[f"f{i}" for i in range(8)]].to_numpy(), codes), tmp_path / "c.skops")
    raw = _recipe(table, {"kind": "sklearn", "path": str(tmp_path / "c.skops")})
    assert main(["run", str(write_recipe(raw)), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "its classes 0, 1, 2 are not labels of the data" in err and "the data's labels: a, b, c" in err
    assert "Traceback" not in err
    assert not Path("runs/kinds").exists()
