"""The species catalogue: the single source of class order and edibility."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

EDIBILITY = ("edible", "poisonous", "deadly")
DEFAULT_CATALOGUE = Path(str(resources.files("mycolens") / "resources" / "species.yaml"))


class CatalogueError(ValueError):
    """A catalogue file that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class Species:
    """One class of the catalogue."""

    id: str
    scientific_name: str
    common_name: str
    edibility: str
    lookalikes: tuple[str, ...] = ()
    note: str = ""
    appearance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def dangerous(self) -> bool:
        """True for poisonous and deadly species."""
        return self.edibility != "edible"


@dataclass(frozen=True)
class Catalogue:
    """An ordered list of species; index i is class i everywhere (training, export, serving)."""

    species: tuple[Species, ...]
    name: str = "custom"
    version: str = "1"
    sha256: str = ""

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.species]

    @property
    def num_classes(self) -> int:
        return len(self.species)

    @property
    def dangerous_mask(self) -> list[bool]:
        """Per class: True where eating it is poisonous or deadly."""
        return [s.dangerous for s in self.species]

    def index(self, species_id: str) -> int:
        """Class index of a species id; raises KeyError naming the known ids."""
        try:
            return self.ids.index(species_id)
        except ValueError:
            raise KeyError(f"unknown species {species_id!r}; known: {', '.join(self.ids)}") from None

    def __getitem__(self, key: int | str) -> Species:
        return self.species[key if isinstance(key, int) else self.index(key)]

    def to_dict(self) -> dict[str, Any]:
        """Plain form stored in checkpoints and model.json (no appearance traits)."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "classes": [
                {
                    "id": s.id,
                    "scientific_name": s.scientific_name,
                    "common_name": s.common_name,
                    "edibility": s.edibility,
                    "lookalikes": list(s.lookalikes),
                    "note": s.note,
                }
                for s in self.species
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Catalogue:
        """Build and validate a catalogue from its plain form (as in a YAML file or model.json)."""
        rows = data.get("species", data.get("classes")) if isinstance(data, dict) else None
        if not isinstance(rows, list) or not rows:
            raise CatalogueError(f"{source}: needs a non-empty list under 'species'")
        species = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise CatalogueError(f"{source}: species #{i} is not a mapping")
            missing = [k for k in ("id", "scientific_name", "common_name", "edibility") if not row.get(k)]
            if missing:
                raise CatalogueError(f"{source}: species #{i} ({row.get('id', '?')}) lacks {', '.join(missing)}")
            if row["edibility"] not in EDIBILITY:
                raise CatalogueError(
                    f"{source}: species {row['id']!r} has edibility {row['edibility']!r}; use one of {', '.join(EDIBILITY)}"
                )
            if not str(row["id"]).replace("_", "").isalnum():
                raise CatalogueError(f"{source}: species id {row['id']!r} must be letters, digits and underscores")
            species.append(
                Species(
                    id=str(row["id"]),
                    scientific_name=str(row["scientific_name"]),
                    common_name=str(row["common_name"]),
                    edibility=str(row["edibility"]),
                    lookalikes=tuple(str(x) for x in row.get("lookalikes") or ()),
                    note=str(row.get("note") or ""),
                    appearance=dict(row.get("appearance") or {}),
                )
            )
        ids = [s.id for s in species]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise CatalogueError(f"{source}: duplicate species ids: {', '.join(dupes)}")
        if len(ids) < 2:
            raise CatalogueError(f"{source}: a classifier needs at least 2 species, found {len(ids)}")
        for s in species:
            unknown = [x for x in s.lookalikes if x not in ids]
            if unknown:
                raise CatalogueError(f"{source}: {s.id} lists unknown look-alikes: {', '.join(unknown)}")
        return cls(
            species=tuple(species),
            name=str(data.get("name", "custom")),
            version=str(data.get("version", "1")),
            sha256=str(data.get("sha256", "")),
        )


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load and validate a catalogue YAML file (the bundled European demo when path is None)."""
    path = Path(path) if path else DEFAULT_CATALOGUE
    if not path.is_file():
        raise CatalogueError(f"catalogue file not found: {path} (set catalogue=/path/to/species.yaml)")
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise CatalogueError(f"{path}: expected a mapping with a 'species' list")
    data = {**data, "sha256": hashlib.sha256(raw).hexdigest()}
    return Catalogue.from_dict(data, source=str(path))
