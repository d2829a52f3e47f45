"""Drift report for a folder of photos against the served model's reference: `python scripts/monitor.py images=DIR`.

`images=DIR` is short for `monitoring.images=DIR`. The reference is `<serve.model_dir>/reference.json` unless
`monitoring.reference=PATH`; thresholds, method and features come from conf/monitoring (e.g.
`monitoring.method=ks`, `monitoring.thresholds.default=0.1`). The model in serve.model_dir, when it loads, adds
the confidence and predicted-class features. The JSON report goes to the run folder.
"""

import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mycolens.cli import quiet_environment, task

quiet_environment()


def monitor_argv(argv: list[str]) -> list[str]:
    """Rewrite `[+]images=DIR` to `monitoring.images=DIR`; add `task_name=monitor` unless given."""
    args = [re.sub(r"^\+{0,2}images=", "monitoring.images=", a) for a in argv[1:]]
    keys = {a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")}
    return [argv[0], *([] if "task_name" in keys else ["task_name=monitor"]), *args]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
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
    sys.argv = monitor_argv(sys.argv)
    main()
