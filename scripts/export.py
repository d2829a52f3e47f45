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
    from mycolens.export.summary import gate_failure, summary_lines

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
        inputs_max_gb=cfg.data.get("cache_max_gb"),  # bigger splits are decoded a batch at a time
    )
    print("\n".join(summary_lines(meta, str(cfg.export.output_dir), str(cfg.serve.variant))))
    refused = gate_failure(meta, str(cfg.export.output_dir))
    if refused:
        raise UserError(refused)


if __name__ == "__main__":
    main()
