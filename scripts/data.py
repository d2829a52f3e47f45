"""Make the data shards: `python scripts/data.py` (synthetic default) or `python scripts/ingest.py source=DIR`."""

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="data")
@task
def main(cfg: DictConfig) -> None:
    from pathlib import Path

    from mycolens.catalogue import load_catalogue
    from mycolens.cli import UserError
    from mycolens.data.baseline import colour_baseline
    from mycolens.data.generate import generate_dataset
    from mycolens.utils.io import write_json_atomic

    d = cfg.data
    if d.source != "synthetic":
        raise UserError(f"data.source={d.source}: real photos come in with `python scripts/ingest.py source=DIR`")
    manifest = generate_dataset(
        d.shards_dir,
        load_catalogue(cfg.catalogue),
        image_size=int(d.image_size),
        splits=dict(d.splits),
        seed=int(d.seed),
        workers=int(d.workers),
        rows_per_file=int(d.rows_per_file),
        **d.generate,
    )
    print(f"shards: {manifest.parent}")
    # how far colour statistics alone get: the synthetic task must need shape and texture
    baseline = colour_baseline(manifest.parent, seed=int(d.seed))
    write_json_atomic(Path(cfg.paths.reports_dir) / "data.json", baseline)
    print(
        f"colour-only baseline (logistic regression on colour histograms): test accuracy {baseline['colour_baseline_accuracy']:.3f}"
    )


if __name__ == "__main__":
    main()
