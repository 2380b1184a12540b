#!/usr/bin/env python
"""The one summary table of `make bench`: every section's figures side by side, 100k and 1M
products, with the targets of the scale issue. Reads the JSON each benchmark script wrote under
var/bench/ (results-index.json, results-engine.json, results-lexical.json, results-e2e.json);
a section whose script did not run is left out, and a size that was not measured shows "-".

    python scripts/bench_report.py [--nprobe 32] [--markdown var/bench/report.md]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "var" / "bench"


def load(name: str):
    path = BENCH / name
    return json.loads(path.read_text()) if path.is_file() else None


def ms(x) -> str:
    return "-" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.0f}")


def rec(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def filter_kind(name: str) -> str:
    if name == "none":
        return "no filter"
    if name.startswith("price"):
        return "price band (10%)"
    share = float(re.search(r"\(([\d.]+)%\)", name).group(1))
    return "common category (~16%)" if share > 1 else "rare category (~0.1%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nprobe", type=int, default=64, help="the ivf rows shown")
    parser.add_argument("--markdown", type=Path, default=BENCH / "report.md")
    args = parser.parse_args()
    sizes = [100_000, 1_000_000]
    rows: list[tuple[str, str, dict[int, str], str]] = []  # section, measure, by size, target
    loads: list[str] = []

    index = load("results-index.json")
    if index:
        grouped: dict[tuple[str, str], dict[int, str]] = {}
        for r in index["rows"]:
            cell = (
                f"p50 {ms(r.get('p50_ms'))} / p99 {ms(r.get('p99_ms'))} ms, recall text "
                f"{rec(r.get('recall_text'))} image {rec(r.get('recall_image'))}, "
                f"{r['bytes_per_vector']:.0f} B/vec"
                if r.get("p50_ms") is not None
                else (r.get("note") or "not measured")
            )
            grouped.setdefault((r["approach"], r["params"]), {})[int(r["n"])] = cell
        for (approach, params), cells in grouped.items():
            rows.append(("index only (k=100, one thread)", f"{approach}: {params}", cells, ""))
        meta = index.get("meta", {})
        if meta.get("loadavg_start"):
            loads.append(f"index {meta['loadavg_start'][0]:.2f}->{meta['loadavg_end'][0]:.2f}")

    engine = load("results-engine.json")
    if engine:
        cells: dict[tuple[str, str], dict[int, dict[str, dict]]] = {}
        for r in engine["rows"]:
            if r["kind"] == "ivf" and r["nprobe"] != args.nprobe:
                continue
            key = (
                f"{r['kind']}" + (f" nprobe {r['nprobe']}" if r["nprobe"] else ""),
                filter_kind(r["filter"]),
            )
            cells.setdefault(key, {}).setdefault(r["n"], {})[r["queries"]] = r
        for (kind, fname), by_size in cells.items():
            out = {}
            for n, q in by_size.items():
                t, i = q.get("text", {}), q.get("image", {})
                out[n] = (
                    f"recall@10 text {rec(t.get('recall_at_10'))} image {rec(i.get('recall_at_10'))}, "
                    f"p50 {ms(t.get('p50_ms'))} ms"
                )
            target = "recall >= 0.95" if fname != "no filter" else ""
            rows.append(
                ("engine: filtered top-10 vs exact filtered", f"{kind}, {fname}", out, target)
            )
        meta = engine.get("meta", {})
        if meta.get("loadavg_start"):
            loads.append(f"engine {meta['loadavg_start'][0]:.2f}->{meta['loadavg_end'][0]:.2f}")

    lexical = load("results-lexical.json")
    if lexical:
        p10 = {int(n): f"{v['colour_type_p10']:.3f}" for n, v in lexical.items()}
        lat = {
            int(n): f"p50 {ms(v['colour_type_p50_ms'])} / p99 {ms(v['colour_type_p99_ms'])} ms"
            for n, v in lexical.items()
        }
        build = {int(n): f"{v['build_s']:.0f} s, {v['size_mb']:.0f} MB" for n, v in lexical.items()}
        rows.append(("full-text (tantivy)", '"colour type" P@10', p10, ">= 0.60"))
        rows.append(("full-text (tantivy)", '"colour type" word search latency', lat, ""))
        rows.append(("full-text (tantivy)", "index build, size on disk", build, ""))

    e2e = load("results-e2e.json")
    if e2e:
        ordered: dict[str, dict[int, str]] = {}
        targets: dict[str, str] = {}
        for size in e2e.get("sizes", []):
            for r in size.get("rows", []):
                measure = re.sub(r"\s*\((category=[^)]*)\)", "", r["metric"])
                measure = re.sub(r"[\d,]+ products, \S+", "", measure).strip()
                ordered.setdefault(measure, {})[int(size["size"])] = r["value"] + (
                    f" ({r['note']})" if r.get("note") else ""
                )
                targets[measure] = r.get("target", "")
        for measure, cells in ordered.items():
            rows.append(("end to end (gunicorn + PostgreSQL)", measure, cells, targets[measure]))
        if e2e.get("loadavg_start"):
            loads.append(f"end to end {e2e['loadavg_start'][0]:.2f}->{e2e['loadavg_end'][0]:.2f}")

    lines = [
        "| section | measure | 100k | 1M | target (1M) |",
        "|---|---|---|---|---|",
    ]
    for section, measure, cells, target in rows:
        lines.append(
            f"| {section} | {measure} | "
            + " | ".join(cells.get(n, "-") for n in sizes)
            + f" | {target} |"
        )
    text = "\n".join(lines)
    footer = f"\nLoad average (1 min) at start -> end of each part: {'; '.join(loads) or 'n/a'}"
    print(text + footer)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text + "\n" + footer + "\n")


if __name__ == "__main__":
    main()
