"""Reports of a finished run: HTML report, model card, licence check, TensorBoard, and the page in a browser.

Two real run directories are made once per module with the real CLI (tiny recipes, about 5 s each):

- ``full``: the teacher trained in the run, a baseline, no declared licence, a teacher name with HTML in it;
- ``lean``: the teacher loaded from ``full``'s checkpoint, no baseline, licence MIT.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from distill.cli import main
from distill.report import plots
from distill.report.card import licence_status, write_model_card
from distill.report.analysis import confusion_matrix, dark_knowledge, per_class_accuracy, softmax, top_pairs
from distill.report.html import write_report, write_tensorboard
from distill.core.results import by_role

from .conftest import tiny_recipe

EVIL_NAME = "<script>alert('x')</script> & \"friends\""
SECTIONS = ("comparison", "curves", "pareto", "per-class", "confusion", "dark-knowledge", "provenance")


def _make_run(root: Path, name: str, **sections: Any) -> Path:
    raw = tiny_recipe(**sections)
    raw["output"] = {"dir": str(root / name), "cache_dir": str(root / "cache")}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(root)  # module-scoped: the per-test autouse chdir has not happened yet
    try:
        assert main(["run", str(path), "--no-progress", "-q"]) == 0
    finally:
        os.chdir(cwd)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-runs")
    full = _make_run(root, "full", teacher={**tiny_recipe()["teacher"], "name": EVIL_NAME})
    ckpt = root / "teacher-ckpt.safetensors"
    shutil.copy(full / "teacher.safetensors", ckpt)
    lean_teacher = {k: v for k, v in tiny_recipe()["teacher"].items() if k != "train"}
    lean = _make_run(
        root, "lean",
        teacher={**lean_teacher, "checkpoint": str(ckpt), "license": "MIT"},
        eval={**tiny_recipe()["eval"], "baseline": False},
    )  # fmt: skip
    return {"full": full, "lean": lean}


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "*.safetensors", "report.html", "README.md"),
    )
    shutil.copy(src / "predictions.safetensors", dst / "predictions.safetensors")
    return dst


def _set_licence(run_dir: Path, licence: str | None) -> None:
    """Declare another teacher licence in a copied run (recipe.yaml and metrics.json both carry it)."""
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    recipe["teacher"]["license"] = licence
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["teacher"]["license"] = licence
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


# ------------------------------------------------------------ HTML parsing
class _Page(HTMLParser):
    """Collects sections (by id), images (src, section), tables (cell texts) and external references."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.section: str | None = None
        self.sections: list[str] = []
        self.images: list[tuple[str, str | None]] = []
        self.tables: list[dict[str, Any]] = []
        self.external: list[str] = []
        self.scripts = 0
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a.get("id")
            self.sections.append(str(a.get("id")))
        elif tag == "img":
            self.images.append((a.get("src") or "", self.section))
        elif tag == "table":
            self.tables.append({"section": self.section, "rows": 0, "cells": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"] += 1
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            v = a.get(key)
            if v and not v.startswith(("data:", "#")):
                self.external.append(v)
        if tag == "link":
            self.external.append(str(a))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None
        elif tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1]["cells"].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _png_size(src: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    raw = base64.b64decode(src[len(prefix) :], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(raw)) as im:
        im.load()
        assert im.format == "PNG"
        return im.size


# ------------------------------------------------------------------ report
def test_report_has_every_section_with_decodable_images(runs: dict[str, Path]) -> None:
    out = write_report(runs["full"])
    assert out == runs["full"] / "report.html"
    html = out.read_text(encoding="utf-8")
    page = _parse(html)
    assert [s for s in SECTIONS if s not in page.sections] == []
    where = [sec for _, sec in page.images]
    for sec, n in {"curves": 1, "pareto": 1, "per-class": 1, "confusion": 2, "dark-knowledge": 1}.items():
        assert where.count(sec) == n, (sec, where)
    for src, _ in page.images:
        w, h = _png_size(src)
        assert w > 200 and h > 150
    # self-contained: nothing to fetch, no scripts; every table has filled cells
    assert page.external == [] and page.scripts == 0
    assert page.tables
    for t in page.tables:
        assert t["rows"] >= 2, t
        filled = [c for c in t["cells"] if c and c != "—"]
        assert len(filled) >= 2, t
    table_sections = {t["section"] for t in page.tables}
    assert {"comparison", "curves", "per-class", "dark-knowledge", "provenance"} <= table_sections
    # comparison: the three models, and the rows of comparison.json
    comp = next(t for t in page.tables if t["section"] == "comparison")
    for cell in ("teacher", "student, hard labels", "student, distilled", "test accuracy", "latency, batch 1 (p50)"):
        assert cell in comp["cells"]
    # dark knowledge: 5 pairs named "a → b", with the kd temperature of the recipe noted
    pairs = next(t for t in page.tables if t["section"] == "dark-knowledge")
    assert sum("→" in c for c in pairs["cells"]) == 5 + 1  # five pairs and the header
    assert "temperature T = 2" in html
    # user strings are escaped (autoescape), the licence (none declared) is flagged
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "licence is unknown" in html


def test_report_says_what_is_absent(runs: dict[str, Path]) -> None:
    html = write_report(runs["lean"]).read_text(encoding="utf-8")
    page = _parse(html)
    assert [s for s in SECTIONS if s not in page.sections] == []
    assert "loaded from a checkpoint" in html and "no training curve" in html
    assert "No baseline" in html
    comp = next(t for t in page.tables if t["section"] == "comparison")
    assert "student, distilled" in comp["cells"] and "student, hard labels" not in comp["cells"]
    for src, _ in page.images:
        _png_size(src)
    assert "licence is unknown" not in html and "permissive" in html


def test_report_without_predictions_file(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy_run(runs["full"], tmp_path / "nopred")
    (run / "predictions.safetensors").unlink()
    html = write_report(run).read_text(encoding="utf-8")
    page = _parse(html)
    assert {"comparison", "curves", "pareto", "per-class"} <= set(page.sections)
    assert "predictions.safetensors (test labels and logits) is absent" in html
    assert len(page.images) == 2  # curves and quality-vs-latency remain


def test_figures_leave_no_global_pyplot_state(runs: dict[str, Path]) -> None:
    write_report(runs["lean"])
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == []


# ------------------------------------------------------------ analysis
def test_dark_knowledge_and_confusion_by_hand() -> None:
    labels = np.array([0, 0, 1, 2])
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1], [0.35, 0.25, 0.4]]))
    dk = dark_knowledge(labels, logits)
    assert np.isnan(np.diag(dk)).all()
    np.testing.assert_allclose(dk[0, 1:], [0.3, 0.1])
    np.testing.assert_allclose(dk[1], [0.1, np.nan, 0.1])
    # wrong mass per class = 1 - mean probability of the true class
    np.testing.assert_allclose(np.nansum(dk, axis=1), 1 - np.array([0.6, 0.8, 0.4]))
    # a higher temperature spreads more probability to the wrong classes
    assert np.nansum(dark_knowledge(labels, logits, 4.0)) > np.nansum(dk)
    top = top_pairs(dk, ["a", "b", "c"], 2)
    assert [t[:2] for t in top] == [("c", "a"), ("a", "b")] and top[0][2] == pytest.approx(0.35)
    cm = confusion_matrix(labels, logits, 3)
    assert cm.tolist() == [[2, 0, 0], [0, 1, 0], [0, 0, 1]]
    np.testing.assert_allclose(per_class_accuracy(np.array([[1, 1], [0, 0]])), [0.5, np.nan])
    np.testing.assert_allclose(softmax(np.array([[0.0, 0.0]])), [[0.5, 0.5]])


