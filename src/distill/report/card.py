"""The model card of a distilled student (``run_dir/README.md``, Hugging Face format).

:func:`render_model_card` writes the card top to bottom, one helper per section: the title and
headline, task, teacher, licence and provenance, data, method and hyperparameters, results, use,
hardware, reproduce. The teacher's licence check lives in :mod:`distill.report.licences`, who the
teacher is and how to rerun the run in :mod:`distill.report.provenance` (both re-exported here).
"""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distill.core.fsutil import write_text
from distill.report.licences import PERMISSIVE, fm_licence, hub_licence, licence_status  # noqa: F401 (re-exported)
from distill.report.provenance import reproduce_command, teacher_identity, teacher_origin  # noqa: F401 (re-exported)
from distill.report.run_data import kd_temperature, loss_terms, read_run

if TYPE_CHECKING:
    from distill.report.run_data import RunData


def _md(text: Any) -> str:
    """A user string made safe for one Markdown line / table cell."""
    s = " ".join(str(text).split())
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _task(data: RunData) -> tuple[str, str]:
    source = str((data.metrics.get("data") or {}).get("source") or (data.recipe.get("data") or {}).get("source") or "")
    if source.startswith("table"):
        return "tabular-classification", "Tabular Classification"
    return "image-classification", "Image Classification"


def _dataset_id(data: RunData) -> str:
    source = str(
        (data.metrics.get("data") or {}).get("source") or (data.recipe.get("data") or {}).get("source") or "data"
    )
    return {"fashion_mnist": "zalando-datasets/fashion_mnist"}.get(source, source)


def _hardware(data: RunData) -> list[str]:
    m = data.metrics
    lines = [f"torch {m.get('torch', 'unknown')}, {m.get('threads', '?')} CPU thread(s) for training and timing"]
    if m.get("platform"):
        lines.append(f"platform: {m['platform']}")
    else:
        lines.append(
            f"platform (of the machine that wrote this card; the run did not record its own): "
            f"{platform.platform()}, {platform.machine()}, Python {platform.python_version()}"
        )
    lines.append("latency and throughput: eager PyTorch on CPU, every model measured side by side in one process")
    return lines


# ---------------------------------------------------------------- the card
def front_matter(data: RunData) -> dict[str, Any]:
    """The YAML metadata block of the card (Hugging Face model-card fields)."""
    ident = teacher_identity(data)
    task, task_name = _task(data)
    student = data.model("student") or {}
    fm: dict[str, Any] = {**hub_licence(ident["license"]), "library_name": "distill"}
    fm["tags"] = ["knowledge-distillation", task, "distill"]
    fm["datasets"] = [_dataset_id(data)]
    fm["metrics"] = ["accuracy"]
    if ident["named"] and re.fullmatch(r"[\w.-]+/[\w.-]+", str(ident["name"])):
        fm["base_model"] = ident["name"]  # a Hugging Face Hub id
    fm["teacher"] = {
        "name": ident["name"] if ident["named"] else None,
        "architecture": ident["arch"],
        "source": ident["origin"],
        "fingerprint": ident["fingerprint"],
        "license": ident["license"] if ident["license"] is not None else "unknown",
    }
    metrics = []
    if student.get("test_acc") is not None:
        metrics.append({"type": "accuracy", "value": round(float(student["test_acc"]), 6),
                        "name": "test accuracy (distilled student)"})  # fmt: skip
    if ident["test_acc"] is not None:
        metrics.append(
            {"type": "accuracy", "value": round(float(ident["test_acc"]), 6), "name": "test accuracy (teacher)"}
        )
    ds = _dataset_id(data)
    fm["model-index"] = [
        {
            "name": data.name,
            "results": [
                {
                    "task": {"type": task, "name": task_name},
                    "dataset": {"name": ds, "type": ds, "split": "test"},
                    "metrics": metrics,
                }
            ],
        }
    ]
    return fm


def render_model_card(data: RunData) -> str:
    """The card's text: YAML front matter between ``---`` lines, then Markdown."""
    ident = teacher_identity(data)
    _, task_name = _task(data)
    meta = yaml.safe_dump(front_matter(data), sort_keys=False, allow_unicode=True)
    L: list[str] = ["---", meta.rstrip("\n"), "---", ""]
    L += _headline(data, ident, task_name)
    L += _task_section(data, task_name)
    L += _teacher_section(ident)
    L += _licence_section(ident)
    L += _data_section(data)
    L += _method_section(data, ident)
    L += _results_section(data)
    L += _how_to_call(data)
    L += _hardware_section(data)
    L += _reproduce_section(data)
    return "\n".join(L)


