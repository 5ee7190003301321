"""Chen, Li, Liang, Shi, Song (arXiv 2410.11268), "Bypassing the Exponential Dependency: Looped
Transformers Efficiently Learn In-context by Multi-step Gradient Descent": claims C1 and C2 of
docs/conventions.md, per prompt.

Contents
--------
* The encoding whose last column holds [w_t; 1] (`chen_prompt`, `chen_weights`, `chen_readout`,
  `chen_forward`), run through the project's one layer Z <- Z - (1/n) P Z M Z^T Q Z.
* Per-prompt GD analysis: `prompt_condition_number`, `least_squares_solution`, `gd_error_after`,
  `gd_bounds`, `tightness`, `best_exponent`.
* Gaussian designs: `gaussian_kappa_table` (simulated quantiles of kappa against n/d, next to the
  Davidson-Szarek bound `davidson_szarek_kappa` and the Marchenko-Pastur limit `mp_kappa`),
  `divergence_table` (probability that the population step 1/lambda_max(sigma_x) diverges).
* Sample complexity: `n_required_g1`, `c2_ratio_required`, `n_required_c2_ds`,
  `sample_complexity_table`.
* Claims C1 and C2: their declared regions (`c1_region`, `c2_region`) and checks (`check_c1`,
  `check_c2`), registered once in looptheory.claims.REGISTRY; `claim_c1`, `claim_c2` run them
  and return Records; `chen_figure_data` (data for the plots in plots.py).

Conventions: X (d, n) has the examples as columns, S = X X^T / n, GD on the prompt's least
squares (1/2n)||y - X^T w||^2 is w_{t+1} = w_t - (eta/n) X (X^T w_t - y), w_0 = 0 unless stated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
from scipy.linalg import eigvalsh_tridiagonal

from . import _validate as V
from .model import looped_forward, make_prompt, preconditioned_gd, prediction
from .task import Task

VACUOUS_FACTOR = 0.99  # C2 case is vacuous when the bound promises less than a 1% reduction of alpha
C1_TOL = 1e-10         # relative tolerance of "exactly GD" (conventions: to machine precision)
C2_TOL = 1e-9          # relative slack on the bound, for rounding in the eigendecomposition


# --- validation helpers ------------------------------------------------------------------------


def _matrix_X(X):
    X = V.as_real_array("X", X, 2, allow_exact=False)
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X: expected shape (d, n) with d, n >= 1, got {X.shape}")
    return X


def _vector_y(y, n):
    y = V.as_real_array("y", y, 1, allow_exact=False)
    if y.shape != (n,):
        raise ValueError(f"y: expected shape ({n},) to match X with n = {n} columns, got {y.shape}")
    return y


def _eta(eta):
    eta = V.real_scalar("eta", eta, allow_exact=False)
    if eta <= 0:
        raise ValueError(f"eta: step size must be > 0, got {eta!r}")
    return eta


def _loops_list(loops):
    """int -> ([int], True); sequence of ints -> (list, False)."""
    if isinstance(loops, (Sequence, np.ndarray)) and not isinstance(loops, (str, bytes)):
        out = [V.positive_int("loops", L, minimum=0) for L in np.asarray(loops).ravel().tolist()]
        if not out:
            raise ValueError("loops: expected a non-empty sequence of integers >= 0")
        return out, False
    return [V.positive_int("loops", loops, minimum=0)], True


def _probability(name, p):
    p = V.real_scalar(name, p, allow_exact=False)
    if not 0 < p < 1:
        raise ValueError(f"{name}: expected a probability in (0, 1), got {p!r}")
    return p


# --- C1: the encoding with [w_t; 1] in the last column ---------------------------------------------


def chen_prompt(X, y, w0=None) -> np.ndarray:
    """The prompt Z_0 in R^{(d+1) x (n+1)} whose last column holds [w_0; 1] (Chen et al. 2024):

        Z_0 = [[x_1 ... x_n, w_0],
               [y_1 ... y_n,  1 ]],

    i.e. z_i = [x_i; y_i] for i <= n (the key/value columns, as in the label-row encoding) and
    z_{n+1} = [w_0; 1] in place of [x_q; 0]. w_0 = 0 when None. Batched: X (..., d, n),
    y (..., n), w0 (..., d).
    """
    X = V.float_array("X", X, 2)
    d = X.shape[-2]
    if w0 is None:
        w0 = np.zeros(d)
    else:
        w0 = V.float_array("w0", w0, 1)
        if w0.shape[-1] != d:
            raise ValueError(f"w0: expected last axis of length d = {d}, got shape {w0.shape}")
    Z = make_prompt(X, y, w0)  # validates y, the shapes and finiteness; puts w0 in the query column
    Z[..., d, -1] = 1.0
    return Z


def chen_weights(d: int, eta) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) making one pass of the project's layer Z <- Z - (1/n) P Z M Z^T Q Z write one GD
    step into the last column of a `chen_prompt`.

    Derivation (M = diag(I_n, 0), so only z_1..z_n act as keys and values). The last column
    becomes z_{n+1} - (1/n) P sum_i z_i (z_i^T Q z_{n+1}).
      Key-query: with z_i = [x_i; y_i] and z_{n+1} = [w; 1],
        z_i^T Q z_{n+1} = x_i^T Q_11 w + x_i^T Q_12 + y_i Q_21 w + y_i Q_22,
      and <x_i, w> - y_i for every w (and, when z_1..z_n span R^{d+1}, for every i) forces
        Q = diag(I_d, -1)   (unique for n >= d+1 and generic data).
      Then sum_i z_i (z_i^T Q z_{n+1}) = [X (X^T w - y); y^T (X^T w - y)].
      Value: P = eta diag(I_d, 0) keeps the 1 in place (zero last row) and gives
        z_{n+1} <- [w - (eta/n) X (X^T w - y); 1] = [w_{t+1}; 1]:
      the layer's minus sign is the descent direction, so P carries +eta.
    Caveat (checked by claim C1): the same (P, Q) also acts on the data columns, since M does not
    mask the output: z_j <- z_j - (1/n) P G Q z_j with G = sum_i z_i z_i^T, i.e.
        X <- X - (eta/n) X (X^T X - y y^T),   y unchanged.
    So loop 1 is exactly one GD step, but from loop 2 on the keys are no longer the prompt's x_i
    and the looped model is not GD on the prompt. No choice of (P, Q) avoids this while
    keeping the data fixed: if P G Q Z_data = 0 with Z_data of full row rank d+1 (n >= d+1),
    then P G Q = 0 and the last column does not move either. `chen_forward(..., update="last")`
    is the named alternative in which only the last column is written (the reading under which
    the construction is exact for every L).
    """
    d = V.positive_int("d", d)
    eta = _eta(eta)
    V.check_memory("d", f"chen_weights at d = {d}", 2 * (d + 1) ** 2 * 8, "two (d + 1) x (d + 1) matrices x 8 bytes")
    P = np.zeros((d + 1, d + 1))
    P[:d, :d] = eta * np.eye(d)
    Q = np.diag(np.r_[np.ones(d), -1.0])
    return P, Q


