"""E tr W^k (W ~ Wishart_d(n, I)) as polynomials in symbolic n and d, by three routes.

The engine's integration by parts (looptheory.expectations), the brute-force sum over Wick
pairings (looptheory.reference.wick_expectation) and the moment recurrence
(looptheory.moments) must give the same polynomial for k <= 6; for k <= 4 they must equal the
known closed forms, and at d = 1 the chi-square moments n (n + 2) ... (n + 2k - 2).
"""

from __future__ import annotations

import sympy as sp

from looptheory.expectations import Alphabet, Engine
from looptheory.moments import wishart_trace_moments
from looptheory.reference import wick_expectation

from .runner import CheckOutcome

n, d = sp.symbols("n d", positive=True)

KNOWN = {
    1: n * d,
    2: n * d * (n + d + 1),
    3: n * d * (n**2 + d**2 + 3 * n * d + 3 * n + 3 * d + 4),
    4: n * d * (n**3 + d**3 + 6 * n**2 * d + 6 * n * d**2 + 6 * n**2 + 6 * d**2 + 17 * n * d + 21 * n + 21 * d + 20),
}


def engine_moment(k: int):
    """E tr W^k for W ~ Wishart_d(n, I) from the exact engine, as a polynomial in symbolic d and n."""
    eng = Engine(Alphabet(("S",), (0,), 0))
    return sp.expand(eng.expect([(1, [(0,) * k])]).evaluate({(): d}, n) * n**k)


#: The quick run (`looptheory verify --quick`): k <= 5 (the brute-force Wick sum at k = 6, 10 395
#: pairings, is most of the full run's time).
QUICK = dict(kmax=5)


def check(kmax: int = 6, known=None) -> CheckOutcome:
    """E tr W^k, k <= 6, symbolic in n, d: engine = Wick pairings = recurrence = known forms; d = 1 chi-square.

    kmax: the largest k; known: replaces the closed forms (negative controls)."""
    known = KNOWN if known is None else known
    rec = wishart_trace_moments(kmax, n, d)
    bad = []
    for k in range(1, kmax + 1):
        e = engine_moment(k)
        w = sp.expand(wick_expectation([["S"] * k], n=n, d=d) * n**k)
        if sp.expand(e - w) != 0 or sp.expand(e - rec[k]) != 0:
            bad.append((k, "routes differ"))
        if k in known and sp.expand(e - known[k]) != 0:
            bad.append((k, "closed form"))
        chi = sp.Mul(*[n + 2 * i for i in range(k)])
        if sp.expand(e.subs(d, 1) - chi) != 0:
            bad.append((k, "chi-square"))
    return CheckOutcome(
        "wishart_moments",
        not bad,
        f"k <= {kmax}: engine, Wick pairings and recurrence agree as polynomials in (n, d); "
        "k <= 4 equal the closed forms; d = 1 gives chi-square moments" + ("" if not bad else f"; failures {bad}"),
    )
