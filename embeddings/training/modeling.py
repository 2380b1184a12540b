"""Creating the open_clip model to train, and optional initialisations from MiniLM.

``init`` selects the starting weights: ``random``, a pretrained tag of the model (as
``open_clip.list_pretrained()`` lists), or a checkpoint path (whose ``<path>.json`` sidecar, if
present, supplies the config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from embeddings.encoder import (
    config_path_for_checkpoint,
    register_config_file,
    register_model_config,
)


class TrainingSetupError(RuntimeError):
    """The model or data cannot be set up as asked; the message says what to do."""


def resolve_model_config(model_name: str, model_config: str | None, init: str) -> dict[str, Any]:
    """Registers and returns the open_clip config for ``model_name``.

    Order: an explicit ``--model-config`` JSON file; the sidecar of an ``--init`` checkpoint; a
    config already known to open_clip (built-in or registered from embeddings/starter).
    """
    from open_clip import factory

    from embeddings.encoder import register_builtin_configs

    if model_config:
        path = Path(model_config)
        if not path.is_file():
            raise TrainingSetupError(
                f"--model-config {path} does not exist; pass an open_clip config JSON."
            )
        register_config_file(path, name=model_name)
    elif (
        init not in ("random", "")
        and os.path.isfile(init)
        and config_path_for_checkpoint(init).is_file()
    ):
        register_config_file(config_path_for_checkpoint(init), name=model_name)
    else:
        register_builtin_configs()
    cfg = factory.get_model_config(model_name)
    if cfg is None:
        raise TrainingSetupError(
            f"Unknown model {model_name!r}: pass --model-config CONFIG.json (an open_clip model config) "
            "or use a name from open_clip.list_models()."
        )
    return cfg


def raw_model_config(model_name: str, model_config: str | None, init: str) -> dict[str, Any]:
    """The config as written on disk (placeholders such as ``${MINILM}`` kept) for the sidecar."""
    if model_config:
        with open(model_config) as fh:
            cfg = json.load(fh)
        return cfg["model_cfg"] if "model_cfg" in cfg else cfg
    if (
        init not in ("random", "")
        and os.path.isfile(init)
        and config_path_for_checkpoint(init).is_file()
    ):
        with config_path_for_checkpoint(init).open() as fh:
            cfg = json.load(fh)
        return cfg["model_cfg"] if "model_cfg" in cfg else cfg
    from embeddings.encoder import STARTER_DIR

    starter = STARTER_DIR / f"{model_name}.json"
    if starter.is_file():
        with starter.open() as fh:
            return json.load(fh)
    from open_clip import factory

    return factory.get_model_config(model_name)


def create_model(model_name: str, init: str, device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) for the registered ``model_name`` with ``init`` weights."""
    import open_clip

    if init in ("random", ""):
        pretrained = None
    elif os.path.sep in init or init.endswith((".pt", ".bin", ".safetensors")):
        if not os.path.isfile(init):
            raise TrainingSetupError(
                f"--init checkpoint {init} does not exist; pass a .pt file, a tag, or 'random'."
            )
        pretrained = init
    else:
        pretrained = init
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
    except RuntimeError as exc:
        raise TrainingSetupError(
            f"Could not create {model_name!r} with init {init!r}: {exc}. Use --init random, a tag from "
            f"open_clip.list_pretrained() for this model, or a checkpoint written by train_model."
        ) from exc
    tokenizer = open_clip.get_tokenizer(model_name)
    return model, tokenizer


def init_token_embeddings_from_minilm(model: torch.nn.Module) -> bool:
    """Initialises a native text tower's token embeddings from MiniLM's, projected by PCA.

    Gives words MiniLM already relates (e.g. 'tee' and 'tshirt') related starting vectors, which
    helps rare shopper words the catalog captions never teach. Only applies when the tower's
    vocabulary is MiniLM's (30522 WordPiece ids); returns whether it did anything.
    """
    text = getattr(model, "transformer", None)
    emb = getattr(model, "token_embedding", None)
    if emb is None and hasattr(model, "text"):
        emb = getattr(model.text, "token_embedding", None)
    if emb is None or text is None and not hasattr(model, "text"):
        return False
    from safetensors.torch import load_file

    from embeddings.encoder import minilm_path

    weights = load_file(str(Path(minilm_path()) / "model.safetensors"))
    key = next((k for k in weights if k.endswith("word_embeddings.weight")), None)
    if key is None:
        return False
    src = weights[key].float()
    if src.shape[0] != emb.weight.shape[0]:
        return False
    width = emb.weight.shape[1]
    centred = src - src.mean(0, keepdim=True)
    # PCA to the tower's width keeps most of the geometry that relates words.
    _, _, v = torch.linalg.svd(centred[:: max(1, src.shape[0] // 8000)], full_matrices=False)
    proj = centred @ v[:width].T
    proj = proj / proj.std() * 0.02  # match open_clip's init scale
    with torch.no_grad():
        emb.weight.copy_(proj)
    return True


def parameter_count(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def register_inline_config(model_name: str, config: dict[str, Any]) -> None:
    """Registers a config dict (used by tests and by scripts that build configs in code)."""
    register_model_config(model_name, config)
