"""data.source image_folder: class subfolders of real PNG/JPEG files (made here with Pillow), resized, split
stratified and seeded; a run distils from them, and the exported student classifies the image files as read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from distill.tasks.classification.data import build_data
from distill.errors import DataError
from distill.tasks.classification.recipe import DataConfig

Image = pytest.importorskip("PIL.Image")


def _pattern(kind: str, rng: np.random.Generator, size: int = 14) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    base = {"rows": (y // 2) % 2, "cols": (x // 2) % 2, "checks": ((x // 3) + (y // 3)) % 2}[kind]
    img = base * 180 + rng.integers(0, 60, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_folder(root: Path, per_class: int = 24, rgb: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for kind in ("rows", "cols", "checks"):
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            arr = _pattern(kind, rng)
            im = Image.fromarray(np.stack([arr] * 3, -1) if rgb else arr)
            im.save(root / kind / (f"{i}.jpg" if i % 5 == 0 else f"{i}.png"))
    return root


def test_a_folder_of_images_is_read_resized_and_split(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", rgb=True)
    data = build_data(DataConfig(source="image_folder", path=str(tmp_path / "imgs"), image_size=[10, 12], channels=3))
    assert data.class_names == ["checks", "cols", "rows"] and data.in_shape == (3, 10, 12)
    assert len(data.train) + len(data.val) + len(data.test) == 72
    assert set(data.test.ids) & set(data.train.ids) == set() and all(i.endswith((".png", ".jpg")) for i in data.test.ids)
    assert sorted(np.bincount(data.test.y.numpy()).tolist()) == [5, 5, 5]  # stratified: 20% of each class
    again = build_data(DataConfig(source="image_folder", path=str(tmp_path / "imgs"), image_size=[10, 12], channels=3))
    assert list(again.test.ids) == list(data.test.ids)  # seeded, stable ids


def test_bad_image_folders_are_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", per_class=3)
    (root / "rows" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1 files in .* are not readable images: rows/broken.png"):
        build_data(DataConfig(source="image_folder", path=str(root)))
    (root / "empty").mkdir()
    (root / "rows" / "broken.png").unlink()
    with pytest.raises(DataError, match="the class folders empty hold no images"):
        build_data(DataConfig(source="image_folder", path=str(root)))
    with pytest.raises(DataError, match="image folder not found"):
        build_data(DataConfig(source="image_folder", path=str(tmp_path / "nowhere")))
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="apply to source image_folder"):
        DataConfig(source="digits", image_size=[8, 8])
    # a resolved recipe (a run's recipe.yaml, an ensemble member) writes every field, defaults included
    resolved = DataConfig(source="digits").model_dump()
    assert DataConfig(**resolved).source == "digits"


def test_distill_from_an_image_folder_and_classify_the_files(tmp_path: Path) -> None:
    import distill
    from distill.core.results import by_role
    from tests.conftest import tiny_recipe

    root = make_folder(tmp_path / "imgs", per_class=30)
    data_cfg = {"source": "image_folder", "path": str(root), "image_size": [14, 14]}
    raw = tiny_recipe(data=data_cfg, eval={"baseline": False, "latency_runs": 3, "warmup_runs": 1,
                                           "throughput_runs": 1, "throughput_batch": 16},
                      output={"report": False, "dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")})  # fmt: skip
    raw["data"] = data_cfg
    raw["teacher"]["train"]["epochs"] = 8
    raw["train"]["epochs"] = 8
    result = distill.run(distill.load_recipe(raw=raw), progress=False, console=False)
    m = by_role(json.loads((Path(result.run_dir) / "metrics.json").read_text()))
    assert m["teacher"]["test_acc"] > 0.9
    distill.export(result.run_dir, ["onnx"])
    spec = importlib.util.spec_from_file_location("shipped", Path(result.run_dir) / "export" / "classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.Classifier(Path(result.run_dir) / "export")
    data = build_data(DataConfig(**data_cfg))
    pixels = np.stack([np.asarray(Image.open(root / i).convert("L")) for i in data.test.ids])  # the files, as read
    got = model.predict(pixels)
    want = [i.split("/")[0] for i in data.test.ids]
    assert np.mean(np.array(got) == np.array(want)) == pytest.approx(m["student"]["test_acc"], abs=1e-6)
    # the image files themselves, of another size than the student's input: converted and resized as the run did
    big = tmp_path / "big"
    for i in data.test.ids:
        (big / i).parent.mkdir(parents=True, exist_ok=True)
        Image.open(root / i).convert("RGB").resize((28, 28), Image.Resampling.NEAREST).save(big / (i + ".png"))
    shipped = json.loads((Path(result.run_dir) / "export" / "classifier.json").read_text())
    assert shipped["image_file"] == {"mode": "L", "size": [14, 14], "resample": "bilinear"}
    from_files = model.predict([big / (i + ".png") for i in data.test.ids])
    as_read = model.predict([Image.open(big / (i + ".png")).convert("L").resize((14, 14), Image.Resampling.BILINEAR)
                             for i in data.test.ids])  # fmt: skip
    assert from_files == as_read
    assert model.predict(str(big / (data.test.ids[0] + ".png"))) == from_files[:1]
    assert np.mean(np.array(model.predict([root / i for i in data.test.ids])) == np.array(want)) == pytest.approx(
        m["student"]["test_acc"], abs=1e-6)
