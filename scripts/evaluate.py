"""Evaluate: every variant on the test and OOD shards (`python scripts/evaluate.py`), or one checkpoint with the
training metrics (`python scripts/evaluate.py ckpt_path=models/best.ckpt`).

Skip a variant with `'evaluate.variants=[teacher,onnx_fp32,onnx_int8]'`; defaults in conf/evaluate/default.yaml.
Exit code 2 when the served variant's test unsafe_edible_rate is over the limit (the reports are written first).
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@task
def main(cfg: DictConfig) -> None:
    from mycolens.catalogue import load_catalogue
    from mycolens.cli import UserError
    from mycolens.evaluation.evaluate import evaluate_variants
    from mycolens.evaluation.summary import gate_failure, ood_lines, table
    from mycolens.verdict.rule import VerdictRule

    if cfg.get("ckpt_path"):
        from mycolens.training.run import evaluate_checkpoint

        for key, value in sorted(evaluate_checkpoint(cfg, cfg.ckpt_path).items()):
            print(f"{key}: {value:.4f}")
        return
    ev = cfg.evaluate
    unknown = [v for v in ev.variants if v not in ev.sources]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(ev.sources)}")
    from mycolens.ood.fit import OodSettings

    rule = VerdictRule.from_dict(cfg.export.verdict)
    ood = OodSettings.from_config(
        float(cfg.export.calibration.keep_in_distribution), OmegaConf.to_container(cfg.export.ood, resolve=True)
    )
    gate_conf = cfg.export.safety_gate
    report = evaluate_variants(
        cfg.data.shards_dir,
        load_catalogue(cfg.catalogue),
        {name: ev.sources[name] for name in ev.variants},
        served=str(ev.served),
        rule=rule,
        ood=ood,
        gate={
            "limit": float(ev.gate_limit),
            "min_ood_abstain": float(gate_conf.min_ood_abstain),
            "max_ood_edible": int(gate_conf.max_ood_edible),
        },
        reports_dir=ev.output_dir,
        plots_dir=ev.plots_dir,
        card_path=ev.model_card,
        model_metrics_path=ev.model_metrics,
        ood_sets_dir=ev.ood_sets.dir,
        ece_bins=int(ev.ece_bins),
        latency=OmegaConf.to_container(ev.latency, resolve=True),
        threads=int(ev.threads),
        batch_size=int(ev.batch_size),
        inputs_max_gb=cfg.data.get("cache_max_gb"),  # bigger splits are decoded a batch at a time
    )
    print(table(report))
    print(f"(* served) metrics: {ev.output_dir}/metrics.json, plots: {ev.plots_dir}, model card: {ev.model_card}")
    print("\n".join(ood_lines(report)))
    refused = gate_failure(report["safety_gate"])
    if refused:
        raise UserError(refused)


if __name__ == "__main__":
    main()
