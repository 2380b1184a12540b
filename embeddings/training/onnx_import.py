"""Pretrained image backbones from quantised ONNX files, as open_clip timm towers.

The ONNX Model Zoo ships ImageNet classifiers (e.g. ``mobilenetv2-12-int8.onnx``) as int8
graphs: every convolution is a ``QLinearConv`` whose weight is ``(q - zero_point) * scale``
(per output channel), whose int32 bias dequantises with ``input scale * weight scale``, and
whose batch norm is already folded in. This module reads those weights back to float and
loads them, convolution by convolution in graph order, into the timm model of the same
architecture (``mobilenetv2_100`` for MobileNetV2), whose batch norms are set to the identity
plus the folded bias. The result is an ordinary float PyTorch tower: open_clip builds it from
a registered config (``vision_cfg.timm_model_name``) and ``train_model --image-init FILE``
starts from it.

Normalisation: the ONNX model expects ImageNet mean/std, open_clip's default preprocessing
(what ``create_model_and_transforms(name, pretrained=path)`` gives a registered config) uses
OpenAI's. :func:`fold_input_normalisation` rescales the stem convolution so the tower fed
OpenAI-normalised pixels computes what the ONNX model computes on ImageNet-normalised ones
(exact except in the one-pixel padding border).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from open_clip.constants import IMAGENET_MEAN, IMAGENET_STD
from open_clip.constants import OPENAI_DATASET_MEAN as OPENAI_MEAN
from open_clip.constants import OPENAI_DATASET_STD as OPENAI_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "OPENAI_MEAN", "OPENAI_STD"]


class ImageInitError(ValueError):
    """The backbone file cannot be loaded into the model as asked; the message says why."""


@dataclass
class QuantizedWeights:
    """Float weights read back from a quantised ONNX classifier, in graph order."""

    convs: list[tuple[np.ndarray, np.ndarray | None]]  # (weight OIHW, bias or None)
    classifier: tuple[np.ndarray, np.ndarray] | None  # (weight [classes, features], bias)


def _dequant(inits: dict[str, np.ndarray], name: str) -> np.ndarray:
    """``(q - zero_point) * scale`` for initializer ``<base>_quantized``; a vector scale is per
    output channel (axis 0 of a conv weight, the last axis of a MatMul weight)."""
    base = name[: -len("_quantized")] if name.endswith("_quantized") else name
    q = inits[name].astype(np.float64)
    scale = inits[f"{base}_scale"].astype(np.float64)
    zero = inits[f"{base}_zero_point"].astype(np.float64)
    if scale.ndim == 1 and scale.size > 1:
        if q.shape[0] == scale.size:
            shape = (-1,) + (1,) * (q.ndim - 1)
        elif q.shape[-1] == scale.size:
            shape = (1,) * (q.ndim - 1) + (-1,)
        else:
            raise ImageInitError(f"{name}: {scale.size} scales for a weight of shape {q.shape}")
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def read_quantized_onnx(path: str | os.PathLike[str]) -> QuantizedWeights:
    """Every ``QLinearConv``'s float weight and bias, and the final ``QLinearMatMul`` (+ the
    ``QLinearAdd`` bias after it, if any; the Model Zoo's layout) or ``QGemm`` (what newer
    onnxruntime quantisers emit) as the classifier."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - onnx is a dependency
        raise ImageInitError("Reading ONNX files needs the onnx package: pip install onnx") from exc
    path = Path(path)
    if not path.is_file():
        raise ImageInitError(f"{path} does not exist; pass an .onnx file or a state-dict .pt.")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise ImageInitError(f"{path} is not a readable ONNX model: {exc}") from exc
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    # torch's exporter shares equal initializers (e.g. the all-zero biases of a fresh network)
    # behind Identity nodes, and small tensors can be Constant nodes: resolve both by name.
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                inits[node.output[0]] = numpy_helper.to_array(value.t)
        elif node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    convs: list[tuple[np.ndarray, np.ndarray | None]] = []
    classifier = None
    for k, node in enumerate(graph.node):
        if node.op_type == "QLinearConv":
            x_scale, w_name = node.input[1], node.input[3]
            if w_name not in inits:
                raise ImageInitError(f"{path}: QLinearConv weight {w_name} is not an initializer.")
            weight = _dequant(inits, w_name)
            bias = None
            if len(node.input) > 8 and node.input[8]:
                w_scale = inits[node.input[4]].astype(np.float64).reshape(-1)
                in_scale = float(inits[x_scale])
                bias = (inits[node.input[8]].astype(np.float64) * in_scale * w_scale).astype(
                    np.float32
                )
            convs.append((weight, bias))
        elif node.op_type == "Conv":
            weight = inits[node.input[1]].astype(np.float32)
            bias = inits[node.input[2]].astype(np.float32) if len(node.input) > 2 else None
            convs.append((weight, bias))
        elif node.op_type in ("QLinearMatMul", "MatMul", "Gemm", "QGemm"):
            quantised = node.op_type in ("QLinearMatMul", "QGemm")
            w_name = node.input[3] if quantised else node.input[1]
            if w_name not in inits:
                continue
            weight = _dequant(inits, w_name) if w_name.endswith("_quantized") else inits[w_name]
            weight = np.array(weight, np.float32)  # a copy: initializer arrays are read-only
            bias = np.zeros(weight.shape[1], np.float32)
            if node.op_type in ("Gemm", "QGemm"):
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                weight = weight if trans_b else weight.T
                b_at = 6 if node.op_type == "QGemm" else 2
                if len(node.input) > b_at and node.input[b_at] in inits:
                    bias = inits[node.input[b_at]].astype(np.float64).reshape(-1)
                    if node.op_type == "QGemm":
                        # onnxruntime's QGemm (what its quantiser now emits for a Linear): int32
                        # bias at scale alpha * A scale * B scale (per output channel), zero 0.
                        alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
                        w_scale = inits[node.input[4]].astype(np.float64).reshape(-1)
                        bias = bias * alpha * float(inits[node.input[1]]) * w_scale
                    bias = bias.astype(np.float32)
                else:
                    bias = np.zeros(weight.shape[0], np.float32)
                classifier = (weight, bias)
                continue
            weight = weight.T  # MatMul: x @ W with W [features, classes]
            bias = np.zeros(weight.shape[0], np.float32)
            for nxt in graph.node[k + 1 :]:
                if nxt.op_type in ("QLinearAdd", "Add") and node.output[0] in nxt.input:
                    b_name = nxt.input[3] if nxt.op_type == "QLinearAdd" else nxt.input[1]
                    if b_name in inits:
                        bias = (
                            _dequant(inits, b_name)
                            if b_name.endswith("_quantized")
                            else inits[b_name].astype(np.float32)
                        ).reshape(-1)
                    break
            classifier = (weight, bias)
    if not convs:
        raise ImageInitError(f"{path} has no convolutions (QLinearConv or Conv) to import.")
    return QuantizedWeights(convs, classifier)


