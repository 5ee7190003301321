"""proofs_check: every check passes, and each has a negative control that must fail."""

import subprocess
import sys

import pytest
import sympy as sp

from proofs_check import CHECKS, run
from proofs_check import gd_equivalence, wishart_moments


@pytest.mark.slow
def test_all_checks_pass():
    results = run()
    assert [r.id for r in results] == [f"proofs_check.{name}" for name in CHECKS]
    assert all(r.kind == "proof" for r in results)
    assert all(r.verdict == "pass" for r in results), [(r.id, r.summary) for r in results if r.verdict != "pass"]


def test_gd_equivalence_negative_controls():
    # Forgetting u in the GD labels, or a step without the 1/n, must leave a non-zero difference.
    X = sp.Matrix(1, 2, lambda i, j: sp.Symbol(f"x{i}_{j}"))
    y = sp.Matrix(2, 1, lambda i, j: sp.Symbol(f"y{i}"))
    A = sp.Matrix(1, 1, lambda i, j: sp.Symbol(f"a{i}_{j}"))
    no_u = lambda w: w + A.T * X * (y - X.T * w) / 2  # noqa: E731
    no_n = lambda w: w + A.T * X * (y - X.T * w)  # noqa: E731
    assert gd_equivalence.difference(1, 2, 2, with_u=True, gd_step=no_u) != 0
    assert gd_equivalence.difference(1, 2, 2, with_u=False, gd_step=no_n) != 0
    assert gd_equivalence.difference(1, 2, 2, with_u=False) == 0


def test_wishart_moments_negative_control():
    n, d = wishart_moments.n, wishart_moments.d
    wrong = dict(wishart_moments.KNOWN)
    wrong[4] = n * d * (n**3 + d**3 + 6 * n**2 * d + 6 * n * d**2 + 6 * n**2 + 6 * d**2 + 17 * n * d + 21 * n + 21 * d + 21)
    assert not wishart_moments.check(kmax=4, known=wrong).passed
    wrong3 = dict(wishart_moments.KNOWN)
    wrong3[3] = wishart_moments.KNOWN[3] - n * d * 3 * n  # a dropped 1/n-order term
    assert not wishart_moments.check(kmax=3, known=wrong3).passed


def test_command_line():
    r = subprocess.run([sys.executable, "-m", "proofs_check", "--only", "wishart_moments"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("PASS wishart_moments")
    r = subprocess.run([sys.executable, "-m", "proofs_check", "--only", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "--only" in r.stderr
