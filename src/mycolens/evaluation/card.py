"""The model card (reports/model_card.md): figures, intended use, the "not advice" warning, look-alike warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mycolens.catalogue import Catalogue
from mycolens.utils.io import write_bytes_atomic

WARNING = (
    "> **Not advice. Never eat a wild mushroom because this model (or any app) says it is edible.** "
    "It is a research demonstration; look-alikes can be deadly and photos cannot show spore prints, smell, "
    "texture or habitat. Have every find identified in person by an expert (a mycological society or pharmacist)."
)
COLUMNS = (
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro F1", "{:.3f}"),
    ("ece_uncalibrated", "ECE before T", "{:.3f}"),
    ("ece", "ECE after T", "{:.3f}"),
    ("unsafe_edible_rate", "unsafe edible rate", "{:.4f}"),
    ("poison_cost", "poison cost", "{:.3f}"),
    ("abstain_rate", "abstain rate", "{:.3f}"),
    ("ood_abstain_rate", "OOD abstain rate", "{:.3f}"),
    ("ood_abstain_rate_min", "worst OOD set abstain", "{:.3f}"),
    ("ood_edible", "OOD called edible", "{:d}"),
    ("aurc", "AURC", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("flops", "FLOPs", "{:,}"),
    ("file_bytes", "file bytes", "{:,}"),
)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def lookalike_pairs(catalogue: Catalogue) -> list[tuple[str, str]]:
    """Each look-alike pair once, in catalogue order."""
    seen: set[frozenset[str]] = set()
    pairs = []
    for s in catalogue.species:
        for other in s.lookalikes:
            key = frozenset((s.id, other))
            if key not in seen:
                seen.add(key)
                pairs.append((s.id, other))
    return pairs


def render_model_card(catalogue: Catalogue, metrics: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    """Markdown text of the model card from metrics.json's content (and model.json when the served model is ONNX)."""
    meta = meta or {}
    served = metrics.get("served", "")
    variants: dict[str, dict[str, Any]] = metrics.get("variants", {})
    gate = metrics.get("safety_gate", {})
    title = f"{meta.get('name', 'mycolens')} {meta.get('version', '')}".strip()
    latency_keys = sorted(
        {k for v in variants.values() for k in v if k.startswith("latency_ms_batch")},
        key=lambda k: int(k.rsplit("batch", 1)[1]),
    )
    lines = [
        f"# Model card: {title}",
        "",
        WARNING,
        "",
        "## Intended use",
        "",
        "- Demonstrating an end-to-end, safety-first image classifier: species, edibility and a conservative verdict",
        "  (`edible`, `do_not_eat`, `uncertain`) with its look-alikes, for teaching and research.",
        "- Not for deciding what to eat, not for medical use, not for species outside the catalogue below.",
        "- The verdict abstains (`uncertain`) when the model is unsure or the photo looks unlike its training data;",
        "  treat `uncertain` and `do_not_eat` alike: do not eat.",
        "",
        "## Model",
        "",
    ]
    src = meta.get("source", {})
    pre, ood = meta.get("preprocessing", {}), meta.get("ood", {})
    if meta:
        lines += [
            f"- Source checkpoint: `{src.get('ckpt')}` (backbone `{src.get('backbone')}`, {_fmt(src.get('params'), '{:,}')} parameters, "
            f"{_fmt(src.get('flops'), '{:,}')} FLOPs per image; FLOPs = 2 x multiply-accumulates)",
            f"- Input: {pre.get('image_size')} x {pre.get('image_size')} RGB, {pre.get('resize')}, scaled to 0-1, "
            f"normalised with mean {pre.get('mean')} and std {pre.get('std')}",
            "- Files: " + ", ".join(f"`{f['path']}` ({f['bytes']:,} bytes)" for f in meta.get("files", {}).values()),
            f"- int8: ONNX Runtime static quantization {meta.get('quantization', {})}",
            f"- Temperature (fitted on validation): {meta.get('temperature', 0):.3f}; OOD score: "
            f"{ood.get('score', 'energy')}, threshold {ood.get('threshold', 0):.3f} "
            f"(keeps {ood.get('keep_in_distribution', 0):.0%} of validation images)",
        ]
        feat = ood.get("feature") or {}
        if feat:
            lines.append(
                f"- Feature score (an output of the graph): {feat.get('score')}, threshold {feat.get('threshold', 0):.4f} "
                f"(keeps {ood.get('keep_in_distribution', 0):.0%} of validation images)"
            )
        checks = (meta.get("verdict") or {}).get("input_checks") or []
        if checks:
            lines.append(
                "- Photo checks (graph output `input_stats`; bounds keep "
                f"{(ood.get('input_checks') or {}).get('keep', 0):.1%} of training photos each): "
                + "; ".join(
                    f"{c['name']} {'>=' if c['bound'] == 'min' else '<='} {c['threshold']:.4g} ({c['reason']})"
                    for c in checks
                )
            )
        if ood.get("fitted_on"):
            lines.append("- Fitted on: " + "; ".join(f"{k}: {v}" for k, v in ood["fitted_on"].items()))
    rule = metrics.get("verdict") or meta.get("verdict", {})
    if rule:
        lines += [
            f"- Verdict rule: `edible` only when the top species is edible with calibrated probability >= "
            f"{rule.get('edible_min_confidence')} and P(poisonous or deadly) < {rule.get('poison_max')}; `do_not_eat` when a "
            f"dangerous species is on top or P(poisonous or deadly) >= {rule.get('do_not_eat_min')}; else `uncertain`.",
        ]
    lines += [
        f"- Served variant: `{served}`",
        "",
        "## Safety gate",
        "",
        f"- {'PASSED' if gate.get('passed') else 'FAILED'}: unsafe edible rate of `{gate.get('variant', served)}` on the "
        f"{gate.get('split', 'test')} split is {_fmt(gate.get('unsafe_edible_rate'), '{:.4f}')} (limit {gate.get('limit')}); "
        f"OOD sets under {gate.get('min_ood_abstain')} abstention: {', '.join(gate.get('ood_below_limit') or []) or 'none'}; "
        f"OOD images called edible: {gate.get('ood_edible')} (max {gate.get('max_ood_edible')}).",
        "",
        f"## Results ({metrics.get('data', {}).get('test_images', '?')} test images, "
        f"{metrics.get('data', {}).get('ood_images', '?')} out-of-distribution images)",
        "",
    ]
    header = (
        ["variant"] + [c[1] for c in COLUMNS] + [f"ms/image @ batch {k.rsplit('batch', 1)[1]}" for k in latency_keys]
    )
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, v in variants.items():
        cells = [f"**{name}**" if name == served else name] + [_fmt(v.get(k), spec) for k, _, spec in COLUMNS]
        cells += [_fmt(v.get(k), "{:.2f}") for k in latency_keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Metrics: `unsafe_edible_rate` = share of poisonous/deadly test images whose verdict is `edible`; "
        "`poison_cost` = FungiCLEF's (100 x poisonous species predicted as an edible species + 1 x edible species "
        "predicted as a poisonous one) / N, on the top-1 species; `abstain_rate` = share of test images with verdict "
        "`uncertain`; `ood_abstain_rate` = the same on not-mushroom images; ECE with 15 equal-width bins.",
        f"Latency: median over repeats on {metrics.get('machine', 'this machine')}. AURC: area under the "
        "risk-coverage curve (error rate of the answered test photos, most confident first; "
        "`plots/risk_coverage.png`).",
        "",
        "![risk-coverage curve per variant](plots/risk_coverage.png)",
        "",
        "## Species (class order)",
        "",
        "| # | id | common name | scientific name | edibility |",
        "|---|---|---|---|---|",
    ]
    for i, s in enumerate(catalogue.species):
        lines.append(f"| {i} | `{s.id}` | {s.common_name} | *{s.scientific_name}* | {s.edibility} |")
    lines += ["", "## Look-alike warnings", ""]
    for a, b in lookalike_pairs(catalogue):
        sa, sb = catalogue[a], catalogue[b]
        lines.append(f"- **{sa.common_name}** ({sa.edibility}) vs **{sb.common_name}** ({sb.edibility}):")
        lines.append(f"  - {sa.common_name}: {sa.note or 'no note'}")
        lines.append(f"  - {sb.common_name}: {sb.note or 'no note'}")
    lines += [
        "",
        "## Limitations",
        "",
        "- Trained and tested on the data named in the shards manifest; with the default synthetic data the figures",
        "  say nothing about real photos.",
        "- Only the species above are known; any other species is at best `uncertain`, at worst a wrong species.",
        "- The abstention signals catch inputs unlike the training data only as well as the sets above measure;",
        "  a photo of a real mushroom unlike the training data is expected to abstain too.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(
    path: str | Path, catalogue: Catalogue, metrics: dict[str, Any], meta: dict[str, Any] | None = None
) -> Path:
    """Render and write the model card atomically."""
    return write_bytes_atomic(path, render_model_card(catalogue, metrics, meta).encode())
