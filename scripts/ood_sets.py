"""Write the named OOD test sets (held-out procedural families, real images): `python scripts/ood_sets.py`.

They are test data only (conf/evaluate's `ood_sets`): evaluation and the export's safety gate read them, nothing
fits on them. Families listed in data.outliers.families cannot be held out.
"""

import hydra
from omegaconf import DictConfig

from mycolens.cli import quiet_environment, task

quiet_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="ood_sets")
@task
def main(cfg: DictConfig) -> None:
    from mycolens.cli import UserError
    from mycolens.data.ood_sets import build_ood_sets

    o = cfg.evaluate.ood_sets
    exposed = set(cfg.data.get("outliers", {}).get("families", []))
    clash = sorted(exposed & set(o.held_out_families))
    if clash:
        raise UserError(
            f"evaluate.ood_sets.held_out_families {clash} are also in data.outliers.families: a held-out family must never be exposed"
        )
    index = build_ood_sets(
        o.dir,
        image_size=int(cfg.data.image_size),
        seed=int(o.seed),
        held_out_families=list(o.held_out_families),
        family_images=int(o.family_images),
        crops_per_photo=int(o.crops_per_photo),
    )
    for name, s in index["sets"].items():
        print(f"{name}: {s['images']} images ({s['source']})")
    print(f"wrote {o.dir}")


if __name__ == "__main__":
    main()
