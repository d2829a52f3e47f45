"""Drift report for a folder of photos against the served model's reference: `python scripts/monitor.py images=DIR`.

`images=DIR` is short for `monitoring.images=DIR`. The reference is `<serve.model_dir>/reference.json` unless
`monitoring.reference=PATH`; thresholds, method and features come from conf/monitoring (e.g.
`monitoring.method=ks`, `monitoring.thresholds.default=0.1`). The model in serve.model_dir, when it loads, adds
the confidence and predicted-class features. The JSON report goes to the run folder.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="monitor")
@task
def main(cfg: DictConfig) -> None:
    from mycolens.cli import UserError
    from mycolens.inference.onnx_model import ModelRefused, OnnxClassifier
    from mycolens.monitoring.offline import folder_drift, format_report
    from mycolens.monitoring.reference import ReferenceError, load_reference
    from mycolens.utils.io import write_json_atomic

    m = cfg.monitoring
    if not m.images or not Path(m.images).is_dir():
        raise UserError(f"no photo folder: run `python scripts/monitor.py images=/path/to/photos` (got {m.images})")
    model_dir = Path(cfg.serve.model_dir)
    try:
        reference = load_reference(m.reference or model_dir / "reference.json")
    except ReferenceError as exc:
        raise UserError(str(exc)) from None
    try:
        classifier = OnnxClassifier.load(model_dir, str(cfg.serve.variant), threads=2)
    except (ModelRefused, OSError, KeyError) as exc:
        print(f"warning: no model predictions ({exc}); confidence and predicted_class are left out", file=sys.stderr)
        classifier = None
    settings = OmegaConf.to_container(m, resolve=True)
    report = folder_drift(m.images, reference, settings, classifier, max_pixels=int(m.feedback.max_pixels))
    print(format_report(report))
    skipped = report["folder"]["skipped"]
    if skipped:
        print("skipped (not usable photos): " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    out = write_json_atomic(Path(cfg.paths.output_dir) / "drift_report.json", report)
    print(f"report: {out}")


if __name__ == "__main__":
    main()