def _headline(data: RunData, ident: dict[str, Any], task_name: str) -> list[str]:
    """The title, a one-line summary of the student and, when the licence is not clearly fine, a warning."""
    s = data.table.get("summary") or {}
    acc = (data.model("student") or {}).get("test_acc")
    L = [f"# {_md(data.name)}: distilled student", ""]
    line = f"A small model distilled with `distill` from a larger teacher, for {task_name.lower()}"
    if acc is not None and s.get("retention") is not None and s.get("cost_reduction") is not None:
        line += (
            f": {100 * acc:.2f}% test accuracy, {100 * s['retention']:.1f}% of the teacher's, "
            f"at {100 * (1 - s['cost_reduction']):.2f}% of its FLOPs."
        )
    else:
        line += "."
    L += [line, ""]
    if not ident["licence_ok"]:
        L += ["> **Licence warning.** " + _md(ident["licence_message"]), ""]
    return L


def _task_section(data: RunData, task_name: str) -> list[str]:
    d = data.metrics.get("data") or {}
    line = f"{task_name} over {d.get('num_classes', '?')} classes"
    names = d.get("class_names") or []
    if names:
        shown = ", ".join(_md(n) for n in names[:20]) + (", ..." if len(names) > 20 else "")
        line += f": {shown}."
    else:
        line += "."
    return ["## Task", "", line, ""]


def _teacher_section(ident: dict[str, Any]) -> list[str]:
    L = ["## Teacher", "", "| | |", "|---|---|"]
    L.append(f"| name | {_md(ident['name'])} |")
    if ident["arch"]:
        params = ", ".join(f"{k}={v}" for k, v in ident["params"].items())
        L.append(f"| architecture | {_md(ident['arch'])}{' (' + _md(params) + ')' if params else ''} |")
    if ident["parameters"]:
        L.append(f"| parameters | {ident['parameters']:,} |")
    L.append(f"| weights | {_md(ident['origin'])} |")
    L.append(f"| weight fingerprint (sha256) | `{_md(ident['fingerprint'] or 'not recorded')}` |")
    L.append(
        f"| licence (declared in the recipe's teacher.license) | {_md(ident['license'] if ident['license'] is not None else 'unknown (not declared)')} |"
    )
    L.append("")
    return L


def _licence_section(ident: dict[str, Any]) -> list[str]:
    L = ["## Licence and provenance", ""]
    if ident["licence_ok"]:
        L.append(_md(ident["licence_message"]) + " This card declares the same licence for the student.")
    else:
        L.append("**" + _md(ident["licence_message"]) + "**")
        L.append("")
        L.append(
            "This student was trained to imitate the teacher's outputs, so the teacher's terms decide what may be "
            f"done with it. Its front matter carries the teacher's licence (`{fm_licence(ident['license'])}`) until "
            "someone who has read those terms decides otherwise."
        )
    L.append("")
    L.append(
        "Provenance: the teacher is identified by the sha256 fingerprint of its weights above; the student's "
        "weights are `student.safetensors`, the resolved recipe `recipe.yaml`, the measurements `metrics.json`."
    )
    L.append("")
    return L


def _data_section(data: RunData) -> list[str]:
    d = data.metrics.get("data") or {}
    L = ["## Data", ""]
    split = ", ".join(f"{k} {d[k]:,}" for k in ("train", "val", "test") if isinstance(d.get(k), int))
    L.append(
        f"Source: {_md(d.get('source', 'unknown'))} ({split} samples)."
        if split
        else f"Source: {_md(d.get('source', 'unknown'))}."
    )
    rd = data.recipe.get("data") or {}
    if rd:
        L.append("")
        keep = {k: v for k, v in rd.items() if v is not None}
        L.append("Data settings: " + ", ".join(f"`{_md(k)}: {_md(v)}`" for k, v in keep.items()) + ".")
    L.append("")
    return L


def _method_section(data: RunData, ident: dict[str, Any]) -> list[str]:
    """The objective, the models and how each was trained (student, teacher, baseline)."""
    L = ["## Method and hyperparameters", ""]
    L += _objective_lines(data)
    L += _models_lines(data, ident)
    L += _training_lines(data)
    return L


def _objective_lines(data: RunData) -> list[str]:
    """The loss terms of the recipe and, for a KD objective, its temperature."""
    L: list[str] = []
    terms = loss_terms(data.recipe)
    if terms:
        L.append("Objective (weighted sum of loss terms):")
        L.append("")
        L += ["| loss | weight | parameters |", "|---|---|---|"]
        for t in terms:
            params = ", ".join(f"{k}={v}" for k, v in t.items() if k not in {"loss", "weight"}) or "—"
            L.append(f"| {_md(t.get('loss'))} | {t.get('weight', 1.0):g} | {_md(params)} |")
        L.append("")
    t_kd = kd_temperature(data.recipe)
    if t_kd is not None:
        L.append(
            f"The student learned from the teacher's soft labels, softmax(logits / T) at T = {t_kd:g} "
            "(Hinton et al., 2015), as well as from the hard labels where the objective includes `ce`."
        )
        L.append("")
    return L


