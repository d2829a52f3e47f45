"""What scripts/export.py prints: the parity checks, the fitted rule, the gate per OOD set, the files written."""

from __future__ import annotations

from typing import Any


def gate_text(gate: dict[str, Any]) -> str:
    """The safety gate in one sentence: unsafe-edible rates, OOD sets under their limit, OOD images called edible."""
    rates = ", ".join(f"{k} {v:.4f}" for k, v in gate["unsafe_edible_rate"].items())
    return (
        f"unsafe_edible_rate {rates} (limit {gate['limit']}, {gate['split']} split); OOD sets under "
        f"{gate['min_ood_abstain']} abstention: {', '.join(gate['ood_below_limit']) or 'none'}; OOD images called "
        f"edible {gate['ood_edible']} (max {gate['max_ood_edible']})"
    )


def summary_lines(meta: dict[str, Any], out_dir: str, variant: str) -> list[str]:
    """The export's report for a person: checks against PyTorch and fp32, the rule, the gate, the files."""
    checks, gate = meta["checks"], meta["safety_gate"]
    t, i = checks["fp32_vs_torch"], checks["int8_vs_fp32"]
    lines = [
        f"onnx fp32 vs pytorch ({t['images']} {checks['split']} images): max |diff| {t['max_abs_diff']:.2e}, "
        f"top-1 agreement {t['top1_agreement']:.4f}",
        f"onnx int8 vs fp32: max |diff| {i['max_abs_diff']:.3g}, top-1 agreement {i['top1_agreement']:.4f} "
        f"({meta['quantization']})",
        f"temperature {meta['temperature']:.3f}, ood energy threshold {meta['ood']['threshold']:.3f}, "
        f"feature threshold {meta['ood']['feature']['threshold']:.4g}, {len(meta['verdict']['input_checks'])} photo checks",
    ]
    for name, r in gate["ood"][variant].items():
        lines.append(f"  ood set {name}: abstained {r['abstain_rate']:.4f} of {r['images']}, edible {r['edible']}")
    lines.append(f"safety gate: {gate_text(gate)}: {'passed' if gate['passed'] else 'FAILED'}")
    lines += [f"wrote {out_dir}/{f['path']} ({f['bytes']:,} bytes)" for f in meta["files"].values()]
    lines.append(
        f"wrote {out_dir}/model.json (version {meta['version']}) and {out_dir}/reference.json (drift baseline)"
    )
    return lines


def gate_failure(meta: dict[str, Any], out_dir: str) -> str | None:
    """Why the gate refused the export (the folder is written, marked refused), or None when it passed."""
    gate = meta["safety_gate"]
    if gate["passed"]:
        return None
    return f"safety gate failed: {gate_text(gate)}; {out_dir} is marked safety_gate.passed=false and serving will refuse it"
