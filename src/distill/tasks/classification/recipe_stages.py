"""The classification recipe's sections for what comes after training: compression (pruning, int8) and export
(formats, parity thresholds)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.recipe.base import Section


class PruneConfig(Section):
    kind: Literal["none", "magnitude", "structured"] = Field(
        "none",
        description="'structured' removes whole neurons/channels (layers really shrink: faster); 'magnitude' "
        "zeroes the smallest weights globally (smaller only once compressed; no faster); 'none'.",
    )
    amount: float = Field(0.5, ge=0, lt=1, description="Share of units (structured) or weights (magnitude) to remove.")
    criterion: Literal["auto", "l1", "l2", "bn"] = Field(
        "auto", description="structured: how units are ranked (auto: BatchNorm scale where there is one, else L1)."
    )
    recovery_epochs: int = Field(
        3, ge=0, description="Epochs of distillation (the recipe's `distill` objective) after pruning, to recover."
    )
    recovery_lr: float | None = Field(None, gt=0, description="Peak learning rate of the recovery (default: train's / 3).")


class QuantizeConfig(Section):
    kind: Literal["none", "dynamic", "static", "sensitivity"] = Field(
        "none",
        description="int8 in PyTorch: 'dynamic' (Linear weights), 'static' (weights and activations, calibrated; "
        "for CNN students), 'sensitivity' (dynamic, keeping the layers that move the output most in float until "
        "quality_bound holds), or 'none'.",
    )
    per_channel: bool = Field(True, description="Per-channel weight scales (more accurate than per-tensor).")
    calibration_size: int = Field(512, gt=0, description="Training samples used to calibrate (static, ONNX static).")
    calibration_method: Literal["minmax", "histogram"] = Field(
        "minmax", description="static: how activation ranges are observed."
    )
    quality_bound: float = Field(
        0.999, gt=0, le=1, description="sensitivity: least cosine similarity of outputs to the float model."
    )


class CompressConfig(Section):
    prune: PruneConfig = Field(default_factory=PruneConfig, description="Pruning, then a short recovery distillation.")
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig, description="int8 quantization in PyTorch.")


class ParityConfig(Section):
    atol: float = Field(1e-4, gt=0, description="Largest allowed |ONNX − PyTorch| of any output (fp32 export).")
    min_argmax_agreement: float = Field(
        0.999, gt=0, le=1, description="Least share of inputs whose predicted class is the same in both."
    )
    int8_min_argmax_agreement: float = Field(
        0.98, gt=0, le=1, description="The same for the int8 ONNX file against the float PyTorch model."
    )
    samples: int = Field(1000, gt=0, description="Test samples the parity checks run on.")


class ExportConfig(Section):
    formats: list[Literal["onnx", "torch", "hf"]] = Field(
        default_factory=lambda: ["onnx", "torch"],
        description="onnx (dynamic batch axis, parity-checked), torch (safetensors + config.json that rebuilds "
        "the model), hf (save_pretrained; Hugging Face models only).",
    )
    onnx_int8: bool = Field(True, description="Also write an int8 ONNX file with ONNX Runtime's quantizer.")
    onnx_int8_static: bool = Field(
        False, description="Static (calibrated activations) instead of dynamic int8 for the ONNX file."
    )
    onnx_int8_per_channel: bool = Field(
        True, description="Per-channel weight scales in the int8 ONNX file (per-tensor: one op less per layer at "
        "batch 1; see benchmarks/results/int8_variants.md)."
    )
    opset: int = Field(17, ge=11, description="ONNX opset.")
    parity: ParityConfig = Field(default_factory=ParityConfig, description="Thresholds of the parity checks.")
