"""Monte Carlo estimates of the population loss, with honest standard errors and tail diagnostics.

Two estimators of f(A, u) = E (yhat - y_q)^2 (docs/conventions.md, "The population loss"):

- method="conditional" (the default): only the prompt's covariates X are sampled; for each X
  the expectation over w*, the label noise and the query x_q is taken exactly,

    c(X) = E[(yhat - y_q)^2 | X]
         = tr(Σx H^L Σw (H^L)^T) + u^T (I - H^L)^T Σx (I - H^L) u + (σ²/n) tr(Σx G B S B^T G^T),

  S = X X^T / n, B = A^T, H = I - B S, G = sum_{k<L} H^k (docs/derivations.md, "7. Monte Carlo
  with the inner expectation done exactly"). By default X is drawn from a defensive importance
  proposal that oversamples prompts with one large direction (a rank-one spike in S), on
  which c(X) is large.
- method="plain": prompts are sampled whole from the task and pushed through the real forward
  pass `looped_forward`; kept for comparison, and as the route that shares no formula with the
  exact engine. (The conditional formula is checked against brute-force averages of that
  forward pass, tests/test_montecarlo.py.)

docs/monte-carlo.md has the z-score table against the exact engine and the precision measured.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass

import numpy as np

from . import _validate as V
from .model import looped_forward, make_prompt, multilayer_forward, prediction, sparse_weights
from .record import HEAVY_TAIL_SHARE
from .task import Task

# Prompts per chunk are chosen so that a chunk's arrays hold about this many float64 entries;
# the chunking is fixed by the task's shape, not by the machine, so results are reproducible.
_CHUNK_ENTRIES = 4_000_000

METHODS = ("conditional", "plain")
PROPOSALS = ("spike", "target")

#: Share alpha of the mixture proposal drawn from the task's own law (the defensive component,
#: Hesterberg 1995): the importance weights are then at most 1/alpha, and the estimator's second
#: moment at most 1/alpha times that of sampling X from the task, and at most 1/(1 - alpha) times
#: that of the tilted component alone; 1/2 balances the two bounds.
DEFENSIVE_SHARE = 0.5

#: Below this Kish effective sample size of the contributions, the standard error is not trusted.
MIN_ESS = 100.0


@dataclass(frozen=True)
class MonteCarloResult:
    """A Monte Carlo estimate of the population loss, with its tail diagnostics.

    Unpacks as (mean, stderr), so `mean, se = monte_carlo_loss(...)` keeps working; result[0]
    and result[1] are the same two numbers.

    With N = samples draws X_i from the proposal q, importance weights w_i = p(X_i)/q(X_i)
    (w_i = 1 when X is drawn from the task's law p) and per-draw values c_i (the conditional
    loss c(X_i), or for method="plain" the squared error of one whole prompt), the per-draw
    contributions are h_i = w_i c_i >= 0 and

      mean   = (1/N) sum h_i,        stderr = sd(h) / sqrt(N)   (sd with N - 1 in the denominator),
      ess    = (sum h_i)^2 / sum h_i^2           Kish effective sample size of the contributions;
                                                 N / ess - 1 is the squared coefficient of
                                                 variation of h (with N in the denominator), so
                                                 ess ~ 1 / (stderr / mean)^2;
      weight_ess = (sum w_i)^2 / sum w_i^2       Kish effective sample size of the weights alone
                                                 (= N when the weights are all 1);
      top10_share        share of sum h carried by its 10 largest terms;
      top_permille_share share of sum h carried by its ceil(N / 1000) largest terms (top 0.1%);
      unseen_tail = P(T' > T_max), T' ~ chi-square with d n + 4 L degrees of freedom, T_max the
                    largest whitened squared radius T = tr(X^T Σx^{-1} X) drawn: the share of
                    the law T^{2L} p(T) that lies beyond every draw. c(X) grows like T^{2L}
                    at most, so this is where the mean would sit if it grew that fast; a large
                    value says the draws never reached the prompts that may carry the mean.

    trusted is False, with the reasons in why, when any of the following holds (a RuntimeWarning
    says the same): a contribution is not finite (overflow); ess < MIN_ESS (100); top10_share >
    HEAVY_TAIL_SHARE (0.1, as in record.mc_summary); unseen_tail x mean > stderr (the tail the
    sample never reached could move the mean by more than one standard error). The rules can
    only flag what the sample or the tail's known growth shows; docs/monte-carlo.md reports how
    they did on the declared table.
    """

    mean: float
    stderr: float
    samples: int
    method: str
    proposal: str
    ess: float
    weight_ess: float
    top10_share: float
    top_permille_share: float
    unseen_tail: float
    trusted: bool
    why: str

    def __iter__(self):
        return iter((self.mean, self.stderr))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i):
        return (self.mean, self.stderr)[i]

    def as_dict(self) -> dict:
        """Every field, for a record's evidence."""
        return dataclasses.asdict(self)


def _letters(task: Task, A, u):
    """The whitened letters of docs/derivations.md, "7.1 The loss given X": with Σx = Lx Lx^T
    (Cholesky), X = Lx Z and S~ = Z Z^T / n, the loss given X is that of B^ = Lx^T A^T Lx,
    Ŵ = Lx^T Cw (Σw = Cw Cw^T; Σw may be singular) and û = Lx^T u. Returns (Lx, B^, Ŵ, û)."""
    lx = np.linalg.cholesky(np.asarray(task.sigma_x, dtype=float))
    ev, evec = np.linalg.eigh(np.asarray(task.sigma_w, dtype=float))
    cw = evec * np.sqrt(np.clip(ev, 0.0, None))
    return lx, lx.T @ A.T @ lx, lx.T @ cw, None if u is None else lx.T @ u


def _conditional(Z, letters, loops, noise):
    """c(X) for a batch of whitened covariates Z = Lx^{-1} X (b, d, n); see conditional_loss.

    In whitened letters (H^ = I - B^ S~, G^ = sum_{k<L} H^^k): c = ||H^^L Ŵ||_F^2 +
    ||(I - H^^L) û||^2 + (σ²/n) tr(G^ B^ S~ B^^T G^^T)."""
    _, Bh, Wh, uh = letters
    d, n = Z.shape[-2:]
    S = Z @ np.swapaxes(Z, -1, -2) / n
    H = np.eye(d) - Bh @ S
    HL = np.broadcast_to(np.eye(d), H.shape).copy()
    G = np.zeros_like(H)
    for _ in range(loops):
        G += HL
        HL = HL @ H
    c = np.sum((HL @ Wh) ** 2, axis=(-2, -1))
    if uh is not None:
        c = c + np.sum((uh - HL @ uh) ** 2, axis=-1)
    if noise > 0:
        K = G @ Bh
        c = c + (noise / n) * np.einsum("bij,bjk,bik->b", K, S, K)
    return c


def conditional_loss(task: Task, A, loops: int, X, u=None) -> np.ndarray:
    """E[(yhat - y_q)^2 | X] for the sparse looped model: the loss averaged exactly over w*, the
    label noise and the query x_q, for given covariates X (d, n) or a batch (b, d, n):

      c(X) = tr(Σx H^L Σw (H^L)^T) + u^T (I - H^L)^T Σx (I - H^L) u + (σ²/n) tr(Σx G B S B^T G^T),

    S = X X^T / n, B = A^T, H = I - B S, G = sum_{k<L} H^k (docs/derivations.md, "7. Monte
    Carlo with the inner expectation done exactly"). E c(X) over X is the population loss.
    X's last axis must have length task.n. Returns a float (one X) or an array (a batch).
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    A = V.square_matrix("A", A, task.d, allow_exact=False)
    u = None if u is None else V.vector("u", u, task.d, allow_exact=False)
    loops = V.positive_int("loops", loops)
    X = V.float_array("X", X, 2)
    if X.ndim > 3 or X.shape[-2:] != (task.d, task.n):
        raise ValueError(f"X: expected shape ({task.d}, {V.number_text(task.n)}) or (batch, {task.d}, "
                         f"{V.number_text(task.n)}) for task.d, task.n, got {X.shape}")
    letters = _letters(task, A, u)
    Z = np.linalg.solve(letters[0], X.reshape((-1,) + X.shape[-2:]))
    out = _conditional(Z, letters, loops, float(task.noise))
    return float(out[0]) if X.ndim == 2 else out


def _log_chi2_moment(k: float, m: int) -> float:
    """log E R^m for R ~ chi-square with k degrees of freedom: m log 2 + lgamma(k/2 + m) - lgamma(k/2)."""
    return m * math.log(2.0) + math.lgamma(k / 2 + m) - math.lgamma(k / 2)


def sphere_moment(W, m: int) -> np.ndarray:
    """E_v (v^T W v)^m over v uniform on the unit sphere of R^d, for symmetric positive
    semi-definite W (d, d) or a batch (b, d, d), as log values (so that large W and m do not
    overflow); m >= 0 an integer.

    With g = r v ~ N(0, I_d), E (g^T W g)^m = E r^{2m} E_v (v^T W v)^m, E r^{2m} = 2^m (d/2)_m, and
    the moments mu_k of g^T W g follow from its cumulants kappa_j = 2^{j-1} (j-1)! tr W^j by
    mu_k = sum_{j<=k} C(k-1, j-1) kappa_j mu_{k-j}. Divided by 2^k (d/2)_k this is the recursion
    nu_k = sum_{j<=k} [(k-1)! / (k-j)!] [(d/2)_{k-j} / (d/2)_k] (tr W^j / 2) nu_{k-j}, nu_0 = 1,
    for nu_k = E_v (v^T W v)^k; every term is >= 0, so there is no cancellation. W is scaled by
    its trace first (nu_m(W) = t^m nu_m(W / t)), so every tr (W/t)^j lies in [d^{1-j}, 1].
    (docs/derivations.md, "7.2 Importance sampling of a rank-one spike")
    """
    W = np.asarray(W, dtype=float)
    d = W.shape[-1]
    t = np.trace(W, axis1=-2, axis2=-1)
    R = W / np.where(t > 0, t, 1.0)[..., None, None]
    # tr R^j for j <= m from the powers R^1 ... R^ceil(m/2): tr R^(a+b) = sum(R^a * R^b), R symmetric
    pw = [None, R]
    for _ in range(2, (m + 1) // 2 + 1):
        pw.append(pw[-1] @ R)
    tr = [None] + [np.sum(pw[(j + 1) // 2] * pw[j // 2], axis=(-2, -1)) if j > 1 else np.ones_like(t)
                   for j in range(1, m + 1)]
    nu = [np.ones_like(t)]
    for k in range(1, m + 1):
        acc = np.zeros_like(t)
        for j in range(1, k + 1):
            coef = math.exp(math.lgamma(k) - math.lgamma(k - j + 1) + math.lgamma(d / 2 + k - j) - math.lgamma(d / 2 + k))
            acc = acc + 0.5 * coef * tr[j] * nu[k - j]
        nu.append(acc)
    with np.errstate(divide="ignore"):
        return m * np.log(t) + np.log(nu[m])


def _spike_draw(Z, loops, rng):
    """Draw from the defensive mixture q = a p + (1 - a) q_m, m = 2 loops, where q_m tilts the
    standard normal law p of Z (b, d, n) by (v^T Z Z^T v)^m averaged over a uniform direction v:
    q_m(Z) = p(Z) E_v (v^T W v)^m / E (chi-square_n)^m, W = Z Z^T. Sampling q_m: v uniform, then
    the projection a = Z^T v gets radius^2 ~ chi-square(n + 2m) (its direction and the rest of Z
    unchanged). Returns (Z', weights p/q) (docs/derivations.md, "7.2 Importance sampling of a
    rank-one spike")."""
    b, d, n = Z.shape
    m = 2 * loops
    tilt = rng.random(b) >= DEFENSIVE_SHARE
    v = rng.standard_normal((b, d))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    a = np.einsum("bd,bdn->bn", v, Z)
    R = np.sum(a * a, axis=-1)
    scale = np.where(tilt, np.sqrt(rng.chisquare(n + 2 * m, b) / R), 1.0)
    Z = Z + v[:, :, None] * (a * (scale - 1.0)[:, None])[:, None, :]
    log_ratio = sphere_moment(Z @ np.swapaxes(Z, -1, -2), m) - _log_chi2_moment(n, m)
    with np.errstate(over="ignore"):
        return Z, 1.0 / (DEFENSIVE_SHARE + (1.0 - DEFENSIVE_SHARE) * np.exp(log_ratio))


class _Tally:
    """Streaming sums for the mean, its standard error and the diagnostics (memory: the top
    ceil(N/1000) contributions, not all N)."""

    def __init__(self, samples):
        self.keep = max(10, math.ceil(samples / 1000))
        self.n = 0
        self.mean = self.m2 = 0.0  # m2: squared deviations combined by chunk (Chan et al.)
        self.sh = self.sh2 = self.sw = self.sw2 = 0.0
        self.tmax = 0.0
        self.finite = True
        self.top = np.empty(0)

    def add(self, h, w, T):
        b = h.size
        tot = self.n + b
        self.tmax = max(self.tmax, float(np.max(T)))
        self.sw += float(np.sum(w))
        self.sw2 += float(np.sum(w * w))
        self.finite = self.finite and bool(np.all(np.isfinite(h)))
        if self.finite:
            c_mean = float(np.mean(h))
            delta = c_mean - self.mean
            self.mean += delta * b / tot
            self.m2 += float(np.sum((h - c_mean) ** 2)) + delta * delta * self.n * b / tot
            self.sh += float(np.sum(h))
            self.sh2 += float(np.sum(h * h))
            top = np.concatenate([self.top, h])
            self.top = np.partition(top, top.size - self.keep)[top.size - self.keep:] if top.size > self.keep else top
        self.n = tot

    def share(self, k):
        if not self.finite:
            return 1.0
        if self.sh <= 0:
            return 0.0
        return float(np.sum(np.sort(self.top)[-k:]) / self.sh)

    def diagnostics(self) -> dict:
        if not self.finite:
            ess = 0.0
        else:  # all contributions 0: every draw equal, so ess = N
            ess = self.sh ** 2 / self.sh2 if self.sh2 > 0 else float(self.n)
        return {"ess": ess, "weight_ess": self.sw ** 2 / self.sw2 if self.sw2 > 0 else 0.0,
                "top10_share": self.share(10), "top_permille_share": self.share(math.ceil(self.n / 1000))}


def tail_diagnostics(contributions, weights=None) -> dict:
    """The tail diagnostics of MonteCarloResult for given per-draw contributions h_i >= 0 (and
    importance weights w_i, default 1): {"ess": (sum h)^2 / sum h^2, "weight_ess": (sum w)^2 /
    sum w^2, "top10_share": share of sum h in its 10 largest terms, "top_permille_share": share
    in its ceil(N / 1000) largest}. Computed by the same streaming code monte_carlo_loss uses."""
    h = V.float_array("contributions", contributions, 1, finite=False).ravel()
    if h.size < 2 or np.any(h < 0):
        raise ValueError(f"contributions: expected at least 2 values >= 0, got {h.size} values, min {np.min(h, initial=0.0)}")
    w = np.ones(h.size) if weights is None else V.float_array("weights", weights, 1).ravel()
    if w.shape != h.shape or np.any(w < 0):
        raise ValueError(f"weights: expected {h.size} values >= 0 (one per contribution), got shape {w.shape}")
    t = _Tally(h.size)
    t.add(h, w, np.zeros(1))
    return t.diagnostics()


def _result(t: _Tally, method, proposal, d, n, loops) -> MonteCarloResult:
    from scipy.special import gammaincc  # only here: importing looptheory stays free of SciPy

    N = t.n
    diag = t.diagnostics()
    ess, top10 = diag["ess"], diag["top10_share"]
    mean, se = (t.mean, math.sqrt(t.m2 / (N - 1) / N)) if t.finite else (math.inf, math.inf)
    unseen = float(gammaincc((d * n + 4 * loops) / 2, t.tmax / 2))
    why = []
    if not t.finite:
        why.append("overflow: some contributions are not finite")
    else:
        if ess < MIN_ESS:
            why.append(f"effective sample size {ess:.3g} < {MIN_ESS:g}")
        if top10 > HEAVY_TAIL_SHARE:
            why.append(f"the 10 largest of {N} draws carry {top10:.0%} of the sum (> {HEAVY_TAIL_SHARE:.0%})")
        if unseen * mean > se:
            why.append(f"unseen tail: {unseen:.2g} of the tail law T^{2 * loops} p(T) lies beyond every draw, "
                       f"and {unseen:.2g} x mean = {unseen * mean:.3g} > stderr {se:.3g}")
    return MonteCarloResult(mean, se, N, method, proposal, ess, diag["weight_ess"], top10, diag["top_permille_share"],
                            unseen, not why, "; ".join(why))


def monte_carlo_loss(task: Task, A, loops: int, u=None, samples: int = 100_000, seed: int = 0,
                     method: str = "conditional", proposal: str | None = None) -> MonteCarloResult:
    """Estimate f(A, u) = E (yhat - y_q)^2 by simulation; returns a MonteCarloResult, which
    unpacks as (mean, stderr) and carries the tail diagnostics and `trusted`.

    method="conditional" (default): X is sampled, and the loss given X, c(X), is averaged exactly
      over w*, the noise and x_q (conditional_loss); mean = (1/N) sum w_i c(X_i).
    method="plain": whole prompts from the task through the real forward pass (looped_forward).
    proposal (method="conditional" only; default "spike"):
      "spike": defensive importance sampling of a rank-one spike (docs/derivations.md, "7.2
        Importance sampling of a rank-one spike"). With Z = Lx^{-1} X (standard normal, d x n)
        and W = Z Z^T, half of the draws (on average) come from the task and half from the law
        q_m(Z) = p(Z) E_v (v^T W v)^m / E (chi-square_n)^m, m = 2 loops, v uniform on the
        sphere (a random direction whose n projections get a chi-square(n + 2m) squared
        radius); the weight is w = 1 / (1/2 + 1/2 q_m / p), computed exactly (sphere_moment).
        c(X) grows at most like lambda_max(W)^{2L} and E_v (v^T W v)^{2L} >= const
        lambda_max(W)^{2L}, so w c is bounded: every moment is finite, and the tilted half puts
        its draws where lambda_max^{2L} p, hence the mean, sits.
      "target": X from the task itself (w = 1).
    The same seed (an integer >= 0) gives the same numbers. When the diagnostics say the
    standard error cannot be trusted (see MonteCarloResult for the rule), a RuntimeWarning says
    why and result.trusted is False. n = math.inf cannot be sampled (ValueError naming task).

    Limits (docs/user-guide.md, "Limits and errors"): draws are made in chunks of about 4M
    numbers, so memory stays near 6 x max(chunk, one prompt) x 8 bytes (plus loops x d^2 x 8
    bytes per prompt of a chunk for the spike weight, whose cost also grows like loops^2 per
    prompt: loops in the hundreds are slow); a single prompt too big
    for the memory cap is refused (ValueError naming task, e.g. n = 10^9). A run that would draw
    more than the work cap of random numbers (samples x (d + 1) x (n + 1) > 10^11 by default,
    LOOPTHEORY_WORK_CAP) is refused up front (ValueError naming samples) instead of running
    for days.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    if V.is_infinite(task.n):
        raise ValueError("task.n: Monte Carlo needs a finite n (n = inf cannot be sampled)")
    A = V.square_matrix("A", A, task.d, allow_exact=False)
    u = None if u is None else V.vector("u", u, task.d, allow_exact=False)
    loops = V.positive_int("loops", loops)
    samples = V.positive_int("samples", samples, minimum=2)
    seed = V.seed("seed", seed)
    if not isinstance(method, str):
        raise TypeError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {type(method).__name__}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if proposal is None:
        proposal = "spike" if method == "conditional" else "target"
    if not isinstance(proposal, str):
        raise TypeError(f"proposal: expected one of {', '.join(map(repr, PROPOSALS))} or None, got {type(proposal).__name__}")
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal: expected one of {', '.join(map(repr, PROPOSALS))} or None, got {proposal!r}")
    if method == "plain" and proposal != "target":
        raise ValueError(f"proposal: method='plain' samples whole prompts from the task, so proposal must be "
                         f"'target' (or None), got {proposal!r}; importance sampling is method='conditional'")
    d, n = task.d, task.n
    rng = np.random.default_rng(seed)
    per_prompt = (d + 1) * (n + 1) + (8 * d * d if method == "conditional" else 0)
    chunk = max(1, _CHUNK_ENTRIES // per_prompt)
    # the spike weight also holds the powers R^1 ... R^loops of a d x d matrix (sphere_moment)
    powers = loops * d * d if proposal == "spike" else 0
    V.check_memory("task", f"monte_carlo_loss at d = {d}, n = {V.number_text(n)}, loops = {loops}",
                   min(chunk, samples) * (6 * per_prompt + powers) * 8,
                   "prompts per chunk x (6 x ((d + 1) x (n + 1) + 8 d^2 for method='conditional') "
                   "+ loops x d^2 for proposal='spike') x 8 bytes")
    V.check_work("samples", f"monte_carlo_loss with samples = {V.number_text(samples)} at d = {d}, "
                 f"n = {V.number_text(n)}", samples * (d + 1) * (n + 1), "samples x (d + 1) x (n + 1)")
    letters = _letters(task, A, u)
    lx_inv = np.linalg.inv(letters[0])
    noise = float(task.noise)
    P, Q = sparse_weights(A, u)
    tally = _Tally(samples)
    while tally.n < samples:
        b = min(chunk, samples - tally.n)
        w = np.ones(b)
        with np.errstate(over="ignore", invalid="ignore"):
            if method == "plain":
                h, w, T = _plain_draws(task, lambda Z: looped_forward(Z, P, Q, loops), b, rng, lx_inv)
            else:
                Z = rng.standard_normal((b, d, n))
                if proposal == "spike":
                    Z, w = _spike_draw(Z, loops, rng)
                T = np.sum(Z * Z, axis=(-2, -1))
                h = w * _conditional(Z, letters, loops, noise)
        tally.add(h, w, T)
    res = _result(tally, method, proposal, d, n, loops)
    if not res.trusted:
        hint = {"plain": "method='conditional' (the default) samples only X and importance-samples large prompts",
                "target": "proposal='spike' (the default) importance-samples large prompts"}.get(
                    method if method == "plain" else proposal, "more samples would help")
        _warn_untrusted("monte_carlo_loss", res, hint)
    return res


def _plain_draws(task, forward, b, rng, lx_inv):
    """b whole prompts from the task through `forward` (prompts -> outputs): the squared errors
    (the contributions), their weights (1) and the whitened squared radii T = tr(X^T Σx^{-1} X)."""
    X, y, x_q, y_q, _ = task.sample(b, rng)
    T = np.sum((lx_inv @ X) ** 2, axis=(-2, -1))
    err = prediction(forward(make_prompt(X, y, x_q))) - y_q
    return err * err, np.ones(b), T


def _warn_untrusted(name, res, hint):
    warnings.warn(f"{name}: the standard error cannot be trusted ({res.why}); {hint}", RuntimeWarning, stacklevel=3)


def monte_carlo_multilayer_loss(task: Task, As, us=None, samples: int = 100_000, seed: int = 0) -> MonteCarloResult:
    """Estimate the untied multi-layer loss E (yhat - y_q)^2 by simulation: whole prompts from the
    task through `multilayer_forward` with layer l's sparse weights (A_l, u_l), as
    monte_carlo_loss(method="plain") does for the looped model. As: L matrices (layer 1 first,
    any L >= 1), us: None or L vectors. Returns a MonteCarloResult (method "plain", proposal
    "target"; it unpacks as (mean, stderr)), with the tail diagnostics and the same warning
    when the standard error cannot be trusted (its unseen tail taken with loops = L). Limits as
    `monte_carlo_loss`'s plain method."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    if V.is_infinite(task.n):
        raise ValueError("task.n: Monte Carlo needs a finite n (n = inf cannot be sampled)")
    As = V.as_real_array("As", As, 3, allow_exact=False)
    if As.shape[1:] != (task.d, task.d) or len(As) < 1:
        raise ValueError(f"As: expected shape (L, {task.d}, {task.d}), got {As.shape}")
    if us is not None:
        us = V.as_real_array("us", us, 2, allow_exact=False)
        if us.shape != (len(As), task.d):
            raise ValueError(f"us: expected shape ({len(As)}, {task.d}), one vector per layer, got {us.shape}")
    samples = V.positive_int("samples", samples, minimum=2)
    seed = V.seed("seed", seed)
    d, n, L = task.d, task.n, len(As)
    rng = np.random.default_rng(seed)
    per_prompt = (d + 1) * (n + 1)
    chunk = max(1, _CHUNK_ENTRIES // per_prompt)
    V.check_memory("task", f"monte_carlo_multilayer_loss at d = {d}, n = {V.number_text(n)}",
                   6 * min(chunk, samples) * per_prompt * 8, "6 x prompts per chunk x (d + 1) x (n + 1) x 8 bytes")
    V.check_work("samples", f"monte_carlo_multilayer_loss with samples = {V.number_text(samples)} at d = {d}, "
                 f"n = {V.number_text(n)}", samples * per_prompt, "samples x (d + 1) x (n + 1)")
    weights = [sparse_weights(A, None if us is None else us[l]) for l, A in enumerate(As)]
    Ps, Qs = [p for p, _ in weights], [q for _, q in weights]
    lx_inv = np.linalg.inv(np.linalg.cholesky(np.asarray(task.sigma_x, dtype=float)))
    tally = _Tally(samples)
    while tally.n < samples:
        with np.errstate(over="ignore", invalid="ignore"):
            tally.add(*_plain_draws(task, lambda Z: multilayer_forward(Z, Ps, Qs), min(chunk, samples - tally.n), rng, lx_inv))
    res = _result(tally, "plain", "target", d, n, L)
    if not res.trusted:
        _warn_untrusted("monte_carlo_multilayer_loss", res, "more samples would help")
    return res