def test_pareto_front() -> None:
    pts = [(1.0, 0.9), (0.1, 0.8), (0.2, 0.7), (0.1, 0.8), (5.0, 0.95)]
    assert plots.pareto_front(pts) == [1, 0, 4]


# ----------------------------------------------------------- model card
def _card(run: Path) -> tuple[dict[str, Any], str]:
    text = write_model_card(run).read_text(encoding="utf-8")
    assert text.startswith("---\n")
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def test_model_card_front_matter_and_body(runs: dict[str, Path]) -> None:
    meta, body = _card(runs["full"])
    assert meta["library_name"] == "distill"
    assert meta["license"] == "unknown"
    assert {"knowledge-distillation", "image-classification"} <= set(meta["tags"])
    assert meta["datasets"] == ["digits"]
    metrics = json.loads((runs["full"] / "metrics.json").read_text())
    assert meta["teacher"]["fingerprint"] == metrics["teacher"]["fingerprint"]
    assert meta["teacher"]["name"] == EVIL_NAME  # YAML carries it verbatim (quoted by the dumper)
    results = meta["model-index"][0]["results"][0]
    assert results["task"]["type"] == "image-classification"
    values = {m["name"]: m["value"] for m in results["metrics"]}
    assert values["test accuracy (distilled student)"] == pytest.approx(
        by_role(metrics)["student"]["test_acc"], abs=1e-6
    )
    assert values["test accuracy (teacher)"] == pytest.approx(by_role(metrics)["teacher"]["test_acc"], abs=1e-6)
    for heading in ("## Task", "## Teacher", "## Licence and provenance", "## Data", "## Method and hyperparameters",
                    "## Results", "## Hardware", "## Reproduce"):  # fmt: skip
        assert heading in body, heading
    assert metrics["teacher"]["fingerprint"] in body and "trained in this run" in body
    assert (runs["full"] / "comparison.md").read_text().splitlines()[0] in body
    assert "| kd | 0.7 | temperature=2.0 |" in body and "epochs: 2" in body
    assert "```sh\ndistill run recipe.yaml\n```" in body
    assert f"torch {metrics['torch']}" in body
    prose = re.sub(r"(?ms)^(`{3,})[^\n]*\n.*?^\1\s*$", "", body)  # code blocks show text, never HTML
    assert "<script>" not in prose and "&lt;script&gt;" in prose


