"""MiniLM sentence embeddings as a distillation teacher for a small text tower.

The shipped text tower is small (the full MiniLM does not fit the checkpoint budget), so its
knowledge of words the catalog never uses ("sneakers", "tee") comes from matching MiniLM's
sentence embeddings, through a throw-away linear head, on the captions and on MiniLM's own
whole-word vocabulary. Embeddings are computed once and cached under /tmp.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from embeddings.encoder import minilm_path


def minilm_vocabulary_words(min_len: int = 3) -> list[str]:
    """Whole alphabetic words of MiniLM's WordPiece vocabulary (no '##' pieces, no specials)."""
    vocab = Path(minilm_path()) / "vocab.txt"
    words = []
    for line in vocab.read_text(encoding="utf-8").splitlines():
        w = line.strip()
        if len(w) >= min_len and w.isascii() and w.isalpha():
            words.append(w)
    return words


def minilm_embed(
    texts: Sequence[str], *, batch_size: int = 256, cache_dir: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """L2-normalised MiniLM mean-pooled sentence embeddings, ``(len(texts), 384)`` float16."""
    cache_file: Path | None = None
    if cache_dir is None:
        cache_dir = Path(tempfile.gettempdir()) / "shopsearch-teacher-cache"
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:20]
    cache_file = cache_dir / f"minilm-{len(texts)}-{key}.npy"
    if cache_file.is_file():
        return np.load(cache_file)
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModel.from_pretrained(minilm_path()).eval()
    # Sorting by length keeps padding (wasted CPU) small.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float16)
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="MiniLM teacher", unit="batch"):
            idx = order[start : start + batch_size]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=48,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[idx] = pooled.numpy().astype(np.float16)
    fd, tmp = tempfile.mkstemp(prefix=cache_file.name, suffix=".tmp", dir=cache_dir)
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, out)
    os.replace(tmp, cache_file)
    return out
