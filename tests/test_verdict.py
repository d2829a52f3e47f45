"""The safety rule on hand-made probability vectors, with the thresholds of conf/export/default.yaml."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mycolens.catalogue import load_catalogue
from mycolens.verdict.rule import VerdictRule, decide, poisonous_probability
from tests.conftest import ROOT

CAT = load_catalogue()
DANGER = CAT.dangerous_mask
CHANTERELLE, JACK = CAT.index("cantharellus_cibarius"), CAT.index("omphalotus_illudens")  # a look-alike pair
MOREL, FALSE_MOREL = CAT.index("morchella_esculenta"), CAT.index("gyromitra_esculenta")
DEATH_CAP = CAT.index("amanita_phalloides")
EDIBLE = [i for i, d in enumerate(DANGER) if not d]
POISONOUS = [i for i, d in enumerate(DANGER) if d]


@pytest.fixture(scope="module")
def rule() -> VerdictRule:
    """The rule as configured (the same numbers export writes into model.json)."""
    conf = yaml.safe_load((ROOT / "conf" / "export" / "default.yaml").read_text())["verdict"]
    return VerdictRule(**conf, ood_threshold=-3.0)


def probs(mass: dict[int, float], rest: float = 0.0) -> np.ndarray:
    """A probability vector with the given classes' mass and `rest` spread evenly over all other classes."""
    p = np.zeros(CAT.num_classes)
    others = [i for i in range(CAT.num_classes) if i not in mass]
    for i, m in mass.items():
        p[i] = m
    p[others] = rest / len(others)
    assert abs(p.sum() - 1) < 1e-9
    return p


def verdict(p: np.ndarray, rule: VerdictRule, ood: float | None = None) -> str:
    return decide(p[None], DANGER, rule, None if ood is None else np.array([ood]))[0]


def test_the_catalogue_pairs_are_what_the_tests_assume() -> None:
    assert CAT[CHANTERELLE].edibility == "edible" and CAT[JACK].edibility == "poisonous"
    assert CAT[JACK].id in CAT[CHANTERELLE].lookalikes
    assert CAT[FALSE_MOREL].edibility == "deadly" and CAT[DEATH_CAP].dangerous


def test_confident_edible_is_edible(rule: VerdictRule) -> None:
    assert verdict(probs({CHANTERELLE: 0.99}, rest=0.01), rule) == "edible"
    assert verdict(probs({MOREL: 1.0}), rule) == "edible"


def test_split_between_lookalike_pair_is_not_edible(rule: VerdictRule) -> None:
    for edible_share in (0.9, 0.75, 0.55, 0.5):
        p = probs({CHANTERELLE: edible_share, JACK: 1 - edible_share})
        assert verdict(p, rule) != "edible", edible_share
    assert verdict(probs({CHANTERELLE: 0.45, JACK: 0.55}), rule) == "do_not_eat"


def test_poison_mass_just_over_poison_max_is_not_edible(rule: VerdictRule) -> None:
    eps = 1e-4
    over = probs({MOREL: 1 - rule.poison_max - eps, FALSE_MOREL: rule.poison_max + eps})
    under = probs({MOREL: 1 - rule.poison_max + eps, FALSE_MOREL: rule.poison_max - eps})
    assert poisonous_probability(over, DANGER) > rule.poison_max
    assert verdict(over, rule) != "edible"
    assert verdict(under, rule) == "edible"
    # the same mass spread thinly over every dangerous species counts just as much
    spread = np.zeros(CAT.num_classes)
    spread[MOREL] = 1 - rule.poison_max - eps
    spread[POISONOUS] = (rule.poison_max + eps) / len(POISONOUS)
    assert verdict(spread, rule) != "edible"


def test_low_confidence_edible_abstains(rule: VerdictRule) -> None:
    p = np.zeros(CAT.num_classes)
    p[MOREL] = rule.edible_min_confidence - 0.01
    p[[i for i in EDIBLE if i != MOREL]] = (1 - p.sum()) / (len(EDIBLE) - 1)
    assert poisonous_probability(p, DANGER) == 0
    assert verdict(p, rule) == "uncertain"


def test_top_poisonous_is_do_not_eat(rule: VerdictRule) -> None:
    assert verdict(probs({DEATH_CAP: 0.99}, rest=0.01), rule) == "do_not_eat"
    assert verdict(probs({JACK: 0.3}, rest=0.7), rule) == "do_not_eat"  # top-1 dangerous even at low confidence


def test_dangerous_mass_over_do_not_eat_min_is_do_not_eat(rule: VerdictRule) -> None:
    p = probs({CHANTERELLE: 0.4, JACK: 0.3, DEATH_CAP: 0.3})  # top is edible, but 60% says dangerous
    assert verdict(p, rule) == "do_not_eat"


def test_ood_score_above_threshold_is_uncertain(rule: VerdictRule) -> None:
    confident = probs({CHANTERELLE: 1.0})
    assert verdict(confident, rule, ood=rule.ood_threshold + 0.5) == "uncertain"
    assert verdict(confident, rule, ood=rule.ood_threshold) == "edible"  # at the threshold: still in distribution
    assert verdict(probs({DEATH_CAP: 1.0}), rule, ood=rule.ood_threshold + 0.5) == "uncertain"


def test_batch_of_rows_and_class_count_check(rule: VerdictRule) -> None:
    batch = np.stack([probs({CHANTERELLE: 1.0}), probs({DEATH_CAP: 1.0}), probs({MOREL: 0.5, FALSE_MOREL: 0.5})])
    assert decide(batch, DANGER, rule) == ["edible", "do_not_eat", "do_not_eat"]
    with pytest.raises(ValueError, match="classes"):
        decide(batch[:, :5], DANGER, rule)


def test_energy_score_at_a_temperature_separates_saturated_logits() -> None:
    """-T logsumexp(z / T) at any temperature; a row with no clear winner scores higher than a confident one."""
    from mycolens.verdict.calibration import energy_score

    confident = np.array([[12.0, 0.0, 0.0, 0.0]])
    flat = np.array([[8.0, 7.0, 7.0, 7.0]])  # no clear winner: looks unlike any training class
    z = np.vstack([confident, flat])
    assert np.allclose(energy_score(z), -np.log(np.exp(z).sum(axis=1)))
    t = 0.4
    assert np.allclose(energy_score(z, t), -t * np.log(np.exp(z / t).sum(axis=1)))
    assert energy_score(flat, t)[0] > energy_score(confident, t)[0]  # flat = more out-of-distribution
