"""A tiny ImageNet-style classifier quantised the way the ONNX Model Zoo quantised MobileNetV2,
for the ONNX import tests (no download: a random-init timm network built in the test).

The network's batch norms get random running statistics and affine weights, so the conv+BN
fold that the exporter does (and :mod:`embeddings.training.onnx_import` undoes into identity
norms + biases) changes real numbers. Its classifier reads out the top principal directions of
the pooled features of structured images, centred: a random network's logits are otherwise
dominated by one input-independent component (every input gets the same top-1, and the
cosine of two logit vectors says nothing about the import).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SIZE = 64
CLASSES = 10


def structured_images(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """``(n, 3, size, size)`` float32, already normalised (about zero mean, unit spread): a
    colour gradient at a random angle, a disc of another colour, sensor-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        c0, c1 = rng.uniform(-2, 2, 3), rng.uniform(-2, 2, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = np.cos(angle) * xx + np.sin(angle) * yy
        img = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
        cx, cy, r = rng.uniform(0.2, 0.8, 3)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.4 * r) ** 2
        img = np.where(disc, rng.uniform(-2, 2, 3)[:, None, None], img)
        out.append(img + rng.normal(0, 0.3, img.shape))
    return torch.tensor(np.stack(out), dtype=torch.float32)


def randomise_batch_norms(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial eval-mode statistics and affine weights in every BatchNorm2d."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                n = bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                bn.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                bn.bias.copy_(torch.randn(n, generator=g) * 0.1)


def tiny_classifier(arch: str = "mobilenetv2_050", seed: int = 0) -> torch.nn.Module:
    """The float network, in eval mode (see the module docstring for its classifier)."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=CLASSES, pretrained=False)
    randomise_batch_norms(model, seed + 1)
    model.eval()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(calibration_images()), pre_logits=True)
        mean = feats.mean(0)
        _, sv, vt = torch.linalg.svd(feats - mean, full_matrices=False)
        weight = vt[:CLASSES] / (sv[:CLASSES, None] / (len(feats) - 1) ** 0.5)
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(-weight @ mean)
    return model


def calibration_images() -> torch.Tensor:
    return structured_images(64, seed=1)


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    """Float ONNX (opset 13, batch dimension dynamic). The legacy TorchScript exporter folds
    each eval-mode BatchNorm into the conv before it, as the Model Zoo's graphs have it."""
    with warnings.catch_warnings():
        # dynamo=False: the deprecated TorchScript exporter, because the torch.export one needs
        # onnxscript (not a dependency); this one folds every eval-mode batch norm into its conv.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(path),
            opset_version=13,
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def quantise(float_path: Path, out: Path) -> Path:
    """Static int8 quantisation as the Model Zoo's MobileNetV2-12-int8: QOperator format
    (QLinearConv ...), per-channel int8 weights, uint8 activations, calibrated on 64 images."""
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    onnxruntime.set_default_logger_severity(3)  # not a warning per unused initializer

    batches = [{"input": b.numpy()} for b in calibration_images().split(16)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        str(float_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QOperator,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


class ZooClassifierLayout(torch.nn.Module):
    """The same network with its classifier written as MatMul + Add, which quantises to the
    Model Zoo's ``QLinearMatMul`` + ``QLinearAdd`` (newer quantisers turn a Gemm into QGemm)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        feats = m.forward_head(m.forward_features(x), pre_logits=True)
        return torch.matmul(feats, m.classifier.weight.t()) + m.classifier.bias


@dataclass
class TinyOnnx:
    model: torch.nn.Module  # the float original, eval mode
    float_path: Path
    quant_path: Path


def build_tiny_onnx(folder: Path, arch: str = "mobilenetv2_050") -> TinyOnnx:
    """The float network, its float ONNX export and the int8 quantised ONNX, under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_classifier(arch)
    float_path = export_onnx(model, folder / f"{arch}.onnx")
    quant_path = quantise(float_path, folder / f"{arch}-int8.onnx")
    return TinyOnnx(model, float_path, quant_path)