def chen_readout(Z) -> np.ndarray:
    """w_t = the first d entries of the last column of Z (..., d+1, n+1), a real array; inf or
    NaN entries (a diverged run) pass through."""
    Z = V.float_array("Z", Z, 2, finite=False)
    if Z.shape[-2] < 2:
        raise ValueError(f"Z: expected shape (..., d+1, n+1) with d >= 1, got {Z.shape}")
    return Z[..., :-1, -1].copy()


def chen_forward(Z, P, Q, loops: int, update: str = "all") -> np.ndarray:
    """Loop the layer Z <- Z - (1/n) P Z M Z^T Q Z.

    update="all": the project's layer (looptheory.model.looped_forward), every column written.
    update="last": only the last column is written, the data columns stay the prompt's
    (a different model; offered as an explicit option because it is the reading under which
    Chen et al.'s construction is exact for L > 1).
    """
    if update not in ("all", "last"):
        raise ValueError(f"update: expected 'all' or 'last', got {update!r}")
    if update == "all":
        return looped_forward(Z, P, Q, loops)
    Z0 = np.asarray(looped_forward(Z, P, Q, 1), dtype=float)  # validates, and does the first loop
    Z0[..., :-1] = np.asarray(Z, dtype=float)[..., :-1]
    loops = V.positive_int("loops", loops)
    Zt = Z0
    for _ in range(loops - 1):
        Zn = looped_forward(Zt, P, Q, 1)
        Zt[..., -1] = Zn[..., -1]
    return Zt


# --- per-prompt analysis ------------------------------------------------------------------------


def _spectrum(X, y):
    """Batched: eigenpairs of S = X X^T / n and the minimum-norm least-squares solution.

    X (..., d, n), y (..., n). Returns (lam ascending (..., d), V (..., d, d), w_ls (..., d),
    kappa (...)). kappa = inf where S is numerically singular (see `_singular_tol`) or n < d."""
    d, n = X.shape[-2:]
    S = X @ np.swapaxes(X, -1, -2) / n
    lam, Vec = np.linalg.eigh(S)
    lam_max = lam[..., -1]
    pos = lam > _singular_tol(d, n, lam_max)[..., None]
    if n < d:  # rank <= n < d: the smallest eigenvalue is rounding noise, whatever its size
        pos[..., : d - n] = False
    # minimum-norm solution of the normal equations S w = X y / n (= lstsq's minimum-norm solution)
    Xy = np.matmul(X, y[..., None])[..., 0]
    b = np.matmul(np.swapaxes(Vec, -1, -2), Xy[..., None])[..., 0] / n
    coef = np.where(pos, b / np.where(pos, lam, 1.0), 0.0)
    w_ls = np.einsum("...ij,...j->...i", Vec, coef)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(pos[..., 0], lam_max / np.where(pos[..., 0], lam[..., 0], 1.0), np.inf)
    return lam, Vec, w_ls, kappa


def _singular_tol(d, n, lam_max):
    # eigh's absolute error on S is a few eps ||S||; 10 max(d, n) eps lambda_max leaves margin
    return 10 * max(d, n) * np.finfo(float).eps * np.asarray(lam_max)


def prompt_condition_number(X) -> float:
    """kappa = lambda_max(S) / lambda_min(S) of the prompt's empirical covariance S = X X^T / n.

    Returns math.inf (never NaN, never an error) when S is singular: n < d, repeated or zero
    examples, or lambda_min(S) <= 10 max(d, n) eps lambda_max(S) (numerically singular: kappa
    above ~1e14 / max(d, n) cannot be told from rounding)."""
    X = _matrix_X(X)
    d, n = X.shape
    if n < d:
        return math.inf
    lam = np.linalg.eigvalsh(X @ X.T / n)
    if lam[-1] <= 0 or lam[0] <= _singular_tol(d, n, lam[-1]):
        return math.inf
    return float(lam[-1] / lam[0])


def least_squares_solution(X, y) -> np.ndarray:
    """w_LS: the minimum-norm solution of min_w ||y - X^T w||^2 (the unique solution when
    S = X X^T / n is invertible; for n < d the minimum-norm interpolant, which is the limit of
    GD from w_0 = 0 since every iterate stays in the span of the x_i)."""
    X = _matrix_X(X)
    y = _vector_y(y, X.shape[1])
    return _spectrum(X, y)[2]


