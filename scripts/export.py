"""Export a checkpoint to ONNX fp32 + int8 with model.json: `python scripts/export.py [ckpt_path=models/best.ckpt]`.

Defaults (checkpoint, tolerances, quantization, verdict thresholds, safety limit) are in conf/export/default.yaml,
e.g. `export.quantize.calibration_images=512` or `export.safety_gate.limit=0.0`. Exit code 2 when a check or the
safety gate fails (the folder is still written then, with safety_gate.passed=false, so serving refuses it).
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@task
def main(cfg: DictConfig) -> None:
    from mycolens.catalogue import load_catalogue
    from mycolens.cli import UserError
    from mycolens.export import ExportSettings, export_model

    ckpt = cfg.get("ckpt_path") or cfg.export.ckpt_path
    settings = ExportSettings.from_config(OmegaConf.to_container(cfg.export, resolve=True))
    meta = export_model(
        ckpt,
        cfg.export.output_dir,
        cfg.data.shards_dir,
        load_catalogue(cfg.catalogue),
        settings,
        root=cfg.paths.root_dir,
        reference={
            "variant": cfg.serve.variant,
            "max_images": int(cfg.monitoring.reference_images),
            "bins": int(cfg.monitoring.bins),
        },
    )
    checks, gate, out = meta["checks"], meta["safety_gate"], cfg.export.output_dir
    t, i = checks["fp32_vs_torch"], checks["int8_vs_fp32"]
    print(
        f"onnx fp32 vs pytorch ({t['images']} {checks['split']} images): max |diff| {t['max_abs_diff']:.2e}, top-1 agreement {t['top1_agreement']:.4f}"
    )
    print(
        f"onnx int8 vs fp32: max |diff| {i['max_abs_diff']:.3g}, top-1 agreement {i['top1_agreement']:.4f} ({meta['quantization']})"
    )
    print(
        f"temperature {meta['temperature']:.3f}, ood energy threshold {meta['ood']['threshold']:.3f}, "
        f"feature threshold {meta['ood']['feature']['threshold']:.4g}, {len(meta['verdict']['input_checks'])} photo checks"
    )
    rates = ", ".join(f"{k} {v:.4f}" for k, v in gate["unsafe_edible_rate"].items())
    for name, r in gate["ood"][cfg.serve.variant].items():
        print(f"  ood set {name}: abstained {r['abstain_rate']:.4f} of {r['images']}, edible {r['edible']}")
    print(
        f"safety gate ({gate['split']}): unsafe_edible_rate {rates} (limit {gate['limit']}); OOD abstention under "
        f"{gate['min_ood_abstain']}: {', '.join(gate['ood_below_limit']) or 'none'}; OOD called edible "
        f"{gate['ood_edible']} (max {gate['max_ood_edible']}): {'passed' if gate['passed'] else 'FAILED'}"
    )
    for f in meta["files"].values():
        print(f"wrote {out}/{f['path']} ({f['bytes']:,} bytes)")
    print(f"wrote {out}/model.json (version {meta['version']}) and {out}/reference.json (drift baseline)")
    if not gate["passed"]:
        raise UserError(
            f"safety gate failed: unsafe_edible_rate {rates} (limit {gate['limit']}, {gate['split']} split); OOD sets under "
            f"{gate['min_ood_abstain']} abstention: {', '.join(gate['ood_below_limit']) or 'none'}; OOD images called "
            f"edible {gate['ood_edible']} (max {gate['max_ood_edible']}); "
            f"{out} is marked safety_gate.passed=false and serving will refuse it"
        )


if __name__ == "__main__":
    main()
