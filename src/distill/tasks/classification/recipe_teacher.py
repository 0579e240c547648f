"""The classification recipe's teacher section (``teacher``): what the large model is and how it is loaded or
trained (its ``train`` field is :class:`~distill.tasks.classification.recipe_train.TrainConfig`); the whole
schema is importable from :mod:`.recipe`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from distill.recipe.base import Section
from distill.tasks.classification.recipe_train import TrainConfig, check_builder_params

__all__ = ["TeacherConfig"]


class TeacherConfig(Section):
    kind: Literal["torch", "onnx", "sklearn", "precomputed", "ensemble", "hf"] = Field(
        "torch",
        description="What the teacher is: 'torch' (a module: built-in `arch` or `factory`, trained here or "
        "loaded from `checkpoint`), 'onnx' (a model file run by onnxruntime), 'sklearn' (an estimator with "
        "predict_proba), 'precomputed' (a file of outputs keyed by sample id, e.g. from a hosted API), "
        "'ensemble' (the mean of `members`' probabilities), or 'hf' (a local Hugging Face image classifier "
        "folder, AutoModelForImageClassification, loaded offline: its id2label is matched to the data's class "
        "names and the images are resized and normalised as its config and preprocessor_config.json say).",
    )
    arch: Literal["mlp", "cnn"] | None = Field(
        "cnn", description="torch: built-in builder of the teacher ('mlp' or 'cnn'; left unset, 'mlp' on a table); null "
        "when `factory` is used."
    )
    factory: str | None = Field(
        None,
        description="torch: any nn.Module instead of a built-in: 'package.module:function', called with `params` "
        "(and in_shape/num_classes when it accepts them).",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="torch: arguments of the builder or factory.")
    checkpoint: str | None = Field(
        None, description="torch: safetensors weights of a trained teacher. When absent the teacher is trained first."
    )
    train: TrainConfig | None = Field(
        None, description="torch: how to train the teacher when there is no checkpoint (default: the `train` section)."
    )
    path: str | None = Field(
        None,
        description="onnx/sklearn/precomputed: the file (.onnx; .skops, or .pkl/.joblib with trust_pickle; "
        ".parquet/.npz/.jsonl of outputs with an `id` per sample); hf: the folder save_pretrained wrote "
        "(config.json with id2label, model.safetensors, optionally preprocessor_config.json).",
    )
    inputs: Literal["raw", "preprocessed"] = Field(
        "raw",
        description="onnx/sklearn: what the teacher is fed: 'raw' samples as in your data (table values as in the "
        "file, pixel values 0-255) or 'preprocessed' (standardised, as the student sees them).",
    )
    trust_pickle: bool = Field(
        False,
        description="sklearn: allow loading a pickle/joblib file. Unpickling runs code from the file: only for "
        "files you trust.",
    )
    trust_remote_code: bool = Field(
        False,
        description="hf: let transformers run the model code the folder ships (a model type transformers does not "
        "know). Off by default: only for folders you trust.",
    )
    trusted_types: list[str] = Field(
        default_factory=list, description="sklearn: extra types a .skops file may load (the error names them)."
    )
    values: Literal["auto", "logits", "probs", "log_probs"] = Field(
        "auto",
        description="onnx/precomputed: what the teacher's outputs are: 'logits' (scores before the softmax), "
        "'probs' (probabilities, turned into log-probabilities) or 'log_probs'. auto: probabilities when every row "
        "of a sample of outputs lies in [0, 1] and sums to 1 (and, for a file, by column name), else logits. A "
        "choice the outputs contradict is an error.",
    )
    output_name: str | None = Field(
        None, description="onnx: the output that holds the class scores (default: the first (batch, classes) float output)."
    )
    members: list["TeacherConfig"] = Field(
        default_factory=list, description="ensemble: the member teachers, each a teacher section of its own."
    )
    weights: list[float] | None = Field(None, description="ensemble: one weight per member (default: equal).")
    combine: Literal["mean_probs", "mean_logits"] = Field(
        "mean_probs", description="ensemble: average the members' probabilities, or their log-probabilities."
    )
    cache: bool = Field(
        True,
        description="Compute the teacher's outputs once and store them on disk (keyed by a fingerprint of "
        "weights, data and preprocessing). Not possible, and said so in the log, when train.augment is used.",
    )
    name: str | None = Field(
        None, description="Human name of the teacher, recorded in the model card (hf: default the folder's name)."
    )
    license: str | None = Field(None, description="Licence of the teacher, recorded in the model card.")

    @model_validator(mode="after")
    def _check_kind(self) -> "TeacherConfig":
        if self.trust_remote_code and self.kind != "hf":
            raise ValueError(f"trust_remote_code applies to kind hf (kind is {self.kind!r})")
        if self.kind == "hf" and self.inputs != "raw":
            raise ValueError("inputs applies to kinds onnx and sklearn; a hf teacher is fed the images as its own "
                             "config and preprocessor_config.json say (drop teacher.inputs)")  # fmt: skip
        if self.kind == "hf" and self.path and self.name is None:
            object.__setattr__(self, "name", Path(self.path).name)  # the model card names the folder
        if self.kind != "torch":
            torch_only = [k for k in ("factory", "checkpoint", "train") if getattr(self, k) is not None]
            if self.params:
                torch_only.append("params")
            if "arch" in self.model_fields_set and self.arch is not None:
                torch_only.append("arch")
            object.__setattr__(self, "arch", None)
            if torch_only:
                raise ValueError(f"{', '.join(torch_only)} only apply to kind 'torch' (kind is {self.kind!r})")
            if self.kind not in ("onnx", "precomputed") and self.values != "auto":
                raise ValueError(f"values applies to kinds onnx and precomputed (kind is {self.kind!r})")
            if self.kind != "onnx" and self.output_name is not None:
                raise ValueError(f"output_name applies to kind onnx (kind is {self.kind!r})")
            if self.kind == "ensemble":
                if not self.members:
                    raise ValueError("kind 'ensemble' needs `members`, a list of teacher sections")
                if self.weights is not None and len(self.weights) != len(self.members):
                    raise ValueError(f"weights has {len(self.weights)} entries for {len(self.members)} members")
                if self.weights is not None and (any(w < 0 for w in self.weights) or sum(self.weights) <= 0):
                    raise ValueError("weights must be non-negative and not all zero")
            elif not self.path:
                what = "folder" if self.kind == "hf" else "file"
                raise ValueError(f"kind {self.kind!r} needs `path`, the {what} of the teacher")
            return self
        if self.path is not None or self.members:
            raise ValueError("`path`/`members` apply to kinds onnx, sklearn, precomputed, ensemble, hf; set `kind`")
        if self.values != "auto" or self.output_name is not None:
            raise ValueError("values/output_name apply to kinds onnx and precomputed; a torch teacher gives logits")
        if self.factory is not None and self.arch is not None and "arch" in self.model_fields_set:
            raise ValueError("give either `arch` or `factory`, not both")
        if self.factory is not None:
            object.__setattr__(self, "arch", None)
            if ":" not in self.factory:
                raise ValueError(f"factory must look like 'package.module:function' (got {self.factory!r})")
        elif self.arch is None:
            raise ValueError("give the teacher an `arch` ('mlp' or 'cnn') or a `factory`")
        else:
            check_builder_params(self.arch, self.params)
        return self
