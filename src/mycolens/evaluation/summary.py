"""What scripts/evaluate.py prints: the variant table, each OOD set of the served variant, the gate's refusal."""

from __future__ import annotations

from typing import Any

TABLE_COLUMNS = (
    "accuracy",
    "unsafe_edible_rate",
    "abstain_rate",
    "ood_abstain_rate",
    "ood_abstain_rate_min",
    "ood_edible",
    "ece",
    "aurc",
)


def table(report: dict[str, Any]) -> str:
    """variant x TABLE_COLUMNS, the served variant marked with *."""
    rows = [("variant", *TABLE_COLUMNS)]
    for name, v in report["variants"].items():
        cells = (
            "n/a" if v.get(c) is None else f"{v[c]:.4f}" if isinstance(v[c], float) else str(v[c])
            for c in TABLE_COLUMNS
        )
        rows.append((name + ("*" if name == report["served"] else ""), *cells))
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS) + 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def ood_lines(report: dict[str, Any]) -> list[str]:
    """One line per named OOD set of the served variant: images, abstention, edible, reasons."""
    out = []
    for name, m in report["variants"][report["served"]]["ood_sets"].items():
        reasons = ", ".join(f"{k} {n}" for k, n in m["reasons"].items())
        out.append(
            f"ood set {name}: {m['images']} images, abstained {m['abstain_rate']:.4f}, edible {m['edible']} ({reasons})"
        )
    return out


def gate_failure(gate: dict[str, Any]) -> str | None:
    """Why the safety gate refused the served variant, or None when it passed."""
    if gate["passed"]:
        return None
    return (
        f"safety gate failed: {gate['variant']} calls {gate['unsafe_edible_rate']:.4f} of poisonous/deadly test images "
        f"edible (limit {gate['limit']}); OOD sets under {gate['min_ood_abstain']} abstention: "
        f"{', '.join(gate['ood_below_limit']) or 'none'}; OOD images called edible: {gate['ood_edible']} "
        f"(max {gate['max_ood_edible']})"
    )