def _conv_bn_pairs(trunk: torch.nn.Module) -> list[tuple[torch.nn.Conv2d, torch.nn.Module | None]]:
    """The trunk's convolutions in forward order, each with the batch norm that follows it (or
    None). timm's MobileNet/EfficientNet blocks register each conv right before its norm."""
    pairs: list[tuple[torch.nn.Conv2d, torch.nn.Module | None]] = []
    for module in trunk.modules():
        if isinstance(module, torch.nn.Conv2d):
            pairs.append((module, None))
        elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and pairs:
            conv, bn = pairs[-1]
            if bn is None and conv.out_channels == module.num_features:
                pairs[-1] = (conv, module)
    return pairs


@torch.no_grad()
def load_onnx_into_trunk(trunk: torch.nn.Module, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Loads the ONNX file's convolutions into ``trunk`` (a timm model) in forward order, each
    conv's batch norm becoming ``x + folded_bias``, and the classifier when both have one.
    Raises ImageInitError naming the first mismatch when the architectures differ."""
    weights = read_quantized_onnx(path)
    pairs = _conv_bn_pairs(trunk)
    if len(pairs) != len(weights.convs):
        raise ImageInitError(
            f"{path} has {len(weights.convs)} convolutions but the {type(trunk).__name__} tower "
            f"has {len(pairs)}: pick the timm model of the same architecture "
            "(mobilenetv2_100 for the Model Zoo's MobileNetV2)."
        )
    for i, ((conv, bn), (w, b)) in enumerate(zip(pairs, weights.convs, strict=True)):
        if tuple(conv.weight.shape) != w.shape:
            raise ImageInitError(
                f"convolution {i} of {path} has shape {w.shape}, the tower's has "
                f"{tuple(conv.weight.shape)}: the architectures differ."
            )
        conv.weight.copy_(torch.from_numpy(w))
        bias = torch.from_numpy(b) if b is not None else torch.zeros(w.shape[0])
        if conv.bias is not None:
            conv.bias.copy_(bias)
            if bn is not None:
                _identity_bn(bn, torch.zeros_like(bias))
        elif bn is not None:
            _identity_bn(bn, bias)
        elif b is not None and np.abs(b).max() > 0:
            raise ImageInitError(
                f"convolution {i} of {path} has a bias but the tower's has neither a bias nor a "
                "batch norm to carry it."
            )
    classifier_loaded = False
    head = getattr(trunk, "classifier", None)
    if (
        weights.classifier is not None
        and isinstance(head, torch.nn.Linear)
        and tuple(head.weight.shape) == weights.classifier[0].shape
    ):
        head.weight.copy_(torch.from_numpy(weights.classifier[0]))
        head.bias.copy_(torch.from_numpy(weights.classifier[1]))
        classifier_loaded = True
    return {
        "source": str(path),
        "convolutions": len(pairs),
        "classifier_loaded": classifier_loaded,
        "classes": int(weights.classifier[0].shape[0]) if weights.classifier else 0,
    }


def _identity_bn(bn: torch.nn.Module, bias: torch.Tensor) -> None:
    """Batch norm as ``x + bias`` in eval mode (the ONNX graph folded the real one into the
    conv). Training mode would renormalise by batch statistics, so fine-tuning keeps trunks
    with imported weights in eval mode or frozen."""
    eps = float(getattr(bn, "eps", 1e-5))
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - eps)
    if bn.weight is not None:
        bn.weight.fill_(1.0)
    if bn.bias is not None:
        bn.bias.copy_(bias)


@torch.no_grad()
def fold_input_normalisation(
    trunk: torch.nn.Module,
    *,
    source_mean=IMAGENET_MEAN,
    source_std=IMAGENET_STD,
    target_mean=OPENAI_MEAN,
    target_std=OPENAI_STD,
) -> None:
    """Rescales the stem convolution (and its bias or batch norm) so input normalised with
    ``target_mean/std`` gives the outputs ``source_mean/std`` input gave."""
    conv, bn = _conv_bn_pairs(trunk)[0]
    s_t = torch.tensor(target_std, dtype=conv.weight.dtype)
    s_s = torch.tensor(source_std, dtype=conv.weight.dtype)
    m_t = torch.tensor(target_mean, dtype=conv.weight.dtype)
    m_s = torch.tensor(source_mean, dtype=conv.weight.dtype)
    # x_source = x_target * a + c, per input channel
    a = s_t / s_s
    c = (m_t - m_s) / s_s
    shift = (conv.weight * c.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    conv.weight.mul_(a.view(1, -1, 1, 1))
    if conv.bias is not None:
        conv.bias.add_(shift)
    elif bn is not None:
        # bn(x) = (x - mean) / sqrt(var + eps) * w + b: a constant shift of x moves the mean.
        bn.running_mean.sub_(shift)
    else:
        raise ImageInitError("the stem convolution has no bias or batch norm to fold into")


def init_image_tower(
    model: torch.nn.Module, source: str | os.PathLike[str], *, fold_normalisation: bool = True
) -> dict[str, Any]:
    """Loads pretrained weights into ``model.visual.trunk`` (an open_clip timm tower) from an
    ONNX classifier or a PyTorch state dict (timm keys, or ``visual.trunk.``-prefixed ones).
    Returns what was loaded, for the model card."""
    visual = getattr(model, "visual", None)
    trunk = getattr(visual, "trunk", None)
    if trunk is None:
        raise ImageInitError(
            "--image-init needs a timm image tower (vision_cfg.timm_model_name in the model "
            f"config); this model's image tower is {type(visual).__name__}."
        )
    path = Path(source)
    if not path.is_file():
        raise ImageInitError(f"--image-init {path} does not exist; pass an .onnx or .pt file.")
    if path.suffix.lower() == ".onnx":
        report = load_onnx_into_trunk(trunk, path)
        # The ONNX graph expects ImageNet normalisation; open_clip feeds its own.
        if fold_normalisation:
            fold_input_normalisation(trunk)
        report["normalisation"] = (
            "ImageNet mean/std folded into the stem conv for open_clip's OpenAI normalisation"
            if fold_normalisation
            else "unchanged"
        )
        return report
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ImageInitError(
            f"{path} is neither an ONNX model nor a torch state dict: {exc}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    prefix = "visual.trunk."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = trunk.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.startswith("classifier")]
    if missing:
        raise ImageInitError(
            f"{path} lacks {len(missing)} of the tower's weights (e.g. {missing[:3]}): it was "
            "saved from another architecture."
        )
    trunk.load_state_dict(usable, strict=False)
    return {"source": str(path), "tensors": len(usable), "normalisation": "as saved"}
