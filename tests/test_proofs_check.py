"""proofs_check: every check passes, quick and full, and each has a negative control that must
fail. The default tier runs every module on its quick parameters (a few CPU-seconds in all); the
full run is in the slow tier."""

import json
import runpy
import subprocess
import sys

import pytest
import sympy as sp

from proofs_check import CHECKS, QUICK, run
from proofs_check import gd_equivalence, runner, wishart_moments


@pytest.mark.slow
def test_all_checks_pass():
    results = run()
    assert [r.id for r in results] == [f"proofs_check.{name}" for name in CHECKS]
    assert all(r.kind == "proof" and r.mode == "full" for r in results)
    assert all(r.verdict == "pass" for r in results), [(r.id, r.summary) for r in results if r.verdict != "pass"]


def test_quick_run_passes_and_declares_what_it_covers():
    results = run(quick=True)
    assert [r.id for r in results] == [f"proofs_check.{name}" for name in CHECKS]
    assert all(r.kind == "proof" and r.mode == "quick" for r in results)
    assert all(r.verdict == "pass" for r in results), [(r.id, r.summary) for r in results if r.verdict != "pass"]
    for r in results:
        name = r.id.split(".", 1)[1]
        # every module has a quick mode that changes something, declared before any result ...
        assert QUICK[name], name
        full = runner.SPECS[name].params(quick=False)
        assert r.params == runner.declared_params(CHECKS[name], QUICK[name]) != full, name
        for key in QUICK[name]:
            assert r.params[key] != full[key], (name, key)


def test_quick_overrides_are_data_parameters(monkeypatch):
    # a misspelt override would leave the quick run at full size without anyone noticing
    assert all(set(q) <= set(runner.data_params(CHECKS[name])) for name, q in QUICK.items())
    monkeypatch.setattr(wishart_moments, "QUICK", {"k_max": 5})
    with pytest.raises(ValueError, match="k_max"):
        runner.build_registry()
    monkeypatch.setattr(wishart_moments, "QUICK", {"known": {}})  # a formula under test, not data
    with pytest.raises(ValueError, match="known"):
        runner.build_registry()


def test_gd_equivalence_negative_controls():
    # Forgetting u in the GD labels, or a step without the 1/n, must leave a non-zero difference.
    def no_u(w, A, X, y, u, c):
        return w + A.transpose() * X * (y - X.transpose() * w) * c

    def no_n(w, A, X, y, u, c):
        return w + A.transpose() * X * (y + X.transpose() * u - X.transpose() * w)

    assert gd_equivalence.difference(1, 2, 2, with_u=True, gd_step=no_u) != 0
    assert gd_equivalence.difference(1, 2, 2, with_u=False, gd_step=no_n) != 0
    assert gd_equivalence.difference(1, 2, 2, with_u=False) == 0
    assert gd_equivalence.difference(2, 2, 2) == 0


def test_gd_equivalence_difference_is_the_expanded_difference():
    # The ring route against SymPy's Expr route (the previous implementation) at d = 1, n = 2,
    # loops = 2, with u left out of the GD labels so that the difference is a non-zero polynomial.
    X = sp.Matrix(1, 2, sp.symbols("x0_0 x0_1"))
    y = sp.Matrix(2, 1, sp.symbols("y0 y1"))
    q, a, u = sp.symbols("q0 a0_0 u0")
    Z = sp.Matrix([[X[0], X[1], q], [y[0], y[1], 0]])
    P, Q, M = sp.Matrix([[0, 0], [u, 1]]), sp.Matrix([[a, 0], [0, 0]]), sp.diag(1, 1, 0)
    for _ in range(2):
        Z = (Z - P * Z * M * Z.T * Q * Z / 2).expand()
    w = sp.zeros(1, 1)
    for _ in range(2):
        w = w + a * X * (y - X.T * w) / 2

    def no_u(w, A, X, y, u, c):
        return w + A.transpose() * X * (y - X.transpose() * w) * c

    got = gd_equivalence.difference(1, 2, 2, with_u=True, gd_step=no_u)
    want = sp.expand(-Z[1, 2] - q * w[0, 0])
    assert want != 0 and sp.expand(got.as_expr() - want) == 0


def test_wishart_moments_negative_control():
    n, d = wishart_moments.n, wishart_moments.d
    wrong = dict(wishart_moments.KNOWN)
    wrong[4] = n * d * (n**3 + d**3 + 6 * n**2 * d + 6 * n * d**2 + 6 * n**2 + 6 * d**2 + 17 * n * d + 21 * n + 21 * d + 21)
    assert not wishart_moments.check(kmax=4, known=wrong).passed
    wrong3 = dict(wishart_moments.KNOWN)
    wrong3[3] = wishart_moments.KNOWN[3] - n * d * 3 * n  # a dropped 1/n-order term
    assert not wishart_moments.check(kmax=3, known=wrong3).passed


def test_command_line():
    r = subprocess.run([sys.executable, "-m", "proofs_check", "--only", "wishart_moments", "--quick", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (res,) = json.loads(r.stdout)
    assert res["name"] == "wishart_moments" and res["passed"] and res["mode"] == "quick"
    assert res["detail"].startswith(f"k <= {QUICK['wishart_moments']['kmax']}:")


def test_command_line_refuses_an_unknown_check(monkeypatch, capsys):
    # `python -m proofs_check` in this process (runpy, as -m does): a second interpreter would cost
    # about 2 CPU-s of imports, and test_command_line has already run the module as a program.
    monkeypatch.setattr(sys, "argv", ["proofs_check", "--only", "nope"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("proofs_check", run_name="__main__", alter_sys=True)
    assert exit_.value.code == 2 and "--only" in capsys.readouterr().err
