"""The claims registry: verdicts from the declared sets, evidence present, bad ids rejected."""

import pytest

from looptheory.claims import REGISTRY, check_claims

VERDICTS = {"holds", "fails", "vacuous"}


def test_unknown_claim_id():
    with pytest.raises(ValueError, match="ids"):
        check_claims(["G9"])


def test_g1_and_g4_quick():
    res = {r.id: r for r in check_claims(["G1", "G4"], quick=True)}
    assert set(res) == {"G1", "G1-structure", "G4"}
    for r in res.values():
        assert r.verdict in VERDICTS and r.params and r.evidence["rows"]
    # G4: the engine reproduces the n = inf transfer formula sum_i (1 - gamma mu_i)^{2L}
    assert all(row["engine = formula"] for row in res["G4"].evidence["rows"])
    # G1: the optimiser found u* = 0 in every cell (part of the claim, checked, not assumed)
    assert all(row["u*_norm"] < 1e-6 for row in res["G1"].evidence["rows"])


def test_registry_covers_the_gatmiry_claims():
    assert set(REGISTRY) >= {"G1", "G2", "G3", "G4", "G5"}