@pytest.mark.parametrize(
    ("licence", "warned", "phrase"),
    [
        (
            None,
            True,
            "The teacher's licence is unknown: check that its terms allow training other models on its outputs",
        ),
        ("CC-BY-NC-4.0", True, "non-commercial"),
        ("MIT", False, "permissive"),
    ],
)
def test_model_card_licence_warning(runs: dict[str, Path], tmp_path: Path, licence: str | None, warned: bool,
                                    phrase: str) -> None:  # fmt: skip
    run = _copy_run(runs["full"], tmp_path / "run")
    _set_licence(run, licence)
    meta, body = _card(run)
    section = body.split("## Licence and provenance", 1)[1].split("\n## ", 1)[0]
    assert phrase in section
    assert ("Licence warning" in body) is warned
    assert meta["license"] == {None: "unknown", "CC-BY-NC-4.0": "cc-by-nc-4.0", "MIT": "mit"}[licence]


def test_model_card_of_checkpoint_teacher(runs: dict[str, Path]) -> None:
    meta, body = _card(runs["lean"])
    assert meta["license"] == "mit" and "Licence warning" not in body
    assert (
        "teacher-ckpt.safetensors" in body
        and "trained in this run" not in body.split("## Teacher", 1)[1].split("##")[0]
    )


# --------------------------------------------------------------- licences
@pytest.mark.parametrize(
    "licence",
    ["MIT", "mit", "Apache-2.0", "Apache License 2.0", "apache 2.0", "BSD-3-Clause", "bsd", "CC-BY-4.0",
     "Creative Commons Attribution 4.0 International", "CC0-1.0", "ISC", "Unlicense", "MIT License", "NCSA"],
)  # fmt: skip
def test_permissive_licences_are_ok(licence: str) -> None:
    ok, message = licence_status(licence)
    assert ok, message
    assert "permissive" in message


