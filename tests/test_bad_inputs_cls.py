"""Bad input to classification runs: each is refused with what, why and a fix, exit code 2, no traceback,
and nothing written (no runs/NAME left by a refused run); or, for a real but poor result, said loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from distill.cli import main

from .conftest import tiny_recipe


def _table(path: Path, labels: list[str], *, header: str = "a,b,c,label", first: str | None = None) -> Path:
    """A small learnable CSV: the label decides the sign of column a."""
    rng = np.random.default_rng(0)
    lines = [header]
    for i, lab in enumerate(labels):
        a = (1.0 if lab.strip().lower() == "pos" else -1.0) + 0.3 * rng.standard_normal()
        row = f"{a:.4f},{rng.standard_normal():.4f},{rng.standard_normal():.4f},{lab}"
        lines.append(f"{i if first is None else first}," + row if header.startswith(("id,", ",", "idx,")) else row)
    path.write_text("\n".join(lines) + "\n")
    return path


def _table_recipe(path: Path, **data: object) -> dict:
    return tiny_recipe(data={"source": "table", "path": str(path), "label_column": "label", **data})


def _refused(capsys, args: list[str], *needles: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Fix:" in err, err
    for needle in needles:
        assert needle in err, err
    assert not Path("runs").exists() or not any(Path("runs").iterdir()), list(Path("runs").iterdir())
    return err


def test_labels_that_differ_by_spaces_or_case_are_refused(write_recipe, tmp_path: Path, capsys) -> None:
    from distill.data.labels import label_variants

    assert label_variants(["pos", "pos ", "neg", "NEG", "other"]) == [["NEG", "neg"], ["pos", "pos "]]
    assert label_variants(["a", "b"]) == []
    labels = ["pos", "neg"] * 20 + ["pos "] * 5 + ["POS"] * 5
    p = write_recipe(_table_recipe(_table(tmp_path / "ws.csv", labels)))
    for cmd in (["run", str(p), "--no-progress"], ["recipe", "--check", str(p), "-q"]):
        _refused(capsys, cmd, "'POS' (5 rows) / 'pos' (20 rows) / 'pos ' (5 rows)", "strip the spaces")


def test_a_column_named_id_is_the_id_and_a_row_number_column_is_no_feature(write_recipe, tmp_path: Path, capsys) -> None:
    from distill.tasks.classification.data import build_data
    from distill.core.recipes import validate_recipe

    labels = ["pos", "neg"] * 20
    with_id = _table(tmp_path / "id.csv", labels, header="id,a,b,c,label")
    data = build_data(validate_recipe(_table_recipe(with_id)).data)
    assert data.preprocessing["features"] == ["a", "b", "c"] and str(data.train.ids[0]).isdigit()
    index = _table(tmp_path / "index.csv", labels, header=",a,b,c,label")  # pandas' to_csv(index=True)
    p = write_recipe(_table_recipe(index))
    _refused(capsys, ["run", str(p), "--no-progress"], "'Unnamed: 0', holds the row number", "data.id_column")
    kept = build_data(validate_recipe(_table_recipe(index, id_column="Unnamed: 0")).data)
    assert kept.preprocessing["features"] == ["a", "b", "c"]


def test_an_empty_recipe_file_or_a_folder_is_not_a_recipe(tmp_path: Path, capsys) -> None:
    from distill.core.recipes import load_recipe

    assert load_recipe(raw={}).data.source == "digits"  # a mapping in Python keeps its defaults
    for text in ("", "# only a comment\n\n"):
        (tmp_path / "empty.yaml").write_text(text)
        _refused(capsys, ["run", str(tmp_path / "empty.yaml"), "--no-progress"], "the recipe file is empty")
    _refused(capsys, ["recipe", "--check", str(tmp_path)], f"{tmp_path} is a folder, not a recipe file")
    run = tmp_path / "runs_elsewhere" / "r"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: r\n")
    _refused(capsys, ["layers", str(run)], "is a folder (a run directory)", f"{run / 'recipe.yaml'}")


def test_a_duplicated_header_is_refused(write_recipe, tmp_path: Path, capsys) -> None:
    p = write_recipe(_table_recipe(_table(tmp_path / "dup.csv", ["pos", "neg"] * 20, header="a,a,c,label")))
    _refused(capsys, ["run", str(p), "--no-progress"], "more than one column named 'a'")


def test_classes_too_small_to_split_are_refused(write_recipe, tmp_path: Path, capsys) -> None:
    p = write_recipe(_table_recipe(_table(tmp_path / "rare.csv", ["pos", "neg"] * 20 + ["rare", "odd", "odd"])))
    _refused(capsys, ["run", str(p), "--no-progress"], "fewer than 3 samples: 'odd' (2), 'rare' (1)")


def _image_folder(root: Path, counts: dict[str, int]) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, n in counts.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_names_the_files_it_skips_and_refuses_tiny_classes(tmp_path: Path, caplog) -> None:
    from distill.tasks.classification.images import read_image_folder
    from distill.errors import DataError

    root = _image_folder(tmp_path / "imgs", {"cat": 4, "dog": 4})
    (root / "cat" / "notes.txt").write_text("x")
    (root / "cat" / "0.png").rename(root / "loose.png")
    with caplog.at_level(logging.WARNING, logger="distill"):
        x, _, _, _ = read_image_folder(root, (8, 8), 1, (".png",))
    assert len(x) == 7
    assert "2 files skipped" in caplog.text and "cat/notes.txt, loose.png" in caplog.text
    _image_folder(tmp_path / "imgs", {"bird": 1})
    with pytest.raises(DataError, match=r"fewer than 3 samples: 'bird' \(1\)"):
        read_image_folder(root, (8, 8), 1, (".png",))


def test_a_transfer_set_too_small_or_empty_is_refused_by_the_preflight(write_recipe, tmp_path: Path, capsys) -> None:
    p = write_recipe(_table_recipe(_table(tmp_path / "t.csv", ["pos", "neg"] * 30)))
    for cmd in (["run", str(p), "--no-progress"], ["recipe", "--check", str(p), "-q"]):
        _refused(capsys, [*cmd, "--set", "transfer.labeled_fraction=0.001"],
                 "keeps the labels of 1 of", "Fix: --set transfer.labeled_fraction=")  # fmt: skip
    _refused(capsys, ["run", str(p), "--no-progress", "--set", "transfer.exclude_classes=[0,1]"],
             "leaves out every class of the data (2)", "Fix: leave at least one class")  # fmt: skip
    _refused(capsys, ["run", str(p), "--no-progress", "--set", "transfer.exclude_classes=[5]"],
             "are not classes of the data (0..1). Fix: name classes by their index (0: neg, 1: pos)")  # fmt: skip


def test_post_run_commands_refuse_a_run_whose_weights_are_gone_or_cut(write_recipe, tmp_path: Path, capsys) -> None:
    import json

    raw = tiny_recipe(export={"formats": ["torch"]}, compress={"quantize": {"kind": "dynamic"}})
    raw["train"]["epochs"] = 1
    raw["teacher"]["train"]["epochs"] = 1
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q"]) == 0
    run = Path("runs/tiny")
    capsys.readouterr()
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    weights = run / "student.safetensors"
    whole = weights.read_bytes()
    for damage, why in (("truncated", "not a complete safetensors file"), ("deleted", "it is missing")):
        if damage == "truncated":
            weights.write_bytes(whole[: len(whole) // 2])
        else:
            weights.unlink()
        before = sorted(p.relative_to(run) for p in run.rglob("*"))
        for cmd in ("bench", "report", "eval", "export", "compress"):
            assert main([cmd, str(run)]) == 2, cmd
            err = capsys.readouterr().err
            assert "a file of the finished run is missing or unreadable" in err and why in err, err
            assert f"Fix: rerun the recipe: distill run {run / 'recipe.yaml'}" in err and "did not finish" not in err
            assert "Traceback" not in err
        assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # nothing written
    weights.write_bytes(whole)
    assert main(["eval", str(run), "-q"]) == 0


def test_students_at_chance_are_said_loudly(write_recipe, capsys) -> None:
    import json

    from distill.report.chance import chance_level

    assert chance_level(0.1, [0, 1] * 50, 2)["at_chance"] and not chance_level(0.9, [0, 1] * 50, 2)["at_chance"]
    raw = tiny_recipe()
    raw["teacher"]["train"]["epochs"] = 1
    assert main(["run", str(write_recipe(raw)), "--no-progress", "-q", "--set", "train.optimizer.lr=1e6"]) == 0
    out = capsys.readouterr().out
    line = "the distilled student is at chance level ("
    assert line in out and "Fix: lower train.optimizer.lr (it is 1e+06" in out  # the printed summary
    assert line in Path("runs/tiny/comparison.md").read_text() and f"WARNING: {line}" in Path("runs/tiny/run.log").read_text()
    metrics = json.loads(Path("runs/tiny/metrics.json").read_text())
    assert "student" in metrics["summary"]["at_chance"]
    assert {m["role"]: m.get("at_chance") for m in metrics["models"]}["student"] is True


def _cli(*args: str) -> "subprocess.CompletedProcess[str]":
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_a_user_error_of_a_two_process_run_is_said_once_without_a_traceback(write_recipe, tmp_path: Path) -> None:
    bad = _table(tmp_path / "nolabel.csv", ["pos", "neg"] * 20)
    bad.write_text(bad.read_text().replace(",neg\n", ",\n", 3))
    p = write_recipe(_table_recipe(bad))
    out = _cli("run", str(p), "--no-progress", "--nproc", "2")  # found by the preflight, before any process starts
    assert out.returncode == 2
    assert out.stderr.count("error: 3 rows have no label in column 'label'. Fix: drop them.") == 1, out.stderr
    assert not Path("runs").exists()
    taken = Path("runs/tiny")  # found by the workers, after the preflight: the run directory is taken
    taken.mkdir(parents=True)
    (taken / "recipe.yaml").write_text("name: tiny\n")
    out = _cli("run", str(write_recipe(tiny_recipe())), "--no-progress", "--nproc", "2")
    assert out.returncode == 2
    assert out.stderr.count("error: the run directory runs/tiny already exists") == 1, out.stderr
    for noise in ("Traceback", "ChildFailedError", "FAILED", "torch/distributed/elastic"):
        assert noise not in out.stderr, out.stderr
    assert sorted(p.name for p in taken.iterdir()) == ["recipe.yaml"]


def test_a_photo_stored_sideways_with_an_exif_turn_is_read_upright(tmp_path: Path) -> None:
    """A camera's JPEG often keeps its pixels sideways and says so in EXIF (Orientation 6: turn 90 degrees
    clockwise to view); the folder reader and the shipped runtime both read it as a viewer shows it."""
    import json

    import onnx
    from onnx import TensorProto, helper
    from PIL import Image

    from distill.export.classifier_runtime import Classifier
    from distill.tasks.classification.images import read_image_folder

    upright = np.zeros((8, 4), dtype=np.uint8)  # 8 high, 4 wide: the top half white
    upright[:4] = 255
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # as the camera stored it: 4 high, 8 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(stored).save(root / c / f"{i}.jpg", exif=exif, quality=100)
    x, _, _, _ = read_image_folder(root, (8, 4), 1, (".jpg",))
    assert x.shape == (6, 1, 8, 4)
    assert x[0, 0, :4].mean() > 200 and x[0, 0, 4:].mean() < 50  # the top half is white: upright
    # the runtime: an identity "model" shows the pixels it was given
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 8, 4])])  # fmt: skip
    folder = tmp_path / "export"
    folder.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "m.onnx"))
    (folder / "classifier.json").write_text(json.dumps({"classes": ["a", "b"], "files": ["m.onnx"], "kind": "image",
                                                        "input_shape": [1, 8, 4],
                                                        "image_file": {"mode": "L", "size": [8, 4]}}))  # fmt: skip
    seen = Classifier(folder).session.run(None, {"x": Classifier(folder)._array([root / "a" / "0.jpg"])})[0]
    assert np.array_equal(seen[0, 0].astype(np.uint8), x[0, 0])
