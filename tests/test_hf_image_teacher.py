"""teacher.kind hf in the classification task: a local Hugging Face image classifier (a tiny ViT built from a
config, trained here for a second and saved with save_pretrained) teaches a student on a generated image folder;
its id2label is matched to the subfolder names (reordered, generic LABEL_i, or refused naming both lists); the
images are mapped to what its config and preprocessor_config.json say; bad folders stop with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from distill.cli import main
from distill.errors import TeacherError
from tests.conftest import tiny_recipe
from tests.test_image_folder import make_folder

transformers = pytest.importorskip("transformers")

NAMES = ["checks", "cols", "rows"]  # image_folder's classes: the subfolder names, sorted


def _vit(names: list[str], **config: Any) -> Any:
    from transformers import ViTConfig, ViTForImageClassification

    sizes = {"image_size": 16, "patch_size": 4, "num_channels": 3, "hidden_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 64, **config}
    cfg = ViTConfig(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, **sizes)
    torch.manual_seed(0)
    return ViTForImageClassification(cfg)


def _data(root: Path) -> Any:
    from distill.tasks.classification.data import build_data
    from distill.tasks.classification.recipe import DataConfig

    return build_data(DataConfig(source="image_folder", path=str(root / "imgs"), image_size=[14, 14]))


def _train(net: Any, root: Path, folder: Path) -> None:
    """Fit the tiny ViT on the training split as the teacher will see it (through the same pixel map)."""
    from distill.tasks.classification.teachers.hf_image import HFImageTeacher, pixel_map

    data = _data(root)
    net.save_pretrained(folder)
    teacher = HFImageTeacher(net, list(range(3)), pixel_map(net.config, None, data, "test"), folder)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    net.train()
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(teacher(data.train.x), data.train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    net.save_pretrained(folder)


def _relabelled(src: Path, dst: Path, id2label: dict[int, str], permute: list[int] | None = None) -> Path:
    """A copy of the folder with another id2label; ``permute``: the head's rows reordered to match it."""
    from transformers import ViTForImageClassification

    net = ViTForImageClassification.from_pretrained(str(src))
    if permute is not None:
        with torch.no_grad():
            net.classifier.weight.copy_(net.classifier.weight[permute].clone())
            net.classifier.bias.copy_(net.classifier.bias[permute].clone())
    net.config.id2label = id2label
    net.config.label2id = {v: k for k, v in id2label.items()}
    net.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-image")
    make_folder(root / "imgs", per_class=20)
    _train(_vit(NAMES), root, root / "vit")
    order = [2, 0, 1]  # the model's output i is class NAMES[order[i]]
    out = {"root": root, "imgs": root / "imgs", "vit": root / "vit"}
    out["reordered"] = _relabelled(root / "vit", root / "vit-reordered", {i: NAMES[c] for i, c in enumerate(order)},
                                   permute=order)  # fmt: skip
    out["generic"] = _relabelled(root / "vit", root / "vit-generic", {i: f"LABEL_{i}" for i in range(3)})
    out["wrong"] = _relabelled(root / "vit", root / "vit-wrong", {0: "cat", 1: "cols", 2: "dog"})
    return out


