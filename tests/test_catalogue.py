import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mycolens.catalogue import CatalogueError, load_catalogue
from tests.conftest import ROOT

PAIRS = [
    ("cantharellus_cibarius", "omphalotus_illudens"),
    ("macrolepiota_procera", "chlorophyllum_molybdites"),
    ("morchella_esculenta", "gyromitra_esculenta"),
    ("boletus_edulis", "rubroboletus_satanas"),
    ("agaricus_campestris", "amanita_virosa"),
]


def test_bundled_catalogue_has_the_designed_lookalike_pairs():
    cat = load_catalogue()
    assert cat.num_classes >= 12
    for edible, dangerous in PAIRS:
        assert cat[edible].edibility == "edible"
        assert cat[dangerous].dangerous
        assert dangerous in cat[edible].lookalikes and edible in cat[dangerous].lookalikes
    assert cat["amanita_phalloides"].edibility == "deadly"
    assert cat["amanita_muscaria"].dangerous
    assert cat.dangerous_mask == [s.edibility != "edible" for s in cat.species]


def _write(tmp_path: Path, species: list[dict]) -> Path:
    path = tmp_path / "cat.yaml"
    path.write_text(yaml.safe_dump({"species": species}))
    return path


GOOD = {"id": "a_b", "scientific_name": "A b", "common_name": "Ab", "edibility": "edible"}
OTHER = {"id": "c_d", "scientific_name": "C d", "common_name": "Cd", "edibility": "deadly"}


@pytest.mark.parametrize(
    ("species", "message"),
    [
        ([GOOD, {**OTHER, "edibility": "tasty"}], "edibility 'tasty'"),
        ([GOOD, {**OTHER, "id": "a_b"}], "duplicate species ids: a_b"),
        ([GOOD, {**OTHER, "lookalikes": ["x_y"]}], "unknown look-alikes: x_y"),
        ([GOOD, {k: v for k, v in OTHER.items() if k != "common_name"}], "lacks common_name"),
        ([GOOD], "at least 2 species"),
        ([GOOD, {**OTHER, "id": "../etc"}], "letters, digits and underscores"),
    ],
)
def test_bad_catalogue_gets_a_clear_error(tmp_path, species, message):
    with pytest.raises(CatalogueError, match=message.replace("(", r"\(")):
        load_catalogue(_write(tmp_path, species))


def test_missing_or_invalid_catalogue_file(tmp_path):
    with pytest.raises(CatalogueError, match="not found"):
        load_catalogue(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("species: [unclosed")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(bad)


def test_user_catalogue_reaches_the_data_stage(tmp_path):
    """`catalogue=` points every stage at another file; a broken one fails in one line, exit code 2."""
    bad = _write(tmp_path, [GOOD])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/data.py"), f"catalogue={bad}", f"paths.data_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "at least 2 species" in proc.stderr