@pytest.mark.parametrize(
    ("licence", "why"),
    [
        (None, "unknown"), ("", "unknown"), ("unknown", "unknown"), ("  ", "unknown"),
        ("CC-BY-NC-4.0", "non-commercial"), ("cc-by-nc-sa-4.0", "non-commercial"), ("Non-Commercial", "non-commercial"),
        ("noncommercial research", "non-commercial"), ("OpenAI Terms of Use", "terms of use"),
        ("llama2", "Llama"), ("Llama 3.1 Community License", "Llama"), ("gemma", "Gemma"),
        ("proprietary", "proprietary"), ("custom", "custom"), ("other", "custom"), ("research-only", "research"),
        ("CC-BY-ND-4.0", "NoDerivatives"), ("CC-BY-SA-4.0", "share-alike"), ("GPL-3.0", "share-alike"),
        ("bigscience-openrail-m", "RAIL"), ("apache-2.0 with non-commercial rider", "non-commercial"),
        ("WhateverLicense 1.0", "not one distill recognises"),
    ],
)  # fmt: skip
def test_restrictive_or_unknown_licences_are_not_ok(licence: str | None, why: str) -> None:
    ok, message = licence_status(licence)
    assert not ok
    assert why in message
    assert "check that its terms allow training other models on its outputs" in message


# ------------------------------------------------------------ TensorBoard
def test_tensorboard_event_files(runs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _copy_run(runs["full"], tmp_path / "run")
    out = write_tensorboard(run)
    assert out == run / "tensorboard"
    write_tensorboard(run)  # a second call replaces, never duplicates
    assert sorted(p.name for p in out.iterdir()) == ["baseline", "student", "teacher"]
    assert len(list((out / "student").iterdir())) == 1
    acc = EventAccumulator(str(out / "student"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "loss/kd", "loss/ce", "accuracy/val", "accuracy/train", "optim/lr"} <= tags
    history = json.loads((run / "history" / "student.json").read_text())
    kd = acc.Scalars("loss/kd")
    assert [e.step for e in kd] == [r["epoch"] for r in history]
    assert [e.value for e in kd] == pytest.approx([r["loss/kd"] for r in history], rel=1e-6)
    assert write_tensorboard(runs["lean"]) is not None
    assert sorted(p.name for p in (runs["lean"] / "tensorboard").iterdir()) == ["student"]  # no teacher curve


def test_tensorboard_absent_returns_none(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "tensorboard_available", lambda: False)
    run = _copy_run(runs["lean"], tmp_path / "run")
    assert write_tensorboard(run) is None
    assert not (run / "tensorboard").exists()


# ---------------------------------------------------------------- browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]  # fmt: skip
# Added to a test copy of the page only (the report itself has no script): records each image's decoded size.
_PROBE = (
    "<script>window.addEventListener('load', () => { for (const im of document.images) "
    "{ im.setAttribute('data-natural', im.complete ? im.naturalWidth + 'x' + im.naturalHeight : 'pending'); } });"
    "</script>"
)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(runs: dict[str, Path], tmp_path: Path) -> None:
    report = write_report(runs["full"])
    html = report.read_text(encoding="utf-8")
    n_images = len(_parse(html).images)
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(["--run-all-compositor-stages-before-draw", "--virtual-time-budget=5000", "--dump-dom",
                     probe.as_uri()], tmp_path / "profile-dom").stdout  # fmt: skip
    page = _parse(dom)
    assert len(page.images) == n_images == 6
    sizes = re.findall(r'data-natural="([^"]*)"', dom)
    assert len(sizes) == n_images, "the load event did not run"
    for s in sizes:
        w, h = (int(v) for v in s.split("x"))
        assert w > 200 and h > 150, s
    assert page.tables and all(len([c for c in t["cells"] if c]) >= 2 for t in page.tables)

    shot = tmp_path / "report.png"
    _chromium(["--window-size=1280,3000", f"--screenshot={shot}", report.as_uri()], tmp_path / "profile-shot")
    assert shot.exists(), "no screenshot"
    with Image.open(shot) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert rgb.shape[:2] == (3000, 1280)
    assert rgb.std() > 10  # not blank
    colours = np.unique(rgb.reshape(-1, 3)[::7].astype(np.uint8), axis=0)
    assert len(colours) > 100  # text, tables and figures, not a flat page
