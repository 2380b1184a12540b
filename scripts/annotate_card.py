"""Merge fields into a model card JSON (design notes, probe results measured by other scripts).

    .venv/bin/python scripts/annotate_card.py embeddings/starter/shopclip-starter.card.json \
        text_tower=@/tmp/text_tower.json note="..."

``key=@file.json`` reads a JSON value from a file; ``key=value`` stores the string.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embeddings.training.checkpoint import update_card  # noqa: E402


def main(argv: list[str]) -> None:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        raise SystemExit("usage: annotate_card.py CARD.json key=value|key=@file.json ...")
    fields = {}
    for arg in argv[1:]:
        key, value = arg.split("=", 1)
        fields[key] = json.loads(Path(value[1:]).read_text()) if value.startswith("@") else value
    update_card(argv[0], **fields)
    print(f"updated {argv[0]}: {', '.join(fields)}")


if __name__ == "__main__":
    main(sys.argv[1:])
