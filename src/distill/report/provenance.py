"""Who the teacher of a run is and how to rerun it: its origin, identity (name, fingerprint, licence) and
the command that reproduces the run. Shared by the model card and the HTML report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distill.report.licences import licence_status

if TYPE_CHECKING:
    from distill.report.run_data import RunData


def teacher_origin(source: str | None, checkpoint: str | None, path: str | None, members: int = 0) -> str:
    """Where the teacher's weights came from, in words: trained in this run, loaded from a checkpoint or from
    an ONNX / scikit-learn / precomputed file or a Hugging Face folder, or an ensemble of such."""
    if source == "trained":
        return "trained in this run"
    if source == "checkpoint":
        return f"loaded from the checkpoint {checkpoint}" if checkpoint else "loaded from a checkpoint"
    if source == "ensemble":
        return f"an ensemble of {members} teachers, each loaded from its own file" if members else "an ensemble"
    if source in {"onnx", "sklearn", "precomputed", "hf"}:
        what = {"onnx": "the ONNX file", "sklearn": "the scikit-learn file", "precomputed": "the outputs file",
                "hf": "the Hugging Face folder"}[source]
        return f"loaded from {what} {path}" if path else f"loaded from {what}"
    return f"{source} (not trained in this run)" if source else "not recorded"


def teacher_identity(data: RunData) -> dict[str, Any]:
    """Name, origin, fingerprint and licence of the teacher of a run (for the card and the report)."""
    t = dict(data.metrics.get("teacher") or {})
    rt = data.recipe.get("teacher") or {}
    arch = rt.get("factory") or rt.get("arch") or rt.get("kind")
    name = t.get("name") or rt.get("name")
    checkpoint = t.get("checkpoint") or rt.get("checkpoint")
    source = t.get("source") or ("checkpoint" if checkpoint else "trained")
    licence = t.get("license", rt.get("license"))
    ok, message = licence_status(licence)
    teacher = data.model("teacher") or {}
    return {
        "name": name or f"{arch or 'model'} (unnamed)",
        "named": bool(name),
        "arch": arch,
        "params": rt.get("params") or {},
        "origin": teacher_origin(source, checkpoint, t.get("path") or rt.get("path"), len(rt.get("members") or [])),
        "checkpoint": checkpoint,
        "source": source,
        "fingerprint": t.get("fingerprint"),
        "license": licence,
        "licence_ok": ok,
        "licence_message": message,
        "test_acc": teacher.get("test_acc"),
        "parameters": (teacher.get("cost") or {}).get("parameters"),
    }


def reproduce_command(data: RunData) -> dict[str, Any]:
    """The command that reproduces the run from its resolved ``recipe.yaml``, with notes."""
    out_dir = (data.recipe.get("output") or {}).get("dir")
    notes = [
        "recipe.yaml is the resolved recipe this run wrote (every default filled in); it is in the run directory.",
    ]
    if out_dir:
        notes.append(f"It writes to output.dir ({out_dir}); add `--set output.dir=OTHER` to keep this run's folder.")
    ck = (data.recipe.get("teacher") or {}).get("checkpoint")
    if ck:
        notes.append(f"It loads the teacher from {ck}; the same weights are also saved as teacher.safetensors here.")
    return {"command": "distill run recipe.yaml", "notes": notes, "version": data.metrics.get("distill_version")}