def gd_error_after(X, y, loops, eta=None, w0=None):
    """||w_L - w_LS||_2 after L steps of w_{t+1} = w_t - (eta/n) X (X^T w_t - y) (Chen et al.,
    C2 of docs/conventions.md), with w_0 = 0 (or w0) and eta = 1/lambda_max(S) by default.

    Exact formula (no iteration): X y / n = S w_LS, hence w_{t+1} - w_LS = (I - eta S)(w_t - w_LS)
    and w_L - w_LS = V (I - eta Lambda)^L V^T (w_0 - w_LS), S = V Lambda V^T.
    n < d (S singular): w_LS is the minimum-norm least-squares solution (see
    `least_squares_solution`); with w_0 = 0 the error then decays at the rate of the non-zero
    eigenvalues while kappa = inf, so C2's bound is trivially alpha there.
    loops: an int (returns a float) or a sequence of ints (returns an array).
    """
    X = _matrix_X(X)
    y = _vector_y(y, X.shape[1])
    Ls, scalar = _loops_list(loops)
    lam, Vec, w_ls, _ = _spectrum(X, y)
    if lam[-1] <= 0:
        raise ValueError("X: all examples are zero, S = 0 has no step size 1/lambda_max(S)")
    eta = 1.0 / lam[-1] if eta is None else _eta(eta)
    w0 = np.zeros(X.shape[0]) if w0 is None else V.vector("w0", w0, X.shape[0], allow_exact=False)
    e = Vec.T @ (w0 - w_ls)
    f = 1.0 - eta * lam
    out = np.array([float(np.linalg.norm(f**L * e)) for L in Ls])
    return float(out[0]) if scalar else out


def _log_errors(lam, Vec, w_ls, loops, eta):
    """Batched log ||w_L - w_LS|| (w_0 = 0) for each L in loops, in log space so that errors far
    below the float range stay comparable with bounds (…, len(loops))."""
    e2 = np.einsum("...ji,...j->...i", Vec, w_ls) ** 2
    with np.errstate(divide="ignore"):
        logf = np.log(np.abs(1.0 - eta[..., None] * lam))
        loge2 = np.log(e2)
    out = []
    np_err = np.errstate(divide="ignore", invalid="ignore")
    np_err.__enter__()
    for L in loops:
        t = loge2 + 2 * L * logf if L > 0 else loge2
        t = np.where(np.isnan(t), -np.inf, t)
        m = np.max(t, axis=-1)
        mm = np.where(np.isfinite(m), m, 0.0)
        out.append(np.where(np.isfinite(m), 0.5 * (mm + np.log(np.sum(np.exp(t - mm[..., None]), axis=-1))), -np.inf))
    np_err.__exit__(None, None, None)
    return np.stack(out, axis=-1)


def gd_bounds(X, y, loops, w0=None) -> dict:
    """alpha = ||w_0 - w_LS||, kappa, and the two bounds on ||w_L - w_LS|| (eta = 1/lambda_max):

        linear rate  (1 - 1/kappa)^L alpha       (the exact worst-case contraction of I - S/lambda_max),
        Chen et al.  alpha exp(-L/(2 kappa))     (C2; weaker, since 1 - 1/k <= exp(-1/k)).
    With kappa = inf both equal alpha (trivial)."""
    X = _matrix_X(X)
    y = _vector_y(y, X.shape[1])
    Ls, scalar = _loops_list(loops)
    kappa = prompt_condition_number(X)
    w_ls = least_squares_solution(X, y)
    w0 = np.zeros(X.shape[0]) if w0 is None else V.vector("w0", w0, X.shape[0], allow_exact=False)
    alpha = float(np.linalg.norm(w0 - w_ls))
    Larr = np.array(Ls, dtype=float)
    lin = alpha * (1 - 1 / kappa) ** Larr
    ex = alpha * np.exp(-Larr / (2 * kappa))
    if scalar:
        lin, ex = float(lin[0]), float(ex[0])
    return {"alpha": alpha, "kappa": kappa, "linear": lin, "chen": ex}


