"""Measuring a text run's models side by side: raw texts in, labels out (tokenisation included), at batch
``eval.batch_size`` and 1 in this process; and the ONNX folders of the students, parity-checked on test texts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from distill.core.logs import log
from distill.tasks.text_classification import models as M
from distill.tasks.text_classification.recipe import TextClassificationRecipe
from distill.tasks.text_classification.results import join_pairs


def classify_fn(model: M.TextModel, max_length: int) -> Any:
    """Raw texts in, label indices out (tokenisation included): what the throughput columns time. Texts are
    tokenised as the exported runtime does it (:class:`distill.export.text_runtime.BatchTokenizer`: the Rust
    tokenizer, or its cache of words for plain-ASCII text; the same ids as the transformers tokenizer's). A slow
    (Python) tokenizer, which has no Rust tokenizer, goes through transformers."""
    import torch

    from distill.export.text_runtime import BatchTokenizer

    tok, types = model.tokenizer, model.uses_token_types
    backend = getattr(tok, "backend_tokenizer", None)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    fast = BatchTokenizer(backend.to_str(), max_length, pad, tok.pad_token or "[PAD]") if backend is not None else None

    def tensors(inputs: list[Any]) -> dict[str, Any]:
        if fast is not None:
            return {k: torch.from_numpy(v) for k, v in fast.feeds(inputs, types).items()}
        pairs = isinstance(inputs[0], tuple) if inputs else False
        texts = [x[0] for x in inputs] if pairs else list(inputs)
        enc = tok(texts, [x[1] for x in inputs] if pairs else None, truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt", return_token_type_ids=types)  # fmt: skip
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc and (types or k != "token_type_ids")}

    def classify(inputs: list[Any]) -> np.ndarray:
        batch = tensors(inputs)
        with torch.no_grad():
            return model.module(**batch).argmax(1).numpy()

    classify.tensors = tensors  # type: ignore[attr-defined]  # the batch it classifies (tests compare the ids)
    return classify


def padded_batches(model: M.TextModel, texts: list[Any], max_length: int, size: int = 32) -> list[dict[str, Any]]:
    """``texts`` tokenised for ``model`` in padded batches of ``size`` (the examples an export is checked on)."""
    enc = M.encode(model.tokenizer, texts, max_length)
    return [enc.batch(list(range(s, min(s + size, len(enc)))), model.uses_token_types) for s in range(0, len(enc), size)]


def time_models(recipe: TextClassificationRecipe, rows: list[dict[str, Any]], models: dict[str, M.TextModel],
                baseline: Any, texts: list[Any], run_dir: Path | None = None) -> None:  # fmt: skip
    """Texts/s at batch ``eval.batch_size`` and 1 of every model, side by side in this process; speed-ups over the
    teacher. A student's int8 ONNX folder (``export.int8``) is timed with them, through the runtime a deployment
    uses, on as many threads as torch has: what ships, against the teacher as it was given."""
    import torch

    from distill.bench.rates import side_by_side_rates
    from distill.export.text_runtime import TextClassifierRuntime

    fns = {name: classify_fn(m, recipe.data.max_length) for name, m in models.items()}
    if baseline is not None:
        fns["baseline"] = lambda xs: baseline.predict(join_pairs(list(xs)))
    shipped = {r["name"]: r["onnx_int8"] for r in rows if (r.get("onnx_int8") or {}).get("file") and run_dir is not None}
    for name in shipped:
        runtime = TextClassifierRuntime(run_dir / "students" / name / "onnx-int8", threads=torch.get_num_threads())
        fns[f"{name} (int8 ONNX)"] = lambda xs, rt=runtime: rt.logits(list(xs)).argmax(1)
    for m in models.values():
        m.module.eval()
    size = recipe.eval.batch_size
    batched = side_by_side_rates(fns, texts[: recipe.eval.speed_texts], size)
    b1 = side_by_side_rates(fns, texts[: recipe.eval.latency_texts], 1)
    by_role = {"teacher": "teacher", "baseline": "baseline"}
    for row in rows:
        key = by_role.get(row["role"], row["name"])
        row["speed_batch"], row["speed_b1"], row["batch_size"] = batched[key], b1[key], size
    for name, q in shipped.items():
        q["speed_batch"], q["speed_b1"] = batched[f"{name} (int8 ONNX)"], b1[f"{name} (int8 ONNX)"]
    for r in [*rows, *shipped.values()]:
        r["speedup_batch"] = r["speed_batch"] / rows[0]["speed_batch"]
        r["speedup_b1"] = r["speed_b1"] / rows[0]["speed_b1"]
    for row in rows:
        log.info("speed %s: %.0f texts/s at batch %d, %.0f at batch 1", row["name"], row["speed_batch"], size,
                 row["speed_b1"])  # fmt: skip
    for name, q in shipped.items():
        log.info("speed %s (int8 ONNX): %.0f texts/s at batch %d (%.1fx the teacher), %.0f at batch 1", name,
                 q["speed_batch"], size, q["speedup_batch"], q["speed_b1"])  # fmt: skip


def export_students(recipe: TextClassificationRecipe, setup: Any, models: dict[str, M.TextModel],
                    rows: list[dict[str, Any]], run_dir: Path) -> None:  # fmt: skip
    """An ONNX folder per student (model.onnx, tokenizer.json, config.json), parity-checked on test texts."""
    from distill.export.onnx_text import export_text_onnx

    texts = setup.data.test.inputs()[:256]
    for spec in recipe.students:
        model = models[spec.name]
        batches = padded_batches(model, texts, recipe.data.max_length)
        row = next(r for r in rows if r["name"] == spec.name)
        report = export_text_onnx(model.module, model.tokenizer, setup.data.label_names,
                                  run_dir / "students" / spec.name / "onnx", batches,
                                  max_length=recipe.data.max_length, max_abs_diff=recipe.export.max_abs_diff,
                                  pairs=bool(recipe.data.text_pair_column))  # fmt: skip
        row["onnx"], row["onnx_bytes"] = report, report["bytes"]
        log.info("  %s: ONNX %s (%.1f MB, max |diff| %.2g)", spec.name, report["file"], report["bytes"] / 1e6,
                 report["max_abs_diff"])  # fmt: skip
        if recipe.export.int8 and not isinstance(model.module, M.StaticClassifier):
            row["onnx_int8"] = int8_folder(recipe, setup, model, run_dir / "students" / spec.name)


def int8_folder(recipe: TextClassificationRecipe, setup: Any, model: M.TextModel, folder: Path) -> dict[str, Any]:
    """The student's int8 ONNX folder (its kept-float matrices chosen on validation texts) and its test accuracy
    on raw text, through the runtime a deployment uses."""
    from distill.export.onnx_text import quantize_text_onnx
    from distill.export.text_runtime import TextClassifierRuntime

    batches = padded_batches(model, setup.data.val.inputs()[:256], recipe.data.max_length)
    report = quantize_text_onnx(folder / "onnx", folder / "onnx-int8", batches, min_same_label=recipe.export.min_same_label)
    if report.get("file") is None:
        log.warning("  %s", report["note"])
        return report
    test = setup.data.test
    got = TextClassifierRuntime(folder / "onnx-int8").logits(test.inputs()).argmax(1)
    report["accuracy"] = float(np.mean(got == np.asarray(test.labels)))
    log.info("  int8 ONNX %s (%.1f MB, %d weight nodes kept in float): test accuracy %.1f%%", report["file"],
             report["bytes"] / 1e6, len(report["kept_float"]), 100 * report["accuracy"])  # fmt: skip
    return report
