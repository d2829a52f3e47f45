"""Make the data shards: `python scripts/data.py` (synthetic default) or `python scripts/ingest.py source=DIR`."""

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@task
def main(cfg: DictConfig) -> None:
    from mycolens.catalogue import load_catalogue
    from mycolens.cli import UserError
    from mycolens.data.generate import generate_dataset

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


if __name__ == "__main__":
    main()
