"""Ingest real photos into shards: `python scripts/ingest.py source=/path/to/photos` (one subfolder per species id).

`source=DIR` is short for `data.source=DIR`; conf/ingest.yaml selects `data=folder` and `task_name=ingest`.
More: `data.csv=labels.csv` (path,label[,observation]), `data.engine=ray` (Ray Data),
`data.ingest.ood_source=DIR`, `data.ingest.max_side=512`; print the config with `--cfg job`.
"""

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="ingest")
@task
def main(cfg: DictConfig) -> None:
    from mycolens.catalogue import load_catalogue
    from mycolens.cli import UserError

    d = cfg.data
    source = d.get("source")
    if not source or source == "synthetic" or "ingest" not in d:
        raise UserError("no photo folder given: run `python scripts/ingest.py source=/path/to/photos`")
    if not Path(source).is_dir():
        raise UserError(f"source folder not found: {source} (source=DIR: a folder with one subfolder per species id)")
    ing = d.ingest
    kwargs = dict(
        csv=d.csv,
        image_size=int(d.image_size),
        max_side=int(ing.max_side),
        min_side=int(ing.min_side),
        jpeg_quality=int(ing.jpeg_quality),
        splits=dict(d.splits),
        seed=int(d.seed),
        workers=int(d.workers),
        ood_source=ing.ood_source,
        ood_images=int(ing.ood_images),
        rows_per_file=int(d.rows_per_file),
        report_path=ing.report_path,
    )
    catalogue = load_catalogue(cfg.catalogue)
    if d.engine == "ray":
        from mycolens.data.ray_ingest import ingest_folder_ray

        report = ingest_folder_ray(
            source,
            d.shards_dir,
            catalogue,
            **kwargs,
            num_cpus=int(d.ray.num_cpus),
            object_store_memory=int(d.ray.object_store_mb) * 2**20,
        )
    elif d.engine == "local":
        from mycolens.data.ingest import ingest_folder

        report = ingest_folder(source, d.shards_dir, catalogue, **kwargs)
    else:
        raise UserError(f"data.engine={d.engine!r} is not known: use local or ray")
    for warning in report.warnings:
        logging.getLogger("mycolens").warning(warning)
    print(report.summary())
    print(f"shards: {report.shards_dir}  report: {report.report_path}  quarantine: {report.quarantine_dir}")


if __name__ == "__main__":
    main()