def tightness(error, bound):
    """error / bound (<= 1 where the bound holds; 0/0 is reported as 1: both exact zeros)."""
    error = np.asarray(error, dtype=float)
    bound = np.asarray(bound, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(bound > 0, error / np.where(bound > 0, bound, 1.0), np.where(error > 0, np.inf, 1.0))
    return float(t) if t.ndim == 0 else t


def best_exponent(errors, alphas, kappas, loops) -> float:
    """The largest c with error <= alpha exp(-c L / kappa) on every data point (C2 has c = 1/2):

        c* = min over points of kappa log(alpha / error) / L.

    Arrays broadcast together. Points with L = 0, kappa = inf, alpha = 0 or error = 0 put no
    constraint on c (returns inf if nothing constrains it). A negative c* means the error grew.
    """
    err = np.asarray(errors, dtype=float)
    a, k, L = np.broadcast_arrays(np.asarray(alphas, float), np.asarray(kappas, float), np.asarray(loops, float))
    err, a, k, L = np.broadcast_arrays(err, a, k, L)
    ok = (L > 0) & np.isfinite(k) & (a > 0) & (err > 0)
    if not np.any(ok):
        return math.inf
    return float(np.min(k[ok] * np.log(a[ok] / err[ok]) / L[ok]))


# --- Gaussian designs ---------------------------------------------------------------------------


def wishart_extreme_eigenvalues(d: int, n: int, samples: int, rng=None):
    """Samples of (lambda_min, lambda_max) of W = G G^T, G a d x n standard Gaussian matrix
    (so S = W / n is the empirical covariance with sigma_x = I).

    Uses the bidiagonal model of the real Laguerre ensemble (Dumitriu & Edelman 2002): the
    non-zero eigenvalues of G G^T have the law of those of B B^T, B lower bidiagonal m x m,
    m = min(d, n), diagonal chi_{N}, chi_{N-1}, ..., chi_{N-m+1} (N = max(d, n)) and
    sub-diagonal chi_{m-1}, ..., chi_1: O(m) per sample instead of O(d^2 n).
    lambda_min = 0 when n < d."""
    d = V.positive_int("d", d)
    n = V.positive_int("n", n)
    samples = V.positive_int("samples", samples)
    rng = V.rng_from("rng", rng)
    m, N = min(d, n), max(d, n)
    lo = np.empty(samples)
    hi = np.empty(samples)
    dof_a = N - np.arange(m)
    dof_b = np.arange(m - 1, 0, -1)
    for s in range(samples):
        a = np.sqrt(rng.chisquare(dof_a))
        b = np.sqrt(rng.chisquare(dof_b)) if m > 1 else np.zeros(0)
        diag = a**2 + np.r_[0.0, b**2]
        off = a[:-1] * b
        if m == 1:
            lo[s] = hi[s] = diag[0]
            continue
        ev = eigvalsh_tridiagonal(diag, off, select="i", select_range=(0, 0))[0], \
            eigvalsh_tridiagonal(diag, off, select="i", select_range=(m - 1, m - 1))[0]
        lo[s], hi[s] = ev
    if n < d:
        lo[:] = 0.0
    return lo, hi


def davidson_szarek_kappa(d, n, t):
    """High-probability bound on kappa(S) for S = G G^T / n, G a d x n Gaussian matrix
    (Davidson & Szarek 2001): the singular values of G lie in [sqrt n - sqrt d - t, sqrt n + sqrt d + t]
    with probability >= 1 - 2 exp(-t^2/2), so kappa <= ((sqrt n + sqrt d + t)/(sqrt n - sqrt d - t))^2.
    inf when sqrt n <= sqrt d + t (the bound says nothing)."""
    d, n, t = float(d), float(n), float(t)
    den = math.sqrt(n) - math.sqrt(d) - t
    return math.inf if den <= 0 else ((math.sqrt(n) + math.sqrt(d) + t) / den) ** 2


def ds_t_for(delta: float) -> float:
    """t with 2 exp(-t^2/2) = delta: the Davidson-Szarek bound then holds w.p. >= 1 - delta."""
    delta = _probability("delta", delta)
    return math.sqrt(2 * math.log(2 / delta))


def mp_kappa(ratio):
    """Marchenko-Pastur limit of kappa(S) as d, n -> inf with n/d = ratio:
    ((1 + sqrt r)/(1 - sqrt r))^2, r = d/n = 1/ratio; inf for ratio <= 1."""
    ratio = float(ratio)
    if ratio <= 1:
        return math.inf
    s = math.sqrt(1 / ratio)
    return ((1 + s) / (1 - s)) ** 2


def gaussian_kappa_table(ds, ratios, samples=200, quantiles=(0.05, 0.5, 0.95), delta=0.05, seed=0) -> list[dict]:
    """Simulated quantiles of kappa(S), sigma_x = I, against n/d at each d, beside the
    Davidson-Szarek bound holding w.p. >= 1 - delta (t = sqrt(2 log(2/delta))) and the MP limit.
    n = round(ratio d). Each row also reports the fraction of samples above the DS bound
    (at most delta if the bound is right)."""
    t = ds_t_for(delta)
    rng = np.random.default_rng(seed)
    rows = []
    for d in ds:
        for r in ratios:
            n = max(1, int(round(r * d)))
            lo, hi = wishart_extreme_eigenvalues(d, n, samples, rng)
            with np.errstate(divide="ignore"):
                k = np.where(lo > _singular_tol(d, n, hi), hi / np.where(lo > 0, lo, 1.0), np.inf)
            ds_b = davidson_szarek_kappa(d, n, t)
            rows.append({"d": d, "n": n, "ratio": n / d, "samples": samples,
                         "quantiles": {str(q): float(np.quantile(k, q)) for q in quantiles},
                         "davidson_szarek": ds_b, "delta": delta, "marchenko_pastur": mp_kappa(n / d),
                         "fraction_above_ds": float(np.mean(k > ds_b))})
    return rows


def divergence_table(ds, ratios, samples=400, seed=0) -> list[dict]:
    """P(lambda_max(S) > 2 lambda_max(sigma_x)) over Gaussian prompts with sigma_x = I against n/d:
    the probability that the fixed population step eta = 1/lambda_max(sigma_x) makes GD on the
    prompt diverge (|1 - eta lambda_max(S)| > 1). As d -> inf it tends to 1 for
    n/d < (1 + sqrt 2)^2 ~ 5.83 and to 0 above (the MP edge (1 + sqrt(d/n))^2 crosses 2 there).
    Rows give the simulated probability with its standard error and the MP edge."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in ds:
        for r in ratios:
            n = max(1, int(round(r * d)))
            _, hi = wishart_extreme_eigenvalues(d, n, samples, rng)
            p = float(np.mean(hi / n > 2.0))
            rows.append({"d": d, "n": n, "ratio": n / d, "samples": samples, "p_diverge": p,
                         "stderr": math.sqrt(max(p * (1 - p), 1e-300) / samples),
                         "mp_edge": (1 + math.sqrt(d / n)) ** 2})
    return rows


DIVERGENCE_THRESHOLD = (1 + math.sqrt(2)) ** 2  # n/d where the MP edge (1 + sqrt(d/n))^2 = 2


# --- sample complexity ------------------------------------------------------------------------


def log10_n_required_g1(d, loops, eps) -> float:
    """log10 of the n that G1's constants need for c <= eps: n > 64 L^2 d^4 (8/eps)^{4L}
    (Gatmiry et al.; in log10 since it overflows a float for moderate L)."""
    d = V.positive_int("d", d)
    L = V.positive_int("loops", loops)
    eps = V.real_scalar("eps", eps, allow_exact=False)
    if eps <= 0:
        raise ValueError(f"eps: must be > 0, got {eps!r}")
    return math.log10(64 * L * L * d**4) + 4 * L * math.log10(8 / eps)


def kappa_target(loops, eps) -> float:
    """The largest kappa with exp(-L/(2 kappa)) <= eps: kappa <= L / (2 log(1/eps))."""
    L = V.positive_int("loops", loops)
    eps = _probability("eps", eps)
    return L / (2 * math.log(1 / eps))


def c2_ratio_required(loops, eps) -> float:
    """Smallest n/d whose Marchenko-Pastur kappa ((1+s)/(1-s))^2, s = sqrt(d/n), is at most
    K = L / (2 log(1/eps)): n/d = ((sqrt K + 1)/(sqrt K - 1))^2. inf when K <= 1 (kappa >= 1
    always, so no n makes C2's bound reach eps with L loops: L <= 2 log(1/eps))."""
    K = kappa_target(loops, eps)
    if K <= 1:
        return math.inf
    s = math.sqrt(K)
    return ((s + 1) / (s - 1)) ** 2


def n_required_c2_ds(d, loops, eps, delta=0.05) -> float:
    """Smallest integer n with Davidson-Szarek kappa bound (w.p. >= 1 - delta) <= L/(2 log(1/eps)):
    sqrt n >= (sqrt d + t)(sqrt K + 1)/(sqrt K - 1). inf when K <= 1."""
    d = V.positive_int("d", d)
    K = kappa_target(loops, eps)
    if K <= 1:
        return math.inf
    t = ds_t_for(delta)
    s = math.sqrt(K)
    n = math.ceil(((math.sqrt(d) + t) * (s + 1) / (s - 1)) ** 2)
    while davidson_szarek_kappa(d, n, t) > K:  # guard the ceiling against rounding
        n += 1
    return float(n)


def sample_complexity_table(ds, loops_list, eps_list, delta=0.05) -> list[dict]:
    """Rows (d, L, eps): log10 n for G1 (n > 64 L^2 d^4 (8/eps)^{4L}), and for C2 (error <= eps alpha
    via exp(-L/(2 kappa)) <= eps): the MP ratio n/d and n = ratio d, and the finite-d
    Davidson-Szarek n (probability >= 1 - delta). C2's n is inf ("no n") when L <= 2 log(1/eps).
    Note the two eps differ in meaning (G1: Loewner closeness of A*; C2: relative error)."""
    rows = []
    for d in ds:
        for L in loops_list:
            for eps in eps_list:
                ratio = c2_ratio_required(L, eps)
                n_ds = n_required_c2_ds(d, L, eps, delta)
                rows.append({"d": d, "loops": L, "eps": eps, "log10_n_g1": log10_n_required_g1(d, L, eps),
                             "c2_kappa_target": kappa_target(L, eps), "c2_ratio_mp": ratio,
                             "log10_n_c2_mp": math.log10(ratio * d) if math.isfinite(ratio) else math.inf,
                             "n_c2_ds": n_ds,
                             "log10_n_c2_ds": math.log10(n_ds) if math.isfinite(n_ds) else math.inf,
                             "c2_achievable": math.isfinite(ratio)})
    return rows


# --- claims --------------------------------------------------------------------------------------


def _rel(a, b):
    with np.errstate(all="ignore"):
        num = np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)
        den = np.maximum(np.linalg.norm(np.asarray(b), axis=-1), 1e-300)
        r = num / den
    return np.where(np.isfinite(r), r, np.inf)  # overflow of a diverging model is a failure, not a NaN


def _stack_weights(etas, d):
    P = np.zeros(etas.shape + (d + 1, d + 1))
    P[..., np.arange(d), np.arange(d)] = etas[..., None]
    Q = np.broadcast_to(np.diag(np.r_[np.ones(d), -1.0]), etas.shape + (d + 1, d + 1))
    return P, Q


def c1_region(quick: bool) -> dict:
    """C1's declared parameters for a quick or a full run."""
    cells = [(1, 1, 1), (2, 5, 1), (3, 8, 2), (2, 5, 3), (3, 3, 5), (4, 2, 4), (5, 20, 10), (8, 40, 20)]
    if not quick:
        cells += [(10, 100, 50), (6, 6, 30), (16, 64, 25)]
    return {"cells (d, n, loops)": cells, "noise": [0.0, 0.25], "prompts per cell": 50 if quick else 200,
            "tolerance (relative)": C1_TOL, "eta": "1/λ_max(S) per prompt",
            "layer": "Z ← Z − (1/n) P Z M Zᵀ Q Z, M = diag(I_n, 0), every column written",
            "weights (b)": "Q = diag(I_d, −1), P = η diag(I_d, 0)", "seeds": "1000 + 10 k + j (cell k, noise j)",
            "sigma_x": "I", "sigma_w": "I"}


def check_c1(quick: bool, params: dict):
    """C1: a linear looped Transformer implements L steps of GD on the prompt's least squares
    exactly, (a) in the label-row encoding (sparse_weights with A = eta I, B = A^T = eta I) and
    (b) in the encoding with [w_t; 1] in the last column (`chen_prompt`, `chen_weights`), both
    through the project's layer. Relative error <= 1e-10 on every prompt: prediction
    -[Z_L]_{d+1,n+1} vs <x_q, w_L> for (a), the last column vs w_L for (b).
    eta = 1/lambda_max(S) per prompt (the weights are built per prompt; exactness does not
    depend on eta). Also reported, not part of the verdict: (b) with only the last column
    written (`chen_forward(update="last")`) and the drift of the data columns under (b)."""
    from .record import Outcome

    cells = params["cells (d, n, loops)"]
    noises = params["noise"]
    prompts = params["prompts per cell"]
    rows = []
    for k, (d, n, L) in enumerate(cells):
        for j, noise in enumerate(noises):
            rng = np.random.default_rng(1000 + 10 * k + j)
            X, y, x_q, _, _ = Task(d, n, noise=noise).sample(prompts, rng)
            lam_max = np.linalg.eigvalsh(X @ np.swapaxes(X, -1, -2) / n)[..., -1]
            etas = 1.0 / lam_max
            B = etas[:, None, None] * np.eye(d)
            w_gd = preconditioned_gd(X, y, B, L)
            # (a) label-row encoding: A = eta I gives B = A^T = eta I
            Pa = np.zeros((prompts, d + 1, d + 1))
            Pa[:, d, d] = 1.0
            Qa = np.zeros((prompts, d + 1, d + 1))
            Qa[:, np.arange(d), np.arange(d)] = etas[:, None]
            ZL = looped_forward(make_prompt(X, y, x_q), Pa, Qa, L)
            pred_gd = np.einsum("bd,bd->b", x_q, w_gd)
            rel_a = np.abs(prediction(ZL) - pred_gd) / np.maximum(np.abs(pred_gd), 1e-300)
            # (b) [w_t; 1] encoding, same layer, and the last-column-only variant
            Z0 = chen_prompt(X, y)
            P, Q = _stack_weights(etas, d)
            with np.errstate(all="ignore"):  # the same-layer run can overflow (reported as inf)
                Zb = chen_forward(Z0, P, Q, L, update="all")
            Zl = chen_forward(Z0, P, Q, L, update="last")
            rel_b = _rel(chen_readout(Zb), w_gd)
            rel_last = _rel(chen_readout(Zl), w_gd)
            with np.errstate(all="ignore"):
                drift = np.max(np.abs(Zb[..., :-1] - Z0[..., :-1]), axis=(-1, -2)) / np.max(np.abs(Z0[..., :-1]), axis=(-1, -2))
                drift = np.where(np.isfinite(drift), drift, np.inf)
                one = float(np.nan_to_num(np.max(np.abs(Zb[:, d, -1] - 1.0)), nan=np.inf))
            rows.append({"d": d, "n": n, "loops": L, "noise": noise, "prompts": prompts,
                         "label_row_max_rel": float(np.max(rel_a)), "chen_same_layer_max_rel": float(np.max(rel_b)),
                         "chen_same_layer_median_rel": float(np.median(rel_b)),
                         "chen_same_layer_fraction_exact": float(np.mean(rel_b <= C1_TOL)),
                         "chen_last_column_only_max_rel": float(np.max(rel_last)),
                         "data_column_drift_max_rel": float(np.max(drift)), "last_entry_stays_1_err": one,
                         "label_row_exact": bool(np.max(rel_a) <= C1_TOL), "chen_exact": bool(np.max(rel_b) <= C1_TOL)})
    bad_a = [r for r in rows if not r["label_row_exact"]]
    bad_b = [r for r in rows if not r["chen_exact"]]
    verdict = "fails" if (bad_a or bad_b) else "holds"
    ok_last = all(r["chen_last_column_only_max_rel"] <= C1_TOL for r in rows)
    parts = [f"label-row encoding: {'exact' if not bad_a else 'NOT exact'} in {len(rows) - len(bad_a)}/{len(rows)} cells "
             f"(max rel {max(r['label_row_max_rel'] for r in rows):.1e})"]
    if bad_b:
        worst = max(bad_b, key=lambda r: r["chen_same_layer_max_rel"])
        parts.append(f"[w_t; 1] encoding through the project's layer: exact only for L = 1 "
                     f"({sum(r['chen_exact'] for r in rows)}/{len(rows)} cells within {C1_TOL:g}); from loop 2 the value "
                     f"matrix diag(ηI, 0) also rewrites the data columns' x-rows (X ← X − (η/n) X(XᵀX − yyᵀ)), e.g. "
                     f"(d, n, L) = ({worst['d']}, {worst['n']}, {worst['loops']}): rel error {worst['chen_same_layer_max_rel']:.3g}")
    else:
        parts.append(f"[w_t; 1] encoding exact in all cells (max rel {max(r['chen_same_layer_max_rel'] for r in rows):.1e})")
    parts.append(f"with only the last column written it is {'exact' if ok_last else 'NOT exact'} "
                 f"(max rel {max(r['chen_last_column_only_max_rel'] for r in rows):.1e})")
    worst = max(rows, key=lambda r: max(r["label_row_max_rel"], r["chen_same_layer_max_rel"]))
    bad = bad_a or bad_b
    return Outcome(
        verdict, "; ".join(parts), {"rows": rows},
        worst_case={k: worst[k] for k in ("d", "n", "loops", "noise", "label_row_max_rel", "chen_same_layer_max_rel")},
        counterexample=({k: bad[0][k] for k in ("d", "n", "loops", "noise", "label_row_max_rel", "chen_same_layer_max_rel")}
                        if bad else None),
        examples_run=len(rows) * prompts)


C2_LOOPS = [1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000]


def _sample_identity(d, n, noise, prompts, rng):
    """Prompts of Task(d, n, noise=noise) (sigma_x = sigma_w = I), drawn directly: Task.sample's
    general covariance transform dominates the run time at d = 50, n = 2500."""
    X = rng.standard_normal((prompts, d, n))
    w = rng.standard_normal((prompts, d))
    y = np.matmul(w[:, None, :], X)[:, 0, :]
    if noise > 0:
        y = y + math.sqrt(noise) * rng.standard_normal((prompts, n))
    return X, y


def _c2_cell(d, n, noise, prompts, seed, loops):
    rng = np.random.default_rng(seed)
    X, y = _sample_identity(d, n, noise, prompts, rng)
    lam, Vec, w_ls, kappa = _spectrum(X, y)
    eta = 1.0 / lam[..., -1]
    logerr = _log_errors(lam, Vec, w_ls, loops, eta)
    alpha = np.linalg.norm(w_ls, axis=-1)
    with np.errstate(divide="ignore"):
        loga = np.log(alpha)
    Ls = np.array(loops, float)
    logb = loga[:, None] - Ls[None, :] / (2 * kappa[:, None])           # log of alpha exp(-L/(2 kappa))
    loglin = loga[:, None] + Ls[None, :] * np.log1p(-1 / kappa[:, None])  # log of (1 - 1/kappa)^L alpha
    vac = np.broadcast_to(np.exp(-Ls[None, :] / (2 * kappa[:, None])) > VACUOUS_FACTOR, logb.shape)
    viol = logerr > logb + C2_TOL
    viol_lin = logerr > loglin + C2_TOL
    return kappa, alpha, logerr, logb, loglin, vac, viol, viol_lin


def c2_region(quick: bool) -> dict:
    """C2's declared parameters for a quick or a full run: the cells (d, n) with n = max(1,
    round(r d)) for the declared ratios r (so the rows show exactly these n)."""
    ds = [2, 5, 20] + ([] if quick else [50])
    ratios = [0.5, 1, 1.5, 2, 4, 10, 50]
    cells = [(d, max(1, int(round(r * d))), r) for d in ds for r in ratios]
    return {"d": ds, "n/d (target)": ratios,
            "cells (d, n)": [(d, n) for d, n, _ in cells],
            "n": "max(1, round(n/d x d)), rounding half to even: the cells above (at d = 5, n/d = 0.5 and 1.5 give "
                 "n = 2 and 8, i.e. n/d = 0.4 and 1.6)",
            "noise": [0.0, 0.25], "loops": C2_LOOPS, "prompts per cell": 100 if quick else 400,
            "sigma_x": "I", "sigma_w": "I", "w_0": 0, "eta": "1/λ_max(S)",
            "error": "||w_L − w_LS||₂ (exact, eigenbasis, log space)",
            "w_LS for n < d": "minimum-norm least squares", "vacuous case": f"exp(−L/(2κ)) > {VACUOUS_FACTOR}",
            "tolerance": f"error ≤ bound (1 + {C2_TOL:g})", "seeds": "2000 + 100 i + 10 j + k (d index i, ratio index j, noise index k)"}


def check_c2(quick: bool, params: dict):
    """C2: ||w_L - w_LS||_2 <= |alpha| exp(-L/(2 kappa)), alpha = ||w_0 - w_LS||, w_0 = 0,
    eta = 1/lambda_max(S), kappa = kappa(S) of the prompt (docs/conventions.md, "C2: the error bound").

    Declared: sigma_x = I, sigma_w = I, noise in {0, 0.25}, d in {2, 5, 20} (+ 50 in full),
    n/d in {0.5, 1, 1.5, 2, 4, 10, 50}, loops C2_LOOPS, many prompts per cell.
    A (prompt, L) case is vacuous when exp(-L/(2 kappa)) > 0.99 (the bound promises less than a
    1% reduction of alpha; always so when kappa = inf, e.g. n < d). Verdict: fails if any case
    has error > bound (1 + 1e-9); holds if none does and some case is non-vacuous; vacuous
    otherwise. Reported: tightness error/bound (max, median over non-vacuous cases), the same
    for the linear rate (1 - 1/kappa)^L, and the best exponent c with error <= alpha exp(-c L / kappa).
    """
    from .record import Outcome

    ds = params["d"]
    ratios = params["n/d (target)"]
    cells = set(map(tuple, params["cells (d, n)"]))
    noises = params["noise"]
    prompts = params["prompts per cell"]
    VAC = "n/a (vacuous: no non-vacuous case)"
    rows = []
    all_c = []
    total_viol = 0
    total_nonvac = 0
    total = 0
    for i, d in enumerate(ds):
        for j, r in enumerate(ratios):
            n = max(1, int(round(r * d)))
            assert (d, n) in cells, (d, n)  # the declared cells, nothing else
            for k, noise in enumerate(noises):
                kappa, alpha, logerr, logb, loglin, vac, viol, viol_lin = _c2_cell(
                    d, n, noise, prompts, 2000 + 100 * i + 10 * j + k, C2_LOOPS)
                nonvac = ~vac
                with np.errstate(invalid="ignore", over="ignore"):
                    tight = np.exp(logerr - logb)
                    tight_lin = np.exp(logerr - loglin)
                Lg = np.broadcast_to(np.array(C2_LOOPS, float), logerr.shape)
                kg = np.broadcast_to(kappa[:, None], logerr.shape)
                fin = np.isfinite(kg) & np.isfinite(logerr) & (Lg > 0) & np.isfinite(np.log(alpha))[:, None]
                c_vals = kg[fin] * (np.log(alpha)[:, None].repeat(len(C2_LOOPS), 1)[fin] - logerr[fin]) / Lg[fin]
                c_best = float(np.min(c_vals)) if c_vals.size else math.inf
                all_c.append(c_best)
                total += viol.size
                total_viol += int(np.sum(viol))
                total_nonvac += int(np.sum(nonvac))
                worst = None
                if np.any(viol):
                    p, q = np.argwhere(viol)[0]
                    worst = {"prompt": int(p), "loops": C2_LOOPS[q], "kappa": float(kappa[p]),
                             "error": float(np.exp(logerr[p, q])), "bound": float(np.exp(logb[p, q]))}
                rows.append({
                    "d": d, "n": n, "n/d (target)": r, "n/d": n / d, "noise": noise, "prompts": prompts,
                    "kappa_median": float(np.median(kappa)), "kappa_max": float(np.max(kappa)),
                    "cases": int(viol.size), "non_vacuous_cases": int(np.sum(nonvac)), "violations": int(np.sum(viol)),
                    "linear_rate_violations": int(np.sum(viol_lin)),
                    "tightness_max": float(np.max(tight[nonvac])) if np.any(nonvac) else VAC,
                    "tightness_median": float(np.median(tight[nonvac])) if np.any(nonvac) else VAC,
                    "tightness_linear_max": float(np.nanmax(tight_lin[nonvac])) if np.any(nonvac) else VAC,
                    "best_exponent": c_best if math.isfinite(c_best) else "n/a (κ = ∞ in every prompt)",
                    "vacuous": not np.any(nonvac), "first_violation": worst or "none",
                })
    c_all = min(all_c) if all_c else math.inf
    verdict = "fails" if total_viol else ("holds" if total_nonvac else "vacuous")
    tmax = max((r["tightness_max"] for r in rows if not r["vacuous"]), default=math.nan)  # nan: no non-vacuous cell
    vac_cells = [(r["d"], r["n"], r["noise"]) for r in rows if r["vacuous"]]
    summary = (f"{total_viol} violations in {total} (prompt, L) cases ({total_nonvac} non-vacuous); "
               f"max tightness error/bound {tmax:.3g}; best exponent supported by the data c = {c_all:.3g} "
               f"(C2 uses 1/2; the exact contraction of I − S/λ_max gives (1 − 1/κ)^L ≤ e^{{−L/κ}}, i.e. c ≥ 1); "
               f"vacuous cells (κ = ∞ or the bound > 0.99α at every L): {vac_cells}; "
               f"n = O(d) needs L > 2 log(1/ε) (κ ≥ 1), e.g. ε = 0.01, L = 20: n/d ≥ {c2_ratio_required(20, 0.01):.3g} (MP) "
               f"vs G1's log10 n > {log10_n_required_g1(10, 20, 0.01):.0f} at d = 10")
    viol_rows = [r for r in rows if r["violations"]]
    nonvac_rows = [r for r in rows if not r["vacuous"]]
    tight = max(nonvac_rows, key=lambda r: r["tightness_max"]) if nonvac_rows else None
    return Outcome(
        verdict, summary,
        {"rows": rows, "best_exponent": c_all,
         # context for "n = O(d) suffices": not part of the verdict
         "sample_complexity": sample_complexity_table([10, 100], [5, 10, 20, 40], [0.1, 0.01])},
        worst_case=None if tight is None else {k: tight[k] for k in ("d", "n", "noise", "tightness_max", "kappa_max")},
        counterexample=None if not viol_rows else {**{k: viol_rows[0][k] for k in ("d", "n", "noise")},
                                                   **viol_rows[0]["first_violation"]},
        examples_run=total)


def claim_c1(quick: bool):
    """C1 as a looptheory.record.Record (the registry's entry, run)."""
    from .claims import REGISTRY

    return REGISTRY["C1"].run(quick)


def claim_c2(quick: bool):
    """C2 as a looptheory.record.Record (the registry's entry, run)."""
    from .claims import REGISTRY

    return REGISTRY["C2"].run(quick)


# --- figure data --------------------------------------------------------------------------------


def chen_figure_data(quick: bool = True) -> dict:
    """Data for the four Chen et al. figures (plots.plot_chen_*):
    error_curves: one seeded prompt per n/d at d = 20, errors and both bounds against loops;
    kappa: gaussian_kappa_table; divergence: divergence_table; sample_complexity: required n
    against loops for G1 and C2 (d = 10, eps = 0.01)."""
    t0 = time.perf_counter()
    d = 20
    loops = list(range(0, 201, 5)) if quick else list(range(0, 501, 5))
    curves = []
    for k, r in enumerate([1.5, 2, 4, 10, 50]):
        n = int(round(r * d))
        X, y, _, _, _ = Task(d, n, noise=0.0).sample(1, np.random.default_rng(300 + k))
        X, y = X[0], y[0]
        b = gd_bounds(X, y, loops)
        curves.append({"ratio": r, "n": n, "d": d, "loops": loops, "kappa": b["kappa"], "alpha": b["alpha"],
                       "error": gd_error_after(X, y, loops).tolist(), "linear": list(b["linear"]), "chen": list(b["chen"])})
    ratios = [1.25, 1.5, 2, 3, 4, 6, 10, 20, 50]
    kap = gaussian_kappa_table([10, 100] if quick else [10, 100, 1000], ratios, samples=100 if quick else 400)
    div_ratios = [1, 2, 3, 4, 5, 5.83, 7, 8, 10, 15]
    div = divergence_table([10, 100] if quick else [10, 100, 1000, 4000], div_ratios, samples=100 if quick else 400)
    sc_loops = list(range(1, 41))
    sc = sample_complexity_table([10], sc_loops, [0.01])
    return {"error_curves": curves, "kappa": kap, "divergence": div, "divergence_threshold": DIVERGENCE_THRESHOLD,
            "sample_complexity": sc, "seconds": time.perf_counter() - t0}
