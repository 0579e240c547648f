"""Text classification (``task: text_classification``) on a tiny real BERT and a small labelled set: a teacher
fine-tuned in the run, then given as a Hugging Face folder; layer, static and factory students; exported ONNX
folders that classify raw text with the in-run accuracy; bad data and teachers refused before anything is
written; the built-in sets parsed from files laid out as Debian ships them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import distill
from distill.cli import main
from tests.embed_helpers import make_tiny_sentence_model
from tests.text_helpers import labelled_rows, write_csv

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def tiny_bag(num_labels: int, vocab_size: int) -> nn.Module:
    """A user's own student: mean of learned token vectors, then a linear layer."""

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab_size, 12)
            self.out = nn.Linear(12, num_labels)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            m = attention_mask.unsqueeze(-1).float()
            return self.out((self.emb(input_ids) * m).sum(1) / m.sum(1))

    return Bag()


def wrong_width(num_labels: int, vocab_size: int) -> nn.Module:
    return tiny_bag(num_labels + 1, vocab_size)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("textcls")
    rows = labelled_rows(240)
    write_csv(root / "texts.csv", rows)
    # unlabelled texts for the transfer set: new ones, and 5 of the labelled (dropped: never train on held-out text)
    (root / "transfer.txt").write_text("\n".join([t for t, _ in labelled_rows(120, seed=1)] + [t for t, _ in rows[:5]]))
    make_tiny_sentence_model(root / "encoder", hidden=32)
    return {"root": root, "csv": root / "texts.csv", "encoder": root / "encoder", "transfer": root / "transfer.txt"}


def raw(world: dict[str, Path], name: str, **over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "task": "text_classification", "name": name,
        "data": {"source": str(world["csv"]), "max_length": 32, "transfer": str(world["transfer"])},
        "teacher": {"kind": "finetune", "path": str(world["encoder"]), "epochs": 30, "lr": 3e-3, "batch_size": 16,
                    "license": "apache-2.0", "name": "tiny-bert"},
        "students": [{"name": "static", "kind": "static", "dim": 16, "init": "context", "ngram_buckets": 64,
                      "train": {"epochs": 10, "batch_size": 16}},
                     {"name": "bag", "kind": "factory", "factory": "tests.test_text_classification:tiny_bag",
                      "train": {"epochs": 20, "batch_size": 16, "lr": 3e-2}}],
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3},
        "eval": {"speed_texts": 32, "latency_texts": 4},
        "output": {"dir": str(world["root"] / name), "report": True, "cache_dir": str(world["root"] / "cache")},
    }  # fmt: skip
    for key, value in over.items():
        r[key] = value
    return r


@pytest.fixture(scope="module")
def finetuned(world: dict[str, Path]) -> Path:
    result = distill.run(distill.load_recipe(raw=raw(world, "ft")), progress=False, console=False)
    return result.run_dir


