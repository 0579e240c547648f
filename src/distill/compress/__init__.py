"""Compression of a trained model: pruning (unstructured, structured) and int8 quantization.

Every function returns a new model (or writes a new file); the input is never
changed. See ``prune.py`` and ``quantize.py``.
"""


from __future__ import annotations

from distill.compress.heads import attention_blocks, head_counts, prune_heads
from distill.compress.prune import (
    count_nonzero_parameters,
    magnitude_prune,
    pruned_params,
    sparsity,
    structured_prune,
)
from distill.compress.quantize import dynamic_int8, onnx_int8, static_int8
from distill.compress.sensitivity import SensitivityReport, cosine_similarity, sensitivity_int8

__all__ = [
    "attention_blocks",
    "head_counts",
    "prune_heads",
    "SensitivityReport",
    "cosine_similarity",
    "count_nonzero_parameters",
    "dynamic_int8",
    "magnitude_prune",
    "onnx_int8",
    "pruned_params",
    "sensitivity_int8",
    "sparsity",
    "static_int8",
    "structured_prune",
]
