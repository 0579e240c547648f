"""Quality of a text classifier against the labels and the teacher, the TF-IDF baseline, and the side-by-side
table ``comparison.md``."""

from __future__ import annotations

from typing import Any

import numpy as np


def quality(logits: np.ndarray, labels: np.ndarray, teacher_logits: np.ndarray | None) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class accuracy and (with the teacher's logits) agreement with the teacher's predictions."""
    from sklearn.metrics import f1_score

    pred = logits.argmax(1)
    per_class = [float((pred[labels == c] == c).mean()) if (labels == c).any() else None for c in range(logits.shape[1])]
    out: dict[str, Any] = {"accuracy": float((pred == labels).mean()),
                           "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
                           "per_class_accuracy": per_class}  # fmt: skip
    if teacher_logits is not None:
        out["agreement"] = float((pred == teacher_logits.argmax(1)).mean())
    return out


def fit_tfidf_baseline(texts: list[Any], labels: np.ndarray, seed: int) -> Any:
    """TF-IDF of word 1-2-grams and character 2-4-grams (pairs: the two texts joined by a separator) into a
    logistic regression: the classic strong baseline of text classification."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, make_pipeline

    features = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=200_000)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, max_features=200_000)),
    ])  # fmt: skip
    model = make_pipeline(features, LogisticRegression(C=10.0, max_iter=2000, random_state=seed))
    model.fit(join_pairs(texts), labels)
    return model


def join_pairs(inputs: list[Any]) -> list[str]:
    return [f"{x[0]} ||| {x[1]}" if isinstance(x, tuple) else x for x in inputs]


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f} MB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def render_table(rows: list[dict[str, Any]], *, teacher_pass_seconds: float | None = None) -> str:
    """The side-by-side table: quality (test accuracy, macro-F1, agreement with the teacher, retention of the
    teacher's accuracy), size on disk, parameters, texts/s at batch ``eval.batch_size`` and 1 (tokenisation included), speed-up
    over the teacher, and what making each model cost."""
    size = rows[0].get("batch_size", 64) if rows else 64
    head = ("| model | kind | test acc | macro-F1 | agrees w/ teacher | retention | size | ONNX | params | "
            f"texts/s b{size} | speed-up b{size} | texts/s b1 | speed-up b1 | train time |")  # fmt: skip
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        train = "-" if r.get("train_seconds") is None else f"{r['train_seconds']:.0f} s"
        speedup = "-" if r.get("speedup_b1") is None else f"{r['speedup_b1']:.1f}x"
        speedup_batch = "-" if r.get("speedup_batch") is None else f"{r['speedup_batch']:.1f}x"
        params = "-" if r.get("params") is None else f"{r['params'] / 1e6:.2f} M"
        lines.append(
            f"| {r['name']} | {r['kind']} | {_pct(r.get('accuracy'))} | {_pct(r.get('macro_f1'))} | "
            f"{_pct(r.get('agreement'))} | {_pct(r.get('retention'))} | {_mb(r.get('size_bytes'))} | "
            f"{_mb(r.get('onnx_bytes'))} | {params} | {_rate(r.get('speed_batch'))} | {speedup_batch} | {_rate(r.get('speed_b1'))} | "
            f"{speedup} | {train} |"
        )
    notes = ["", "Test split, never trained on. Retention: the model's test accuracy over the teacher's. Size: the "
             "saved folder (weights, tokenizer); ONNX: the exported file. texts/s: raw text in, labels out, in this "
             "process, the models taking turns."]  # fmt: skip
    for r in rows:
        q = r.get("onnx_int8")
        if q and q.get("file"):
            speed = "" if q.get("speed_batch") is None else (
                f", {_rate(q['speed_batch'])} texts/s at b{size} ({q['speedup_batch']:.1f}x the teacher), "
                f"{_rate(q['speed_b1'])} at b1 ({q['speedup_b1']:.1f}x), through its ONNX Runtime folder")
            notes.append(f"int8 ONNX of {r['name']} (export.int8, onnx-int8/): {_mb(q['bytes'])}, test accuracy "
                         f"{_pct(q['accuracy'])} (retention {_pct(q['accuracy'] / rows[0]['accuracy'])}), the float "
                         f"file's label on {_pct(q['same_label'])} of {q['texts']} validation texts, "
                         f"{len(q['kept_float'])} weight nodes kept in float{speed}.")  # fmt: skip
        elif q:
            notes.append(f"int8 ONNX of {r['name']}: not written ({q.get('note')}).")
    if teacher_pass_seconds is not None:
        notes.append(f"Train time of a student counts its training only; the teacher's pass over the texts "
                     f"(its logits, shared by every student) took {teacher_pass_seconds:.0f} s more (measured when "
                     "they were computed, also when this run read them from the cache), and its fine-tuning is the "
                     "teacher's own train time.")  # fmt: skip
    return "\n".join(lines + notes) + "\n"


def students_at_chance(rows: list[dict[str, Any]], labels: np.ndarray, num_classes: int) -> list[str]:
    """Mark each student row ``at_chance`` (:func:`distill.report.chance.chance_level` on the test split) and
    return the loud line for each one that is: the run still succeeds, but must not read as a success."""
    from distill.report.chance import chance_level, chance_message

    lines = []
    for r in rows:
        if r["role"] != "student":
            continue
        verdict = chance_level(r["accuracy"], labels, num_classes)
        r["at_chance"] = verdict["at_chance"]
        if verdict["at_chance"]:
            lines.append(chance_message(f"student {r['name']}", verdict, "lower its train.lr or train it longer "
                                        "(train.epochs); check that the teacher is good (its row above)."))
    return lines


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best student by test accuracy, its retention, speed-up and size cut; the baseline's accuracy."""
    teacher = rows[0]
    students = [r for r in rows if r["role"] == "student"]
    best = max(students, key=lambda r: r["accuracy"]) if students else None
    base = next((r for r in rows if r["role"] == "baseline"), None)
    out: dict[str, Any] = {"teacher_accuracy": teacher["accuracy"],
                           "at_chance": [r["name"] for r in students if r.get("at_chance")]}
    if best is not None:
        out.update(best_student=best["name"], best_accuracy=best["accuracy"], retention=best["retention"],
                   speedup_b1=best.get("speedup_b1"), size_ratio=best["size_bytes"] / teacher["size_bytes"]
                   if teacher.get("size_bytes") else None)  # fmt: skip
    if base is not None:
        out["baseline_accuracy"] = base["accuracy"]
        if best is not None:
            out["gain_over_baseline"] = best["accuracy"] - base["accuracy"]
    return out