def test_a_finetuned_teacher_is_distilled_into_students_that_ship(finetuned: Path) -> None:
    metrics = json.loads((finetuned / "metrics.json").read_text())
    assert metrics["task"] == "text_classification"
    rows = {r["name"]: r for r in metrics["models"]}
    assert [r["role"] for r in metrics["models"]] == ["teacher", "baseline", "student", "student"]
    teacher = metrics["models"][0]
    assert teacher["accuracy"] >= 0.9, teacher  # the topic words decide the class: a fine-tuned BERT learns them
    assert rows["static"]["accuracy"] >= 0.8 and rows["bag"]["accuracy"] >= 0.7, rows  # chance: 0.33
    assert rows["static"]["retention"] == pytest.approx(rows["static"]["accuracy"] / teacher["accuracy"])
    assert metrics["teacher"]["source"].startswith("fine-tuned in this run from")
    assert metrics["data"]["labels"] == ["animals", "computing", "weather"]
    # the transfer set: the file's texts less those in the labelled splits, trained on by the distilled students
    from distill.tasks.text_classification.data import load_labelled_texts
    from distill.tasks.text_classification.transfer import with_transfer

    cfg = distill.load_recipe(path=finetuned / "recipe.yaml").data
    data = with_transfer(load_labelled_texts(cfg), cfg)
    assert data.transfer is not None and metrics["data"]["transfer"] == len(data.transfer) <= 120
    held = set(data.train.texts + data.val.texts + data.test.texts)
    assert not held & set(data.transfer.texts) and (data.transfer.labels == -1).all()
    assert rows["static"]["transfer_texts"] == len(data.transfer) == rows["bag"]["transfer_texts"]
    with np.load(finetuned / "teacher_logits.npz") as z:
        assert z["transfer"].shape == (len(data.transfer), 3)
    # the teacher is a Hugging Face folder with the data's label names
    cfg = json.loads((finetuned / "teacher" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "animals", "1": "computing", "2": "weather"}
    card = (finetuned / "students" / "static" / "README.md").read_text()
    assert "tiny-bert" in card and "apache-2.0" in card and "fine-tuned in this run" in card
    html = (finetuned / "report.html").read_text()
    assert "Quality against speed" in html and "confusion" not in html.lower()
    for name in ("static", "bag"):
        files = sorted(p.name for p in (finetuned / "students" / name / "onnx").iterdir())
        assert files == ["config.json", "model.onnx", "tokenizer.json"], files


def test_exported_students_classify_raw_text_with_the_in_run_accuracy(finetuned: Path, world: dict[str, Path]) -> None:
    from distill.export.text_runtime import TextClassifierRuntime
    from distill.tasks.text_classification.data import load_labelled_texts

    recipe = distill.load_recipe(path=finetuned / "recipe.yaml")
    test = load_labelled_texts(recipe.data).test
    rows = {r["name"]: r for r in json.loads((finetuned / "metrics.json").read_text())["models"]}
    for name in ("static", "bag"):
        clf = TextClassifierRuntime(finetuned / "students" / name / "onnx")
        got = clf.predict(test.texts)
        truth = [clf.labels[i] for i in test.labels]
        assert np.mean([g == t for g, t in zip(got, truth, strict=True)]) == pytest.approx(rows[name]["accuracy"], abs=1e-9)
        assert clf.tokenizer.word_path  # the tiny BERT tokenizer takes the runtime's word path for ASCII text
    # one string is one text (not a text per character); what is not a text is refused with its place
    assert clf.predict(test.texts[0]) == clf.predict([test.texts[0]]) and len(clf.predict(test.texts[0])) == 1
    for bad, needle in (([test.texts[0], None], "item 1 is NoneType"), ([b"bytes"], "item 0 is bytes"),
                        ([("a text", "a pair")], "this model classifies single texts")):  # fmt: skip
        with pytest.raises(TypeError, match=needle):
            clf.predict(bad)
    # the static student's tables are int8 in the ONNX file too (the default students[].tables), a scale per row
    import onnx

    graph = onnx.load(str(finetuned / "students" / "static" / "onnx" / "model.onnx")).graph
    kinds = {i.name: (i.data_type, tuple(i.dims)) for i in graph.initializer}
    int8 = {n: d for n, (t, d) in kinds.items() if t == onnx.TensorProto.INT8}
    assert sorted(d[0] for d in int8.values()) == [64, clf.tokenizer.rust.get_vocab_size()], kinds  # bigram rows, tokens
    assert not [n for n, (t, d) in kinds.items() if t == onnx.TensorProto.FLOAT and len(d) == 2 and d[0] >= 64 and d[1] == 16]


def test_a_given_hf_teacher_is_matched_to_the_labels_by_name(finetuned: Path, world: dict[str, Path]) -> None:
    # the run's fine-tuned teacher, saved with its label names in another order: outputs are permuted to match
    folder = world["root"] / "hf-teacher"
    shutil.copytree(finetuned / "teacher", folder)
    cfg = json.loads((folder / "config.json").read_text())
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    order = [2, 0, 1]  # new index i holds old label order[i]
    for key in ("classifier.weight", "classifier.bias"):
        weights[key] = weights[key][order].clone()
    save_file(weights, folder / "model.safetensors")
    names = ["animals", "computing", "weather"]
    cfg["id2label"] = {str(i): names[o] for i, o in enumerate(order)}
    cfg["label2id"] = {v: int(k) for k, v in cfg["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(cfg))
    r = raw(world, "hf", teacher={"kind": "hf", "path": str(folder)},
            students=[{"name": "static", "kind": "static", "dim": 16, "train": {"epochs": 1}}])  # fmt: skip
    r["eval"]["baseline"] = False
    r["export"] = {"onnx": False}
    result = distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    first = json.loads((finetuned / "metrics.json").read_text())["models"][0]
    again = json.loads((result.run_dir / "metrics.json").read_text())
    assert again["models"][0]["accuracy"] == pytest.approx(first["accuracy"])
    assert again["teacher"]["source"] == f"loaded from {folder}"
    # the same teacher on the same data in another run: its logits come from output.cache_dir
    r["output"]["dir"] = str(world["root"] / "hf-again")
    third = distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    third_metrics = json.loads((third.run_dir / "metrics.json").read_text())
    assert third_metrics["teacher_pass_seconds"] == again["teacher_pass_seconds"]
    assert third_metrics["models"][0]["accuracy"] == again["models"][0]["accuracy"]
    assert len(list((world["root"] / "cache" / "text-logits").glob("*.npz"))) >= 2  # fine-tuned teacher, given one
    # labels that are not the data's: refused in the preflight with both lists, nothing written
    cfg["id2label"] = {"0": "animals", "1": "plants", "2": "weather"}
    (folder / "config.json").write_text(json.dumps(cfg))
    r["output"]["dir"] = str(world["root"] / "hf-bad")
    with pytest.raises(distill.TeacherError, match=r"animals, plants, weather.*animals, computing, weather"):
        distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    assert not (world["root"] / "hf-bad").exists()
    # a multi-label classifier (one sigmoid per label) would be misread as class probabilities: refused
    cfg["id2label"] = {str(i): names[o] for i, o in enumerate(order)}
    (folder / "config.json").write_text(json.dumps(cfg | {"problem_type": "multi_label_classification"}))
    with pytest.raises(distill.TeacherError, match="multi_label_classification: its outputs are independent"):
        distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    # the default names LABEL_0..: refused with the hint to write its id2label
    (folder / "config.json").write_text(json.dumps(cfg | {"id2label": {str(i): f"LABEL_{i}" for i in range(3)}}))
    with pytest.raises(distill.TeacherError, match="default names LABEL_0..: write its id2label"):
        distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    # weights without the classification head: it would be random, refused (it loaded without a word)
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, folder / "model.safetensors")
    with pytest.raises(distill.TeacherError, match=r"do not fill BertForSequenceClassification: .*classifier\.(bias|weight)"):
        distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    assert not (world["root"] / "hf-bad").exists()


def test_every_post_run_command_on_a_text_run(finetuned: Path, capsys: pytest.CaptureFixture) -> None:
    before = (finetuned / "comparison.md").read_text()
    assert main(["eval", str(finetuned), "-q"]) == 0
    ev = json.loads((finetuned / "eval.json").read_text())["models"]
    ran = json.loads((finetuned / "comparison.json").read_text())["models"]
    students = [r for r in ran if r["role"] != "baseline"]
    for again, first in zip(ev, students, strict=True):
        assert again["accuracy"] == pytest.approx(first["accuracy"]), first["name"]
    assert main(["export", str(finetuned)]) == 0
    # export takes export.* settings (the int8 folder of the factory student; a static one's tables are int8
    # already) and refuses others, and formats it cannot write, before writing anything
    assert main(["export", str(finetuned), "--set", "export.int8=true", "--set", "export.min_same_label=0.5"]) == 0
    assert (finetuned / "students" / "bag" / "onnx-int8" / "model.onnx").is_file()
    assert not (finetuned / "students" / "static" / "onnx-int8").exists()
    capsys.readouterr()
    for bad, needle in ((["--set", "train.epochs=1"], "takes export.* settings only"),
                        (["--format", "torch"], "only --format onnx applies")):  # fmt: skip
        assert main(["export", str(finetuned), *bad]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    assert main(["report", str(finetuned)]) == 0
    for command in ("compress", "bench"):
        assert main([command, str(finetuned)]) == 2
        assert "does not apply here" in capsys.readouterr().err
    assert (finetuned / "comparison.md").read_text() == before


def _refused(r: dict[str, Any], capsys: pytest.CaptureFixture, tmp_path: Path, *needles: str) -> str:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    code = main(["run", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    assert not Path(r["output"]["dir"]).exists(), "nothing is written before the preflight passes"
    return err


def test_bad_data_is_refused_before_anything_is_written(world: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    def with_data(**data: Any) -> dict[str, Any]:
        r = raw(world, "bad")
        r["data"].update(data)
        r["output"]["dir"] = str(tmp_path / "run")
        return r

    _refused(with_data(label_column="topic"), capsys, tmp_path, "no column 'topic'", "columns: text, label")
    _refused(with_data(label_column="text"), capsys, tmp_path, "also a text column")
    few = labelled_rows(60) + [("a lone plant text", "plants")]
    _refused(with_data(source=str(write_csv(tmp_path / "few.csv", few))), capsys, tmp_path, "'plants' (1)")
    blank = labelled_rows(60) + [("   ", "animals")]
    _refused(with_data(source=str(write_csv(tmp_path / "blank.csv", blank))), capsys, tmp_path, "blank text")
    one = [(t, "animals") for t, _ in labelled_rows(30)]
    _refused(with_data(source=str(write_csv(tmp_path / "one.csv", one))), capsys, tmp_path, "one class")
    _refused(with_data(source=str(tmp_path / "missing.csv")), capsys, tmp_path, "not found")
    _refused(with_data(transfer=str(tmp_path / "gone.txt")), capsys, tmp_path, "data.transfer not found")
    other = write_csv(tmp_path / "other.csv", labelled_rows(20), text="body")
    _refused(with_data(transfer=str(other)), capsys, tmp_path, "data.transfer", "no column 'text'")
    _refused(with_data(source=str(write_csv(tmp_path / "empty.csv", []))), capsys, tmp_path, "has no rows")
    (tmp_path / "latin1.csv").write_bytes("text,label\ncaf\xe9 au lait,food\n".encode("latin-1"))
    _refused(with_data(source=str(tmp_path / "latin1.csv")), capsys, tmp_path, "not UTF-8")
    # a header split by semicolons would read as one column; a column named twice would be renamed 'text.1'
    (tmp_path / "semi.csv").write_text("text;label\n" + "\n".join(f"{t};{lab}" for t, lab in labelled_rows(30)))
    _refused(with_data(source=str(tmp_path / "semi.csv")), capsys, tmp_path, "reads as one column named 'text;label'",
             "split by semicolons", "Fix: save it comma-separated")  # fmt: skip
    (tmp_path / "twice.csv").write_text("text,label,text\n" + "\n".join(f"{t},{lab},x" for t, lab in labelled_rows(30)))
    _refused(with_data(source=str(tmp_path / "twice.csv")), capsys, tmp_path, "more than one column named 'text'")
    # the tiny teacher has 64 positions: a longer token limit would fail inside it, after the fine-tuning
    _refused(with_data(max_length=100), capsys, tmp_path, "data.max_length 100 is longer than the teacher can read",
             "64 positions")


def test_bad_students_and_teachers_are_refused_together(world: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    r = raw(world, "bad")
    r["output"]["dir"] = str(tmp_path / "run")
    r["students"] = [
        {"name": "deep", "kind": "layers", "layers": [0, 7]},
        {"name": "mine", "kind": "factory", "factory": "tests.test_text_classification:wrong_width"},
        {"name": "gone", "kind": "factory", "factory": "no_such_package.models:tiny"},
        {"name": "wide", "kind": "static", "dim": 64},
    ]
    err = _refused(r, capsys, tmp_path, "[7] are not layers of the teacher, which has 2", "(2, 4)", "(2, 3) logits",
                   "no_such_package", "dim (64) is wider than the teacher's token vectors (32)")
    assert err.count("Fix:") >= 3
    r["students"] = [{"name": "s", "kind": "static"}]
    r["teacher"] = {"kind": "hf", "path": str(world["encoder"])}  # an encoder: no classifier head, no labels
    _refused(r, capsys, tmp_path, "do not fill BertForSequenceClassification", "classifier.weight",
             "Fix: give the folder of a fine-tuned classifier, or teacher.kind: finetune")  # fmt: skip
    r["teacher"] = {"kind": "hf", "path": str(tmp_path)}
    _refused(r, capsys, tmp_path, "has no config.json")


def test_a_teacher_at_chance_stops_the_run_with_its_numbers(world: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import yaml

    r = raw(world, "chance")
    r["teacher"].update(epochs=1, lr=1e-6)  # too little to learn anything
    r["train"]["seed"] = 1  # (the new head is seeded by train.seed: this one starts at chance)
    r["students"] = [{"name": "s", "kind": "static", "dim": 8, "train": {"epochs": 1}}]
    r["output"]["dir"] = str(tmp_path / "run")
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no better than chance" in err and "majority class" in err and "eval.allow_chance_teacher: true" in err
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"
    # allowed: the run goes on from where it stopped (the fine-tuned teacher is kept)
    r["eval"]["allow_chance_teacher"] = True
    path.write_text(yaml.safe_dump(r))
    assert main(["run", str(path), "--no-progress", "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "done"


def test_pairs_and_other_formats_are_read(world: dict[str, Path], tmp_path: Path) -> None:
    import pandas as pd

    from distill.core.recipes import validate_recipe
    from distill.tasks.text_classification.data import load_labelled_texts

    rows = labelled_rows(90)
    df = pd.DataFrame({"q": [t for t, _ in rows], "a": [t[::-1] for t, _ in rows], "y": [lab for _, lab in rows]})
    df.to_parquet(tmp_path / "p.parquet")
    df.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    for name in ("p.parquet", "p.jsonl"):
        cfg = validate_recipe({"task": "text_classification", "data": {"source": str(tmp_path / name), "text_column": "q",
                                                                       "text_pair_column": "a", "label_column": "y"}}).data  # fmt: skip
        data = load_labelled_texts(cfg)
        assert data.label_names == ["animals", "computing", "weather"]
        assert len(data.train) + len(data.val) + len(data.test) == 90
        assert data.train.pairs is not None and isinstance(data.train.inputs()[0], tuple)
        assert not set(data.train.ids) & set(data.test.ids)
    # a pair task trains end to end (the tokenizer joins the two texts, token types included)
    r = raw(world, "pairs")
    r["data"] = {"source": str(tmp_path / "p.parquet"), "text_column": "q", "text_pair_column": "a", "label_column": "y",
                 "max_length": 48}  # fmt: skip
    r["students"] = [{"name": "l1", "kind": "layers", "layers": [1], "train": {"epochs": 1}}]
    r["export"] = {"int8": True, "min_same_label": 0.9}
    r["output"]["dir"] = str(tmp_path / "pairs")
    r["output"]["report"] = False
    r["eval"]["allow_chance_teacher"] = True
    result = distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    assert (result.run_dir / "students" / "l1" / "onnx" / "model.onnx").is_file()
    inputs = json.loads((result.run_dir / "students" / "l1" / "onnx" / "config.json").read_text())["inputs"]
    assert inputs == ["input_ids", "attention_mask", "token_type_ids"]
    from distill.export.text_runtime import TextClassifierRuntime

    test = load_labelled_texts(distill.load_recipe(raw=r).data).test
    clf = TextClassifierRuntime(result.run_dir / "students" / "l1" / "onnx")
    got = clf.predict(test.inputs())  # (text, pair) tuples, raw
    assert clf.config["pairs"] is True
    with pytest.raises(TypeError, match="this model classifies pairs of texts"):
        clf.predict([test.inputs()[0][0]])
    acc = np.mean([g == clf.labels[y] for g, y in zip(got, test.labels, strict=True)])
    row = next(row for row in result.rows if row["name"] == "l1")
    assert acc == pytest.approx(row["accuracy"], abs=1e-9)
    # export.int8: an int8 folder beside, chosen on validation texts, its test accuracy measured on raw pairs
    q = row["onnx_int8"]
    folder = result.run_dir / "students" / "l1" / "onnx-int8"
    assert q["file"] == str(folder / "model.onnx") and q["same_label"] >= 0.9 and q["texts"] == len(
        load_labelled_texts(distill.load_recipe(raw=r).data).val)  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.onnx", "tokenizer.json"]
    assert q["bytes"] < (result.run_dir / "students" / "l1" / "onnx" / "model.onnx").stat().st_size
    got8 = TextClassifierRuntime(folder).predict(test.inputs())
    assert np.mean([g == clf.labels[y] for g, y in zip(got8, test.labels, strict=True)]) == pytest.approx(q["accuracy"])
    assert "int8 ONNX of l1 (export.int8, onnx-int8/)" in (result.run_dir / "comparison.md").read_text()
    # ... and timed beside the models, against the same teacher figure as the rows
    assert q["speed_batch"] > 0 and q["speed_b1"] > 0
    assert q["speedup_batch"] == pytest.approx(q["speed_batch"] / result.rows[0]["speed_batch"])
    assert "x the teacher), " in (result.run_dir / "comparison.md").read_text()
    card = (result.run_dir / "students" / "l1" / "README.md").read_text()
    assert "`onnx-int8/` holds the same three files" in card and f"test accuracy {100 * q['accuracy']:.1f}%" in card


def test_the_split_is_stable_stratified_and_deduplicated(tmp_path: Path) -> None:
    from distill.core.recipes import validate_recipe
    from distill.tasks.text_classification.data import load_labelled_texts

    rows = labelled_rows(150)
    shuffled = rows[::-1] + [rows[0], (rows[1][0], "weather" if rows[1][1] != "weather" else "animals")]
    a = write_csv(tmp_path / "a.csv", rows)
    b = write_csv(tmp_path / "b.csv", shuffled)
    cfg = {"task": "text_classification", "data": {"source": str(a), "seed": 3}}
    da = load_labelled_texts(validate_recipe(cfg).data)
    cfg["data"]["source"] = str(b)
    db = load_labelled_texts(validate_recipe(cfg).data)
    assert db.dropped_conflicts == 1  # the text given two labels is left out; the exact duplicate is one example
    # file order does not matter, and leaving out one text moves at most that one
    assert len(set(db.test.ids) ^ set(da.test.ids)) <= 1 and len(set(db.train.ids) ^ set(da.train.ids)) <= 2
    counts = np.bincount(da.test.labels)
    assert counts.max() - counts.min() <= 1  # stratified


def test_builtin_sets_read_debians_files(tmp_path: Path) -> None:
    from distill.tasks.text_classification.data import fortunes_topics, wordnet_lexnames

    wn = tmp_path / "wordnet"
    wn.mkdir()
    header = "  1 This software and database is being provided to you, the LICENSEE, by Princeton University\n"
    (wn / "data.noun").write_text(header + "00015388 05 n 01 animal 0 000 | a living organism; \"the cat is an animal\"\n"
                                  "00021939 06 n 01 artifact 0 000 | a man-made object\n")  # fmt: skip
    (wn / "data.verb").write_text(header + "01835496 38 v 01 travel 0 000 | change location; move\n")
    (wn / "data.adj").write_text(header)
    (wn / "data.adv").write_text(header)
    texts, labels = wordnet_lexnames(wn)
    assert list(zip(texts, labels)) == [("a living organism", "noun.animal"), ("a man-made object", "noun.artifact"),
                                        ("change location; move", "verb.motion")]  # fmt: skip
    fo = tmp_path / "fortunes"
    fo.mkdir()
    (fo / "science").write_text("%\n".join(f"Science fact number {i} is quite true.\n" for i in range(25)))
    (fo / "science.dat").write_bytes(b"\x00")
    (fo / "tiny").write_text("Only one entry in this topic here.\n")
    texts, labels = fortunes_topics(fo)
    assert set(labels) == {"science"} and len(texts) == 25
    with pytest.raises(distill.DataError, match="apt-get install wordnet-base"):
        wordnet_lexnames(tmp_path / "nowhere")


def test_an_hf_student_and_the_hidden_state_term(finetuned: Path, world: dict[str, Path], tmp_path: Path) -> None:
    """A Hugging Face folder as the student (here an encoder without a head: a new one is made for the labels), and
    a layer student that also learns the hidden states and attention maps of the teacher layer it was copied from."""
    r = raw(world, "hf-student", teacher={"kind": "hf", "path": str(finetuned / "teacher")})
    r["students"] = [
        {"name": "hf", "kind": "hf", "path": str(world["encoder"]), "train": {"epochs": 1, "lr": 1e-3}},
        {"name": "narrow", "kind": "narrow", "num_layers": 1, "hidden": 16, "heads": 2, "train": {"epochs": 1}},
        {"name": "l1", "kind": "layers", "layers": [1], "train": {"epochs": 2, "hidden": 1.0, "attention": 1.0, "lr": 1e-4}},
    ]
    r["eval"]["baseline"] = False
    r["output"].update(dir=str(tmp_path / "run"), report=False)
    result = distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    rows = {row["name"]: row for row in result.rows}
    assert all(h["hidden"] >= 0 and h["attention"] >= 0 for h in rows["l1"]["history"]), rows["l1"]["history"]
    assert "hidden" not in rows["hf"]["history"][0]
    cfg = json.loads((result.run_dir / "students" / "hf" / "config.json").read_text())
    assert cfg["id2label"] == {"0": "animals", "1": "computing", "2": "weather"}
    from transformers import AutoModelForSequenceClassification

    # the layer student's folder is a 1-layer classifier transformers loads as it is
    net = AutoModelForSequenceClassification.from_pretrained(str(result.run_dir / "students" / "l1"))
    assert net.config.num_hidden_layers == 1 and net.config.num_labels == 3
    narrow = AutoModelForSequenceClassification.from_pretrained(str(result.run_dir / "students" / "narrow"))
    assert (narrow.config.num_hidden_layers, narrow.config.hidden_size) == (1, 16)
    assert (result.run_dir / "students" / "narrow" / "onnx" / "model.onnx").is_file()


def test_a_decoder_teacher_gpt2_style(tmp_path: Path) -> None:
    """A causal LM folder (GPT-2 architecture, its own byte-level tokenizer without token types) fine-tuned as a
    classifier, a layer student of it (its blocks renumbered for the key/value cache) and a static one, both exported."""
    from distill.tasks.causal_lm.text import train_tokenizer
    from distill.tasks.causal_lm.models import build_causal_lm

    rows = labelled_rows(150)
    tok = train_tokenizer([t for t, _ in rows], 300)
    lm = build_causal_lm(vocab_size=len(tok), layers=2, width=16, heads=2, context=64, eos_token_id=tok.eos_token_id, seed=0)
    lm.save_pretrained(str(tmp_path / "lm"))
    tok.save_pretrained(str(tmp_path / "lm"))
    r = {
        "task": "text_classification", "name": "gpt",
        "data": {"source": str(write_csv(tmp_path / "t.csv", rows)), "max_length": 32},
        "teacher": {"kind": "finetune", "path": str(tmp_path / "lm"), "epochs": 2, "lr": 1e-3, "batch_size": 16},
        "students": [{"name": "l1", "kind": "layers", "layers": [1], "train": {"epochs": 1}},
                     {"name": "static", "kind": "static", "dim": 8, "train": {"epochs": 1}}],
        "eval": {"speed_texts": 16, "latency_texts": 4, "allow_chance_teacher": True, "baseline": False},
        "output": {"dir": str(tmp_path / "run"), "report": False, "cache_dir": str(tmp_path / "cache")},
    }  # fmt: skip
    result = distill.run(distill.load_recipe(raw=r), progress=False, console=False)
    assert [row["name"] for row in result.rows] == ["teacher (lm)", "l1", "static"]
    for name in ("l1", "static"):
        cfg = json.loads((result.run_dir / "students" / name / "onnx" / "config.json").read_text())
        assert cfg["inputs"] == ["input_ids", "attention_mask"] and cfg["labels"] == ["animals", "computing", "weather"]


def test_label_spellings_and_tiny_classes_are_refused_and_students_at_chance_said(
        world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    from distill.tasks.text_classification.results import students_at_chance, summary

    rows = labelled_rows(120)
    spaced = [(t, lab + " " if i % 4 == 0 else lab) for i, (t, lab) in enumerate(rows)]  # "animals " beside "animals"
    r = raw(world, "spelled")
    r["data"]["source"] = str(write_csv(tmp_path / "spaced.csv", spaced))
    r["output"]["dir"] = str(tmp_path / "spelled")
    _refused(r, capsys, tmp_path, "differ only by surrounding spaces or case", "'animals '", "Fix: clean the labels")
    r["data"]["source"] = str(write_csv(tmp_path / "tiny.csv", rows + [("a lone text about tea", "drinks")]))
    _refused(r, capsys, tmp_path, "fewer than 3 samples", "'drinks' (1)")
    # a student no better than always answering the commonest class is flagged, loudly, in its row and the summary
    labels = np.repeat(np.arange(3), 20)
    table = [{"role": "teacher", "name": "t", "accuracy": 0.9},
             {"role": "student", "name": "good", "accuracy": 0.8, "retention": 0.89, "size_bytes": 1},
             {"role": "student", "name": "flat", "accuracy": 0.34, "retention": 0.38, "size_bytes": 1}]
    lines = students_at_chance(table, labels, 3)
    assert [r["at_chance"] for r in table[1:]] == [False, True] and len(lines) == 1
    assert "student flat is at chance level" in lines[0] and "Fix:" in lines[0]
    assert summary(table)["at_chance"] == ["flat"]


def test_the_timed_path_tokenises_as_transformers_does(world: dict[str, Path]) -> None:
    """The throughput columns time texts tokenised by the Rust tokenizer (as the exported runtime does): the same
    ids, mask and token types as the transformers tokenizer gives, for single texts, pairs and truncated texts."""
    from distill.tasks.text_classification.measure import classify_fn
    from distill.tasks.text_classification.models import init_finetune_teacher

    model = init_finetune_teacher(world["encoder"], ["a", "b"])
    model.module.eval()
    texts = [t for t, _ in labelled_rows(12)]
    texts[3] = " ".join([texts[3]] * 8)  # longer than the limit: truncated
    for inputs in (texts, list(zip(texts, reversed(texts), strict=True))):
        fn = classify_fn(model, 16)
        got = fn.tensors(inputs)
        pairs = isinstance(inputs[0], tuple)
        want = model.tokenizer([x[0] for x in inputs] if pairs else inputs, [x[1] for x in inputs] if pairs else None,
                               truncation=True, max_length=16, padding=True, return_tensors="pt")  # fmt: skip
        assert got["input_ids"].shape[1] == 16
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            assert torch.equal(got[key], want[key]), key
        assert fn(inputs).shape == (len(inputs),)


def test_static_tables_are_kept_as_int8_and_measured_as_kept(world: dict[str, Path], tmp_path: Path) -> None:
    """A trained static student's tables are rounded to how they are kept (int8 rows with a scale, or float16):
    the folder holds them so (4x / 2x smaller than float32), loading gives back exactly the weights the run
    measured, and the eval path (embedding_bag) gives the training path's logits."""
    from distill.tasks.text_classification.folders import load_text_model, save_text_model
    from distill.tasks.text_classification.models import StaticClassifier, TextModel, init_finetune_teacher

    tok = init_finetune_teacher(world["encoder"], ["a", "b"]).tokenizer
    torch.manual_seed(0)
    enc = tok([t for t, _ in labelled_rows(20)], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    sizes = {}
    for dtype in ("float32", "float16", "int8"):
        m = StaticClassifier(torch.randn(len(tok), 64), 3, tok.pad_token_id, ngram_buckets=4096)
        with torch.no_grad():
            m.bigrams.weight.normal_()
            m.bigrams.weight[:100] = 0  # untouched buckets stay zero rows
        before = m.table.weight.detach().clone()
        m.store_tables(dtype)
        if dtype == "float32":
            assert torch.equal(m.table.weight, before)
        else:
            assert not torch.equal(m.table.weight, before)
            assert (m.table.weight - before).abs().max() < 0.02 * before.abs().max()
        m.eval()
        kept = m(**batch)
        m.train()
        assert torch.allclose(m(**batch), kept, atol=1e-5)  # the gather path (training, ONNX) sums the same rows
        m.eval()
        folder = tmp_path / dtype
        save_text_model(TextModel(m, tok, "static"), folder, ["x", "y", "z"])
        sizes[dtype] = (folder / "model.pt").stat().st_size
        back, names = load_text_model(folder)
        assert names == ["x", "y", "z"] and back.module.tables == dtype
        for name in ("table", "bigrams"):
            assert torch.equal(getattr(back.module, name).weight, getattr(m, name).weight), (dtype, name)
        assert torch.equal(back.module(**batch), kept)
        save_text_model(back, tmp_path / f"{dtype}-again", ["x", "y", "z"])  # saved again: the same bytes' worth
        again, _ = load_text_model(tmp_path / f"{dtype}-again")
        assert torch.equal(again.module.table.weight, m.table.weight)
    assert sizes["int8"] < 0.3 * sizes["float32"] and sizes["float16"] < 0.55 * sizes["float32"], sizes


def test_a_student_takes_at_most_max_transfer_of_the_transfer_set(world: dict[str, Path]) -> None:
    """train.max_transfer: the first N texts of the run's (seeded) transfer sample, with their teacher logits."""
    from distill.core.recipes import validate_recipe
    from distill.tasks.text_classification.data import load_labelled_texts
    from distill.tasks.text_classification.models import encode, init_finetune_teacher
    from distill.tasks.text_classification.transfer import training_rows, with_transfer

    r = raw(world, "cap")
    r["students"][0]["train"]["max_transfer"] = 7
    recipe = validate_recipe(r)
    assert recipe.train_of(recipe.students[0]).max_transfer == 7
    data = with_transfer(load_labelled_texts(recipe.data), recipe.data)
    tok = init_finetune_teacher(world["encoder"], data.label_names).tokenizer
    splits = {"train": data.train, "transfer": data.transfer}
    logits = {k: np.random.default_rng(0).normal(size=(len(v), 3)).astype(np.float32) for k, v in splits.items()}
    tokens = lambda split: encode(tok, splits[split].inputs(), 32)  # noqa: E731
    for limit, n in ((7, 7), (None, len(data.transfer)), (10_000, len(data.transfer))):
        enc, labels, t = training_rows(tokens, data, logits, use=True, limit=limit)
        assert len(enc) == len(labels) == len(t) == len(data.train) + n
        assert (labels[len(data.train):] == -1).all() and np.array_equal(t[len(data.train):], logits["transfer"][:n])
        assert enc.ids[len(data.train):] == tokens("transfer").ids[:n]
