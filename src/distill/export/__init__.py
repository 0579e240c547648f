"""Shipping a model: ONNX (with a parity check against PyTorch), a self-describing
safetensors folder, and Hugging Face ``save_pretrained``. See ``onnx.py`` and
``torch_format.py``.
"""


from __future__ import annotations

from distill.export.onnx import OrtRunner, ParityReport, check_onnx_parity, export_onnx, onnx_session, run_onnx
from distill.export.torch_format import load_torch, save_hf, save_torch

__all__ = [
    "OrtRunner",
    "ParityReport",
    "check_onnx_parity",
    "export_onnx",
    "load_torch",
    "onnx_session",
    "run_onnx",
    "save_hf",
    "save_torch",
]
