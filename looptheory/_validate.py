"""Input validation shared by every public function.

Every check raises ValueError or TypeError whose message starts with the parameter's name,
so that a user (or the CLI, which prints the message on one line) sees what was wrong.
Exact inputs (fractions.Fraction, SymPy Rationals, Python ints) are kept as object arrays so
that exact-mode computations never pass through float64.

Limits (docs/user-guide.md, "Limits and errors"). Inputs whose memory use can be estimated
before anything is allocated are checked against a memory cap: `check_memory` raises
ValueError with the estimate when it is above `memory_cap()`, which is MEMORY_CAP_BYTES
(4 GiB) unless the environment variable LOOPTHEORY_MEMORY_CAP says otherwise (bytes, or a
number with a binary suffix such as 512M, 16G, 1.5T; "inf" switches the guard off). Sampling
estimators (Monte Carlo) check the count of random numbers they would draw against a work cap
the same way (`check_work`, WORK_CAP_ENTRIES, LOOPTHEORY_WORK_CAP), so that a run of days is
refused up front rather than left to hang.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from fractions import Fraction

import numpy as np

#: Default memory cap in bytes for a single call (see the module docstring); the environment
#: variable LOOPTHEORY_MEMORY_CAP overrides it when set.
MEMORY_CAP_BYTES = 4 * 2**30

#: Default cap on the random numbers one Monte Carlo estimate may draw (10^11: hours at the
#: ~2e7 numbers per second measured on this machine); LOOPTHEORY_WORK_CAP overrides it.
WORK_CAP_ENTRIES = 10**11

_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def is_exact_scalar(x) -> bool:
    """True for ints, Fractions and SymPy rationals (anything exact and real)."""
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, (int, np.integer, Fraction)):
        return True
    mod = type(x).__module__
    if mod.startswith("sympy"):
        return bool(getattr(x, "is_Rational", False))
    return False


def to_fraction(x) -> Fraction:
    """Convert an exact scalar (int, Fraction, SymPy Rational) to a Fraction."""
    if isinstance(x, (int, np.integer)):
        return Fraction(int(x))
    if isinstance(x, Fraction):
        return x
    if getattr(x, "is_Rational", False):
        return Fraction(int(x.p), int(x.q))
    raise TypeError(f"not an exact rational: {x!r}")


def as_real_array(name: str, value, ndim: int, *, allow_exact: bool = True) -> np.ndarray:
    """Return value as a float64 array, or an object array of Fractions if every entry is exact
    and allow_exact; reject complex, non-numeric and non-finite entries."""
    if isinstance(value, (str, bytes)) or value is None:
        got = "None" if value is None else "a string"
        raise TypeError(f"{name}: expected a real array of dimension {ndim}, got {got}")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name}: could not be read as an array ({exc})") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected an array of dimension {ndim}, got shape {arr.shape}")
    if arr.dtype == object:
        flat = arr.ravel()
        if allow_exact and all(is_exact_scalar(v) for v in flat):
            out = np.empty(arr.shape, dtype=object)
            out.ravel()[:] = [to_fraction(v) for v in flat]
            return out
        if any(v is None or isinstance(v, (str, bytes, complex)) for v in flat):
            raise TypeError(f"{name}: entries must be real numbers")
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: entries must be real numbers") from None
    elif np.iscomplexobj(arr):
        raise TypeError(f"{name}: entries must be real, got a complex array")
    elif arr.dtype.kind in "iub":
        if arr.dtype.kind == "b":
            raise TypeError(f"{name}: entries must be real numbers, got booleans")
        arr = arr.astype(float)
    elif arr.dtype.kind != "f":
        raise TypeError(f"{name}: entries must be real numbers, got dtype {arr.dtype}")
    arr = np.array(arr, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: entries must be finite (found NaN or inf)")
    return arr


def float_array(name: str, value, min_ndim: int, *, finite: bool = True) -> np.ndarray:
    """A float array of at least min_ndim dimensions with real entries, finite unless finite=False
    (a diverged model's output may hold inf or NaN)."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name}: expected a real array, got {'None' if value is None else 'a string'}")
    try:
        arr = np.asarray(value)
    except ValueError:
        raise ValueError(f"{name}: could not be read as an array (ragged nested lists?)") from None
    if arr.dtype.kind not in "fiu":
        if not finite and arr.dtype != object:
            raise TypeError(f"{name}: expected a real array, got dtype {arr.dtype}")
        arr = as_real_array(name, value, arr.ndim, allow_exact=False)
    arr = np.asarray(arr, dtype=float)
    if arr.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: entries must be finite (found NaN or inf)")
    return arr


def real_scalar(name: str, value, *, allow_exact: bool = True):
    """A finite real scalar: Fraction if exact and allowed, else float."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    if allow_exact and is_exact_scalar(value):
        return to_fraction(value)
    if not isinstance(value, numbers.Real) and not hasattr(value, "__float__"):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if isinstance(value, complex):
        raise TypeError(f"{name}: expected a real number, got a complex number")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return v


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            value = int(value)
        else:
            raise TypeError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def context_length(name: str, value):
    """n: an integer >= 1 or math.inf. Any integer is accepted (10**400 too): the loss at such
    an n keeps its 1/n^p terms where float can hold them, see `is_infinite` and `inverse_power`."""
    if isinstance(value, float) and math.isinf(value) and value > 0:
        return math.inf
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float)):
        raise TypeError(f"{name}: expected an integer >= 1 or math.inf, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise TypeError(f"{name}: expected an integer >= 1 or math.inf, got {value!r}")
    return positive_int(name, value, minimum=1)


def is_infinite(n) -> bool:
    """n == math.inf, safe for integers too large for a float (math.isinf(10**400) raises)."""
    return isinstance(n, float) and n == math.inf


def inverse_power(n, p: int) -> float:
    """n^-p as a float for an int or float n >= 1 and p >= 0, without overflow: an integer too
    large for a float (n = 10**400) gives the correctly rounded value of the exact 1/n^p,
    0.0 once that is below the smallest denormal."""
    if p == 0:
        return 1.0
    if is_infinite(n):
        return 0.0
    if isinstance(n, (int, np.integer)) and n > 2**1000:
        return float(Fraction(1, int(n) ** p)) if p * int(n).bit_length() < 1200 else 0.0
    return float(n) ** -p


def number_text(x) -> str:
    """A number for an error message: exact when short, 1.0e+400 style for huge integers
    (str() of an integer with more than 4300 digits raises)."""
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool) and abs(int(x)) >= 10**15:
        exp10 = math.log10(abs(int(x)))
        e = int(math.floor(exp10))
        return f"{'-' if x < 0 else ''}{10 ** (exp10 - e):.1f}e+{e}"
    return str(x)


def square_matrix(name: str, value, d: int, *, allow_exact: bool = True) -> np.ndarray:
    arr = as_real_array(name, value, 2, allow_exact=allow_exact)
    if arr.shape != (d, d):
        raise ValueError(f"{name}: expected shape ({d}, {d}), got {arr.shape}")
    return arr


def vector(name: str, value, d: int, *, allow_exact: bool = True) -> np.ndarray:
    arr = as_real_array(name, value, 1, allow_exact=allow_exact)
    if arr.shape != (d,):
        raise ValueError(f"{name}: expected shape ({d},), got {arr.shape}")
    return arr


def _exact_ldl_pivots(M: np.ndarray) -> list[Fraction]:
    """Pivots of a symmetric Gaussian elimination in exact arithmetic (Sylvester's criterion)."""
    d = M.shape[0]
    a = [[Fraction(M[i, j]) for j in range(d)] for i in range(d)]
    pivots = []
    for k in range(d):
        p = a[k][k]
        pivots.append(p)
        if p == 0:
            for i in range(k + 1, d):
                if a[i][k] != 0:
                    pivots.append(Fraction(-1))  # indefinite: a zero pivot with a non-zero column
                    return pivots
            continue
        for i in range(k + 1, d):
            f = a[i][k] / p
            for j in range(k + 1, d):
                a[i][j] -= f * a[k][j]
    return pivots


def symmetric_matrix(name: str, value, d: int, *, definite: bool) -> np.ndarray:
    """A symmetric positive definite (definite=True) or semi-definite matrix."""
    M = square_matrix(name, value, d)
    kind = "positive definite" if definite else "positive semi-definite"
    if M.dtype == object:
        if not all(M[i, j] == M[j, i] for i in range(d) for j in range(i)):
            raise ValueError(f"{name}: must be symmetric")
        piv = _exact_ldl_pivots(M)
        ok = all(p > 0 for p in piv) if definite else all(p >= 0 for p in piv)
        if not ok:
            raise ValueError(f"{name}: must be symmetric {kind}")
        return M
    scale = max(float(np.max(np.abs(M))), np.finfo(float).tiny)
    if not np.allclose(M, M.T, rtol=0.0, atol=1e-12 * scale):
        raise ValueError(f"{name}: must be symmetric (max |M - M^T| = {np.max(np.abs(M - M.T)):.3g})")
    M = (M + M.T) / 2
    ev = np.linalg.eigvalsh(M)
    tol = 1e-13 * scale * d
    if definite and ev[0] <= tol:
        raise ValueError(f"{name}: must be symmetric {kind} (smallest eigenvalue {ev[0]:.3g})")
    if not definite and ev[0] < -tol:
        raise ValueError(f"{name}: must be symmetric {kind} (smallest eigenvalue {ev[0]:.3g})")
    return M


def nonnegative_scalar(name: str, value):
    v = real_scalar(name, value)
    if v < 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")
    return v


def positive_float(name: str, value) -> float:
    v = float(real_scalar(name, value, allow_exact=False))
    if v <= 0:
        raise ValueError(f"{name}: must be > 0, got {value!r}")
    return v


def nonnegative_float(name: str, value) -> float:
    """A finite real number >= 0, as a float."""
    v = float(real_scalar(name, value, allow_exact=False))
    if v < 0:
        raise ValueError(f"{name}: must be >= 0, got {value!r}")
    return v


def boolean(name: str, value) -> bool:
    """True or False (numpy booleans too); 'no', 0, 1 or None are refused, not read as truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {value!r}")


def optional_boolean(name: str, value):
    """None, True or False."""
    return None if value is None else boolean(name, value)


def function(name: str, value):
    """A callable."""
    if not callable(value):
        raise TypeError(f"{name}: expected a function, got {type(value).__name__}")
    return value


def seed(name: str, value) -> int:
    """A seed: an integer >= 0 (numpy refuses negative seeds with a message naming nothing)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer seed >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: expected an integer seed >= 0, got {value}")
    return int(value)


def rng_from(name: str, rng) -> np.random.Generator:
    """A numpy Generator from a Generator (used as is), an integer seed >= 0, or None."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise TypeError(f"{name}: expected a numpy.random.Generator or an integer seed >= 0, got {rng!r}")
    return np.random.default_rng(seed(name, rng))


# --- limits -------------------------------------------------------------------------------------


def size_text(nbytes) -> str:
    """Bytes in binary units: 512 bytes, 4 GiB, 1.22 TiB."""
    nbytes = float(nbytes)
    if not math.isfinite(nbytes):
        return "unlimited"
    if nbytes < 1024:
        return f"{nbytes:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "EiB":
            return f"{nbytes:.3g} {unit}"


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:E[+-]?[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*$")


def _cap_from_env(var: str, default, *, binary: bool):
    text = os.environ.get(var)
    if text is None:
        return default
    raw = text.strip().upper()
    if raw in ("INF", "NONE", "UNLIMITED"):
        return math.inf
    m = _SIZE.match(raw)
    value = math.nan
    if m and (binary or not m.group(2)):
        value = float(m.group(1)) * _SUFFIX[m.group(2)]
    if not (math.isfinite(value) and value > 0):
        example = "a number of bytes or a size such as 512M, 16G, 1.5T, or inf" if binary else "a count such as 1e12, or inf"
        raise ValueError(f"{var}: expected {example}, got {text!r}")
    return value


def memory_cap() -> float:
    """The memory cap in bytes: LOOPTHEORY_MEMORY_CAP if set, else MEMORY_CAP_BYTES."""
    return _cap_from_env("LOOPTHEORY_MEMORY_CAP", MEMORY_CAP_BYTES, binary=True)


def work_cap() -> float:
    """The cap on random numbers one Monte Carlo estimate draws: LOOPTHEORY_WORK_CAP if set,
    else WORK_CAP_ENTRIES."""
    return _cap_from_env("LOOPTHEORY_WORK_CAP", WORK_CAP_ENTRIES, binary=False)


def check_memory(name: str, what: str, nbytes, how: str) -> None:
    """Refuse up front a call whose estimated memory use is above the cap.

    name: the parameter to blame (the message starts with it); what: the call and its sizes,
    e.g. "population_loss at d = 5000, loops = 6"; nbytes: the estimate; how: how it was
    estimated, e.g. "trie nodes x d^2 x 8 bytes x 2"."""
    cap = memory_cap()
    if nbytes > cap:
        raise ValueError(
            f"{name}: {what} needs about {size_text(nbytes)} ({how}), above the memory cap of {size_text(cap)}; "
            "set the environment variable LOOPTHEORY_MEMORY_CAP (e.g. LOOPTHEORY_MEMORY_CAP=64G, or inf) "
            "to raise it"
        )


def check_work(name: str, what: str, entries, how: str) -> None:
    """Refuse up front a Monte Carlo run that would draw more random numbers than the work cap."""
    cap = work_cap()
    if entries > cap:
        raise ValueError(
            f"{name}: {what} draws about {float(entries):.2g} random numbers ({how}), above the work cap of "
            f"{cap:.2g} (hours of computation); use fewer samples, or set the environment variable "
            "LOOPTHEORY_WORK_CAP (e.g. 1e13, or inf) to raise it"
        )


def freeze(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.setflags(write=False)
    return arr