def _recipe(write_recipe: Any, folders: dict[str, Path], tmp_path: Path, teacher: dict[str, Any],
            name: str = "recipe.yaml") -> tuple[Path, Path]:  # fmt: skip
    run_dir = tmp_path / f"run-{Path(name).stem}"
    raw = tiny_recipe(eval={"baseline": False, "latency_runs": 2, "warmup_runs": 1, "throughput_runs": 1,
                            "throughput_batch": 8},
                      output={"report": False, "dir": str(run_dir), "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    raw["data"] = {"source": "image_folder", "path": str(folders["imgs"]), "image_size": [14, 14]}
    raw["teacher"] = {"kind": "hf", **teacher}
    raw["train"]["epochs"] = 6
    return write_recipe(raw, name), run_dir


def _teacher_row(run_dir: Path) -> dict[str, Any]:
    rows = json.loads((run_dir / "comparison.json").read_text())["models"]
    return next(r for r in rows if r["role"] == "teacher")


def test_an_hf_image_classifier_teaches_through_the_cli(folders: dict[str, Path], write_recipe: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    recipe, run_dir = _recipe(write_recipe, folders, tmp_path, {"path": str(folders["vit"])})
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 0
    assert "Loading weights" not in capsys.readouterr().err  # transformers' progress bars are off while loading
    teacher = _teacher_row(run_dir)
    assert teacher["test_acc"] > 0.8 and teacher["cost"]["parameters"] > 0 and teacher["cost"]["flops"] > 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["teacher"]["kind"] == "hf" and metrics["teacher"]["path"] == str(folders["vit"])
    assert metrics["teacher_outputs"]["cache"] == "miss"
    log = (run_dir / "run.log").read_text()
    assert "same order" in log and "gray repeated to 3 channels, resized 14x14 -> 16x16" in log
    # the post-run commands on such a run
    assert main(["eval", str(run_dir)]) == 0
    evaluated = json.loads((run_dir / "eval.json").read_text())["models"]
    assert _teacher_row(run_dir)["test_acc"] == pytest.approx(next(r for r in evaluated if r["role"] == "teacher")["test_acc"])
    assert main(["bench", str(run_dir), "--no-memory"]) == 0  # the teacher has its row, as the run called it
    bench = {s["stage"]: s for s in json.loads((run_dir / "bench.json").read_text())["stages"]}
    assert bench["teacher"]["runtime"] == "PyTorch (transformers)" and bench["teacher"]["flops"] > 0
    assert bench["teacher"]["test_acc"] == pytest.approx(teacher["test_acc"]) and bench["teacher"]["throughput"] > 0
    assert bench["teacher"]["size_bytes"] > bench["distilled"]["size_bytes"]
    assert main(["report", str(run_dir)]) == 0
    card = (run_dir / "README.md").read_text()
    assert "| name | vit |" in card and str(folders["vit"]) in card  # named, and its folder in the recipe
    assert "loaded from the Hugging Face folder" in card and "not trained in this run" not in card
    _exported_student_classifies_the_files(folders, run_dir)
    # a second run with the same teacher reuses its cached outputs
    again, run2 = _recipe(write_recipe, folders, tmp_path, {"path": str(folders["vit"])}, "again.yaml")
    assert main(["run", str(again)]) == 0
    assert json.loads((run2 / "metrics.json").read_text())["teacher_outputs"]["cache"] == "hit"


def _exported_student_classifies_the_files(folders: dict[str, Path], run_dir: Path) -> None:
    """`distill export` of such a run: the ONNX student takes the image files as read and gives the run's answers."""
    import importlib.util

    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    assert main(["export", str(run_dir), "--format", "onnx"]) == 0
    spec = importlib.util.spec_from_file_location("shipped_hf", run_dir / "export" / "classifier.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    shipped = module.Classifier(run_dir / "export")
    data = _data(folders["root"])
    pixels = np.stack([np.asarray(Image.open(folders["imgs"] / i).convert("L")) for i in data.test.ids])
    in_run = load_file(str(run_dir / "predictions.safetensors"))["test_logits.student"].argmax(-1).tolist()
    assert shipped.predict(pixels) == [NAMES[i] for i in in_run]
    assert json.loads((run_dir / "export" / "classifier.json").read_text())["teacher"] == "vit"


def test_labels_in_another_order_or_generic_are_matched(folders: dict[str, Path], write_recipe: Any,
                                                        tmp_path: Path) -> None:  # fmt: skip
    accs = {}
    for which in ("vit", "reordered", "generic"):
        recipe, run_dir = _recipe(write_recipe, folders, tmp_path, {"path": str(folders[which])}, f"{which}.yaml")
        assert main(["run", str(recipe)]) == 0
        accs[which] = (_teacher_row(run_dir)["test_acc"], _teacher_row(run_dir)["val_acc"])
        log = (run_dir / "run.log").read_text()
        if which == "reordered":
            assert "in another order (rows, checks, cols): its outputs are reordered" in log
        if which == "generic":
            assert "generic LABEL_0..LABEL_2: taken by index" in log
    assert accs["reordered"] == accs["vit"] == accs["generic"]
    assert accs["vit"][0] > 0.8


def test_a_label_mismatch_stops_before_anything_is_written(folders: dict[str, Path], write_recipe: Any,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    recipe, run_dir = _recipe(write_recipe, folders, tmp_path, {"path": str(folders["wrong"])})
    capsys.readouterr()
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "3: cat, cols, dog" in err and "3: checks, cols, rows" in err and "not in the data: cat, dog" in err
    assert "Traceback" not in err and "Fix:" in err
    assert not run_dir.exists()
    # generic names for another number of classes are refused too, and say so
    generic = tmp_path / "four"
    _vit([f"LABEL_{i}" for i in range(4)]).save_pretrained(generic)
    recipe, run_dir = _recipe(write_recipe, folders, tmp_path, {"path": str(generic)}, "four.yaml")
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "generic names LABEL_0.. for 4 classes, the data has 3" in err and not run_dir.exists()


def _bert_folder(path: Path) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=16, id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)})  # fmt: skip
    BertForSequenceClassification(cfg).save_pretrained(path)
    return path


def test_folders_that_are_not_image_classifiers_are_refused(folders: dict[str, Path], write_recipe: Any,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "empty").mkdir()
    pickled = tmp_path / "pickled"
    shutil.copytree(folders["vit"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    remote = tmp_path / "remote"
    shutil.copytree(folders["vit"], remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="tiny-remote", auto_map={"AutoConfig": "configuration_tiny.TinyConfig",
                                                      "AutoModelForImageClassification": "modeling_tiny.TinyNet"})  # fmt: skip
    (remote / "config.json").write_text(json.dumps(config))
    multi = tmp_path / "multi"  # one sigmoid per label: not a choice among them
    shutil.copytree(folders["vit"], multi)
    (multi / "config.json").write_text(json.dumps(json.loads((multi / "config.json").read_text())
                                                  | {"problem_type": "multi_label_classification"}))  # fmt: skip
    from transformers import ViTModel

    ViTModel(_vit(NAMES).config, add_pooling_layer=False).save_pretrained(tmp_path / "base")  # no classifier head
    cases = {
        str(multi): "problem_type multi_label_classification: its outputs are independent yes/no scores",
        str(tmp_path / "base"): "tensor(s) missing and 0 of another shape (classifier.",
        str(remote): "ships its own model code (config.json's auto_map), and code from a folder runs only when the "
        "recipe allows it. Fix: set teacher.trust_remote_code: true",
        str(tmp_path / "nowhere"): "is not a folder",
        str(tmp_path / "empty"): "has no config.json",
        str(pickled): "has no .safetensors weights (it has pytorch_model.bin)",
        str(_bert_folder(tmp_path / "bert")): "is a 'bert' model (BertForSequenceClassification), not an image "
        "classifier",
    }
    capsys.readouterr()
    for i, (path, message) in enumerate(cases.items()):
        recipe, run_dir = _recipe(write_recipe, folders, tmp_path, {"path": path}, f"bad{i}.yaml")
        assert main(["run", str(recipe)]) == 2, path
        err = capsys.readouterr().err
        assert message in err and "Fix:" in err and "Traceback" not in err, err
        assert not run_dir.exists()


def test_recipe_fields_of_an_hf_teacher() -> None:
    from pydantic import ValidationError

    from distill.tasks.classification.recipe import TeacherConfig

    t = TeacherConfig(kind="hf", path="models/my-vit/")
    assert t.name == "my-vit" and t.trust_remote_code is False and t.arch is None
    with pytest.raises(ValidationError, match="trust_remote_code applies to kind hf"):
        TeacherConfig(kind="onnx", path="m.onnx", trust_remote_code=True)
    with pytest.raises(ValidationError, match="needs `path`, the folder of the teacher"):
        TeacherConfig(kind="hf")
    with pytest.raises(ValidationError, match="inputs applies to kinds onnx and sklearn"):
        TeacherConfig(kind="hf", path="x", inputs="preprocessed")
    assert TeacherConfig(**t.model_dump()).name == "my-vit"  # a resolved recipe reads back


def test_the_images_are_mapped_as_the_preprocessor_config_says(folders: dict[str, Path], tmp_path: Path) -> None:
    from distill.tasks.classification.teachers.hf_image import load_hf_image_teacher

    folder = tmp_path / "vit20"
    net = _vit(NAMES, image_size=20)
    net.save_pretrained(folder)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_resize": True, "size": {"height": 20, "width": 20}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": mean, "image_std": std}))  # fmt: skip
    data = _data(folders["root"])
    teacher = load_hf_image_teacher(folder, data)
    x = data.test.x[:5]
    pixels = (x * data.preprocessing["std"] + data.preprocessing["mean"]).repeat(1, 3, 1, 1)  # [0, 1], RGB
    pixels = torch.nn.functional.interpolate(pixels, size=(20, 20), mode="bilinear", antialias=True)
    pixels = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        want = net(pixel_values=pixels).logits
    assert torch.allclose(teacher.logits(x), want, atol=1e-5)
    assert "normalised with mean [0.4, 0.5, 0.6]" in teacher.pixels.describe()
    (folder / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(TeacherError, match="cannot read .*preprocessor_config.json"):
        load_hf_image_teacher(folder, data)


@pytest.mark.parametrize("kind", ["deit", "convnext"])
def test_resize_resample_and_crop_follow_the_image_processor(folders: dict[str, Path], tmp_path: Path, kind: str) -> None:
    """A processor that resizes with bicubic and centre-crops (DeiT: 24x24 then a 20x20 crop; ConvNeXT: shortest
    edge 20 / crop_pct 0.9 = 22, then a 20x20 crop): the teacher's inputs match what transformers' own image
    processor makes of the same images (PIL's bicubic against torch's: under a level of 255 apart on average)."""
    import numpy as np
    from PIL import Image
    from transformers import ConvNextImageProcessor, DeiTImageProcessor

    from distill.tasks.classification.teachers.hf_image import load_hf_image_teacher

    folder = tmp_path / kind
    _vit(NAMES, image_size=20).save_pretrained(folder)
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    if kind == "deit":
        proc = DeiTImageProcessor(size={"height": 24, "width": 24}, crop_size={"height": 20, "width": 20}, resample=3,
                                  image_mean=mean, image_std=std)  # fmt: skip
    else:
        proc = ConvNextImageProcessor(size={"shortest_edge": 20}, crop_pct=0.9, resample=3, image_mean=mean,
                                      image_std=std)  # fmt: skip
    proc.save_pretrained(folder)
    data = _data(folders["root"])
    teacher = load_hf_image_teacher(folder, data)
    x = data.test.x[:6]
    ours = teacher.pixels(x)
    assert ours.shape == (6, 3, 20, 20)
    gray = ((x * data.preprocessing["std"] + data.preprocessing["mean"]) * 255).round().clamp(0, 255).byte()
    images = [Image.fromarray(g[0].numpy()).convert("RGB") for g in gray]
    theirs = torch.as_tensor(np.asarray(proc(images, return_tensors="np")["pixel_values"]))
    diff = (ours - theirs).abs() * 0.25 * 255  # in levels of 0..255
    assert diff.mean() < 1 and diff.max() < 16, (float(diff.mean()), float(diff.max()))  # measured 0.36 and 10; a bilinear
    # resize to 20x20 without the crop (the old mapping) was 54 and 188 apart
    assert "bicubic" in teacher.pixels.describe() and "centre-cropped to 20x20" in teacher.pixels.describe()