def _models_lines(data: RunData, ident: dict[str, Any]) -> list[str]:
    """The student's architecture and, for a teacher trained in this run, how it was trained."""
    L: list[str] = []
    student = data.model("student") or {}
    st = data.recipe.get("student") or {}
    if st:
        params = ", ".join(f"{k}={v}" for k, v in (st.get("params") or {}).items())
        sp = (student.get("cost") or {}).get("parameters")
        L.append(
            f"Student: `{_md(st.get('arch'))}`"
            + (f" ({_md(params)})" if params else "")
            + (f", {sp:,} parameters." if sp else ".")
        )
        L.append("")
    tt = (data.recipe.get("teacher") or {}).get("train")
    if ident["source"] == "trained" and isinstance(tt, dict):
        opt = tt.get("optimizer") or {}
        L.append(
            f"Teacher (trained in this run on hard labels, `teacher.train`): {tt.get('epochs', '?')} epochs, batch "
            f"{tt.get('batch_size', '?')}, {_md(opt.get('name', '?'))} lr {opt.get('lr', '?')}, seed {tt.get('seed', '?')}."
        )
        L.append("")
    return L


def _training_lines(data: RunData) -> list[str]:
    """The recipe's ``train`` section and how the baseline (if any) was trained."""
    L: list[str] = []
    train = data.recipe.get("train") or {}
    if train:
        L.append("Training (`train` section of the recipe):")
        L.append("")
        text = yaml.safe_dump({"train": train}, sort_keys=False).rstrip("\n")
        L += [_fence(text) + "yaml", text, _fence(text)]
        L.append("")
    bt = (data.recipe.get("eval") or {}).get("baseline_train")
    if data.model("baseline") is not None:
        if isinstance(bt, dict):
            text = yaml.safe_dump({"baseline_train": bt}, sort_keys=False).rstrip("\n")
            L += ["Baseline (the same student on hard labels only), trained with `eval.baseline_train`:", ""]
            L += [_fence(text) + "yaml", text, _fence(text), ""]
        else:
            L += ["Baseline: the same student trained on hard labels only, with the same `train` section.", ""]
    return L


def _results_section(data: RunData) -> list[str]:
    L = ["## Results", ""]
    if data.table_markdown:
        L.append(data.table_markdown.rstrip("\n"))
    else:
        L.append("comparison.md is absent from the run directory.")
    L.append("")
    return L


def _how_to_call(data: RunData) -> list[str]:
    """How to run the exported files on raw inputs (when the run was exported)."""
    import json

    shipped = data.run_dir / "export" / "classifier.json"
    if not shipped.exists():
        return ["## Use", "", "Export it to run on raw inputs: `distill export RUN_DIR` (ONNX files that carry their "
                "preprocessing, with `classifier.py`).", ""]  # fmt: skip
    meta = json.loads(shipped.read_text())
    inputs = (f"the feature columns in this order: {', '.join(meta['feature_names'])}" if meta["kind"] == "table"
              else f"images {meta.get('pixels', '')}")  # fmt: skip
    return [
        "## Use", "",
        f"`export/{meta['files'][0]}` takes raw samples ({_md(inputs)}); the standardisation is inside the graph. It "
        f"returns logits over the classes {_md(', '.join(meta['classes']))}. With onnxruntime and numpy alone:", "",
        "```python", "from classifier import Classifier   # export/classifier.py", 'model = Classifier("export")',
        "labels = model.predict(rows)          # rows: a DataFrame with those columns, in that order", "```", "",
        "Rows whose columns are not these names in this order are refused with both lists.", "",
    ]  # fmt: skip


def _hardware_section(data: RunData) -> list[str]:
    L = ["## Hardware", ""]
    L += [f"- {_md(x)}" for x in _hardware(data)]
    if data.metrics.get("seconds") is not None:
        L.append(f"- whole run: {data.metrics['seconds']:.1f} s")
    L.append("")
    return L


def _reproduce_section(data: RunData) -> list[str]:
    """The command that reruns the run, its notes, and the resolved recipe folded away."""
    rep = reproduce_command(data)
    L = ["## Reproduce", ""]
    if rep["version"]:
        L += [f"With distill {_md(rep['version'])} installed, in the run directory:", ""]
    L += ["```sh", rep["command"], "```", ""]
    L += [f"- {_md(n)}" for n in rep["notes"]]
    L.append("")
    recipe_path = data.run_dir / "recipe.yaml"
    if recipe_path.exists():
        text = recipe_path.read_text(encoding="utf-8").rstrip("\n")
        fence = _fence(text)
        L += ["<details><summary>recipe.yaml</summary>", "", fence + "yaml", text, fence, "", "</details>", ""]
    return L


def write_model_card(run_dir: str | Path) -> Path:
    """Write ``run_dir/README.md``, the Hugging Face model card of the distilled student; return its path."""
    data = read_run(run_dir)
    out = Path(run_dir) / "README.md"
    write_text(out, render_model_card(data))
    return out
