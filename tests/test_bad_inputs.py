"""The sweep of bad inputs (issue 11, part 3): every public function refuses bad arguments with a
ValueError or TypeError whose message starts with the parameter's name, quickly, and inputs
too large for memory are refused up front with an estimate, before anything is allocated.

Each case is (id, call, expected exception, parameter name). `scripts/bad_input_sweep.py` runs
the same cases one by one in child processes with a time limit and a memory limit and sorts the
outcomes into clear / unclear / silent / hang.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import signal
import tempfile
import warnings

import numpy as np
import pytest

import looptheory as lt
from looptheory import _validate as V
from looptheory import training as T

NAN, INF = float("nan"), float("inf")
E2 = np.eye(2)
E3 = np.eye(3)


def _t(d=2, n=5, **kw):
    return lt.Task(d, n, **kw)


def _X(d=2, n=4, seed=0):
    return np.random.default_rng(seed).standard_normal((d, n))


def _Z(d=2, n=4, batch=None):
    shape = (d + 1, n + 1) if batch is None else (batch, d + 1, n + 1)
    return np.random.default_rng(0).standard_normal(shape)


# a flow as plot_flow reads it (duck typing: t and loss), so that no case integrates a real flow
_FLOW = {"t": [0.0, 1.0, 2.0], "loss": [1.0, 0.5, 0.25], "loops": 2, "dominance": [1.0, 1.0, 1.0]}


def _bad_checkpoint(**meta_changes):
    """A checkpoint file whose meta record was edited (as a damaged or hostile file would be)."""
    folder = tempfile.mkdtemp(prefix="looptheory-bad-input-")
    res = lt.train(_t(), "sparse", 1, steps=1, batch=2, progress=False)
    path = lt.save_checkpoint(os.path.join(folder, "ck"), res)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in meta_changes.items():
        if key in ("d", "n"):
            meta["task"][key] = value
        else:
            meta[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    os.remove(path)
    np.savez(path, **arrays)
    return path


def _params(model="sparse", d=2, loops=1):
    return T.init_params(model, d, loops, 0)


# (id, call, exception, name): the message must start with `name`.
CASES = [
    # --- Task -----------------------------------------------------------------------------------
    ("Task-d-str", lambda: lt.Task("3", 5), TypeError, "d"),
    ("Task-d-None", lambda: lt.Task(None, 5), TypeError, "d"),
    ("Task-d-fraction", lambda: lt.Task(2.5, 5), TypeError, "d"),
    ("Task-d-bool", lambda: lt.Task(True, 5), TypeError, "d"),
    ("Task-d-zero", lambda: lt.Task(0, 5), ValueError, "d"),
    ("Task-d-negative", lambda: lt.Task(-1, 5), ValueError, "d"),
    ("Task-d-complex", lambda: lt.Task(2 + 0j, 5), TypeError, "d"),
    ("Task-d-list", lambda: lt.Task([2], 5), TypeError, "d"),
    ("Task-d-nan", lambda: lt.Task(NAN, 5), TypeError, "d"),
    ("Task-d-huge", lambda: lt.Task(10**6, 10), ValueError, "d"),
    ("Task-n-str", lambda: lt.Task(2, "5"), TypeError, "n"),
    ("Task-n-None", lambda: lt.Task(2, None), TypeError, "n"),
    ("Task-n-fraction", lambda: lt.Task(2, 2.5), TypeError, "n"),
    ("Task-n-zero", lambda: lt.Task(2, 0), ValueError, "n"),
    ("Task-n-negative", lambda: lt.Task(2, -3), ValueError, "n"),
    ("Task-n-nan", lambda: lt.Task(2, NAN), TypeError, "n"),
    ("Task-n-minus-inf", lambda: lt.Task(2, -INF), TypeError, "n"),
    ("Task-n-bool", lambda: lt.Task(2, True), TypeError, "n"),
    ("Task-n-complex", lambda: lt.Task(2, 5j), TypeError, "n"),
    ("Task-sigma_x-str", lambda: lt.Task(2, 5, sigma_x="abc"), TypeError, "sigma_x"),
    ("Task-sigma_x-shape", lambda: lt.Task(2, 5, sigma_x=E3), ValueError, "sigma_x"),
    ("Task-sigma_x-indefinite", lambda: lt.Task(2, 5, sigma_x=[[1, 2], [2, 1]]), ValueError, "sigma_x"),
    ("Task-sigma_x-nan", lambda: lt.Task(2, 5, sigma_x=[[1, 0], [0, NAN]]), ValueError, "sigma_x"),
    ("Task-sigma_x-complex", lambda: lt.Task(2, 5, sigma_x=E2 * 1j), TypeError, "sigma_x"),
    ("Task-sigma_x-ragged", lambda: lt.Task(2, 5, sigma_x=[[1, 0], [0]]), ValueError, "sigma_x"),
    ("Task-sigma_w-negative", lambda: lt.Task(2, 5, sigma_w=-E2), ValueError, "sigma_w"),
    ("Task-sigma_w-nonsymmetric", lambda: lt.Task(2, 5, sigma_w=[[1, 0], [1, 1]]), ValueError, "sigma_w"),
    ("Task-noise-negative", lambda: lt.Task(2, 5, noise=-1), ValueError, "noise"),
    ("Task-noise-nan", lambda: lt.Task(2, 5, noise=NAN), ValueError, "noise"),
    ("Task-noise-str", lambda: lt.Task(2, 5, noise="0.1"), TypeError, "noise"),
    ("Task-noise-bool", lambda: lt.Task(2, 5, noise=True), TypeError, "noise"),
    ("Task-noise-complex", lambda: lt.Task(2, 5, noise=1j), TypeError, "noise"),
    ("Task-noise-None", lambda: lt.Task(2, 5, noise=None), TypeError, "noise"),
    ("Task.gatmiry-sigma_x-str", lambda: lt.Task.gatmiry(2, 5, sigma_x="x"), TypeError, "sigma_x"),
    ("Task.gatmiry-d-zero", lambda: lt.Task.gatmiry(0, 5), ValueError, "d"),
    ("Task.gatmiry-d-huge", lambda: lt.Task.gatmiry(10**6, 5), ValueError, "d"),
    ("Task.with_n-zero", lambda: _t().with_n(0), ValueError, "n"),
    ("Task.sample-batch-zero", lambda: _t().sample(0, 0), ValueError, "batch"),
    ("Task.sample-batch-fraction", lambda: _t().sample(2.5, 0), TypeError, "batch"),
    ("Task.sample-rng-negative", lambda: _t().sample(3, -1), ValueError, "rng"),
    ("Task.sample-rng-str", lambda: _t().sample(3, "abc"), TypeError, "rng"),
    ("Task.sample-rng-float", lambda: _t().sample(3, 1.5), TypeError, "rng"),
    ("Task.sample-n-huge", lambda: _t(2, 10**9).sample(1, 0), ValueError, "n"),
    ("Task.sample-batch-huge", lambda: _t(2, 5).sample(10**10, 0), ValueError, "batch"),
    # --- model.py -------------------------------------------------------------------------------
    ("make_prompt-X-str", lambda: lt.make_prompt("abc", np.zeros(4), np.zeros(2)), TypeError, "X"),
    ("make_prompt-X-None", lambda: lt.make_prompt(None, np.zeros(4), np.zeros(2)), TypeError, "X"),
    ("make_prompt-X-complex", lambda: lt.make_prompt(_X() * 1j, np.zeros(4), np.zeros(2)), TypeError, "X"),
    ("make_prompt-X-bool", lambda: lt.make_prompt(_X() > 0, np.zeros(4), np.zeros(2)), TypeError, "X"),
    ("make_prompt-X-no-examples", lambda: lt.make_prompt(np.zeros((2, 0)), np.zeros(0), np.zeros(2)), ValueError, "X"),
    ("make_prompt-X-no-rows", lambda: lt.make_prompt(np.zeros((0, 3)), np.zeros(3), np.zeros(0)), ValueError, "X"),
    ("make_prompt-y-nan", lambda: lt.make_prompt(_X(), [0, NAN, 0, 0], np.zeros(2)), ValueError, "y"),
    ("make_prompt-x_q-length", lambda: lt.make_prompt(_X(), np.zeros(4), np.zeros(3)), ValueError, "x_q"),
    ("make_prompt-batch-mismatch", lambda: lt.make_prompt(np.zeros((2, 2, 4)), np.zeros((3, 4)), np.zeros(2)),
     ValueError, "y"),
    ("attention_layer-Z-str", lambda: lt.attention_layer("abc", E3, E3), TypeError, "Z"),
    ("attention_layer-Z-nan", lambda: lt.attention_layer(np.full((3, 5), NAN), E3, E3), ValueError, "Z"),
    ("attention_layer-Z-no-examples", lambda: lt.attention_layer(np.ones((3, 1)), E3, E3), ValueError, "Z"),
    ("attention_layer-P-shape", lambda: lt.attention_layer(_Z(), E2, E3), ValueError, "P"),
    ("attention_layer-Q-None", lambda: lt.attention_layer(_Z(), E3, None), TypeError, "Q"),
    ("looped_forward-loops-str", lambda: lt.looped_forward(_Z(), E3, E3, "3"), TypeError, "loops"),
    ("looped_forward-loops-zero", lambda: lt.looped_forward(_Z(), E3, E3, 0), ValueError, "loops"),
    ("looped_forward-loops-fraction", lambda: lt.looped_forward(_Z(), E3, E3, 2.5), TypeError, "loops"),
    ("looped_forward-loops-bool", lambda: lt.looped_forward(_Z(), E3, E3, True), TypeError, "loops"),
    ("looped_forward-loops-nan", lambda: lt.looped_forward(_Z(), E3, E3, NAN), TypeError, "loops"),
    ("looped_forward-Z-None", lambda: lt.looped_forward(None, E3, E3, 1), TypeError, "Z"),
    ("looped_forward-P-complex", lambda: lt.looped_forward(_Z(), E3 * 1j, E3, 1), TypeError, "P"),
    ("looped_forward-Q-shape", lambda: lt.looped_forward(_Z(), E3, E2, 1), ValueError, "Q"),
    ("multilayer_forward-Ps-None", lambda: lt.multilayer_forward(_Z(), None, [E3]), TypeError, "Ps"),
    ("multilayer_forward-Ps-str", lambda: lt.multilayer_forward(_Z(), "ab", [E3]), TypeError, "Ps"),
    ("multilayer_forward-Ps-length", lambda: lt.multilayer_forward(_Z(), [E3, E3], [E3]), ValueError, "Ps"),
    ("multilayer_forward-Ps-shape", lambda: lt.multilayer_forward(_Z(), [E2], [E3]), ValueError, "Ps"),
    ("multilayer_forward-Qs-nan", lambda: lt.multilayer_forward(_Z(), [E3], [E3 * NAN]), ValueError, "Qs"),
    ("preconditioned_gd-return_path-str", lambda: lt.preconditioned_gd(_X(), np.zeros(4), E2, 1, return_path="no"),
     TypeError, "return_path"),
    ("preconditioned_gd-loops-negative", lambda: lt.preconditioned_gd(_X(), np.zeros(4), E2, -1), ValueError, "loops"),
    ("preconditioned_gd-w0-shape", lambda: lt.preconditioned_gd(_X(), np.zeros(4), E2, 1, w0=np.zeros(3)),
     ValueError, "w0"),
    ("preconditioned_gd-B-nan", lambda: lt.preconditioned_gd(_X(), np.zeros(4), E2 * NAN, 1), ValueError, "B"),
    ("preconditioned_gd-X-no-examples", lambda: lt.preconditioned_gd(np.zeros((2, 0)), np.zeros(0), E2, 1),
     ValueError, "X"),
    ("prediction-Z-str", lambda: lt.prediction("abc"), TypeError, "Z"),
    ("prediction-Z-1d", lambda: lt.prediction(np.zeros(3)), ValueError, "Z"),
    ("prediction-Z-None", lambda: lt.prediction(None), TypeError, "Z"),
    ("sparse_weights-A-str", lambda: lt.sparse_weights("abc"), TypeError, "A"),
    ("sparse_weights-A-shape", lambda: lt.sparse_weights(np.ones((2, 3))), ValueError, "A"),
    ("sparse_weights-A-nan", lambda: lt.sparse_weights(E2 * NAN), ValueError, "A"),
    ("sparse_weights-A-empty", lambda: lt.sparse_weights(np.zeros((0, 0))), ValueError, "A"),
    ("sparse_weights-u-length", lambda: lt.sparse_weights(E2, [1.0, 2.0, 3.0]), ValueError, "u"),
    # --- Monte Carlo ----------------------------------------------------------------------------
    ("monte_carlo_loss-task-str", lambda: lt.monte_carlo_loss("task", E2, 1), TypeError, "task"),
    ("monte_carlo_loss-task-inf-n", lambda: lt.monte_carlo_loss(_t(2, INF), E2, 1), ValueError, "task"),
    ("monte_carlo_loss-A-shape", lambda: lt.monte_carlo_loss(_t(), E3, 1), ValueError, "A"),
    ("monte_carlo_loss-loops-zero", lambda: lt.monte_carlo_loss(_t(), E2, 0), ValueError, "loops"),
    ("monte_carlo_loss-samples-one", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=1), ValueError, "samples"),
    ("monte_carlo_loss-samples-fraction", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=2.5), TypeError, "samples"),
    ("monte_carlo_loss-samples-str", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples="10"), TypeError, "samples"),
    ("monte_carlo_loss-seed-negative", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, seed=-1), ValueError, "seed"),
    ("monte_carlo_loss-seed-str", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, seed="abc"), TypeError, "seed"),
    ("monte_carlo_loss-seed-float", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, seed=1.5), TypeError, "seed"),
    ("monte_carlo_loss-seed-bool", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, seed=True), TypeError, "seed"),
    ("monte_carlo_loss-samples-huge", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10**12), ValueError, "samples"),
    ("monte_carlo_loss-n-huge", lambda: lt.monte_carlo_loss(_t(2, 10**9), E2, 1, samples=10), ValueError, "task"),
    ("monte_carlo_loss-method-unknown", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, method="exact"), ValueError, "method"),
    ("monte_carlo_loss-method-int", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, method=1), TypeError, "method"),
    ("monte_carlo_loss-proposal-unknown", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, proposal="radial"), ValueError, "proposal"),
    ("monte_carlo_loss-proposal-float", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, proposal=0.5), TypeError, "proposal"),
    ("monte_carlo_loss-proposal-plain", lambda: lt.monte_carlo_loss(_t(), E2, 1, samples=10, method="plain", proposal="spike"), ValueError, "proposal"),
    ("conditional_loss-task-str", lambda: lt.conditional_loss("task", E2, 1, _X(2, 5)), TypeError, "task"),
    ("conditional_loss-X-shape", lambda: lt.conditional_loss(_t(), E2, 1, _X(2, 4)), ValueError, "X"),
    ("conditional_loss-X-nan", lambda: lt.conditional_loss(_t(), E2, 1, _X(2, 5) * NAN), ValueError, "X"),
    ("conditional_loss-A-shape", lambda: lt.conditional_loss(_t(), E3, 1, _X(2, 5)), ValueError, "A"),
    ("conditional_loss-loops-zero", lambda: lt.conditional_loss(_t(), E2, 0, _X(2, 5)), ValueError, "loops"),
    ("conditional_loss-u-length", lambda: lt.conditional_loss(_t(), E2, 1, _X(2, 5), [1.0]), ValueError, "u"),
    # --- exact loss -----------------------------------------------------------------------------
    ("population_loss-task-str", lambda: lt.population_loss("task", E2, 1), TypeError, "task"),
    ("population_loss-A-shape", lambda: lt.population_loss(_t(), E3, 1), ValueError, "A"),
    ("population_loss-A-nan", lambda: lt.population_loss(_t(), [[1, NAN], [0, 1]], 1), ValueError, "A"),
    ("population_loss-A-str", lambda: lt.population_loss(_t(), "abc", 1), TypeError, "A"),
    ("population_loss-A-complex", lambda: lt.population_loss(_t(), E2 * 1j, 1), TypeError, "A"),
    ("population_loss-loops-zero", lambda: lt.population_loss(_t(), E2, 0), ValueError, "loops"),
    ("population_loss_grad-fallback-str", lambda: lt.population_loss_grad(_t(), E2, 2, fallback="no"), TypeError, "fallback"),
    ("population_loss-loops-above-limit", lambda: lt.population_loss(_t(), E2, lt.MAX_LOOPS + 1), ValueError, "loops"),
    ("population_loss-loops-fraction", lambda: lt.population_loss(_t(), E2, 2.5), TypeError, "loops"),
    ("population_loss-loops-str", lambda: lt.population_loss(_t(), E2, "2"), TypeError, "loops"),
    ("population_loss-u-shape", lambda: lt.population_loss(_t(), E2, 1, u=[1.0]), ValueError, "u"),
    ("population_loss-u-inf", lambda: lt.population_loss(_t(), E2, 1, u=[1.0, INF]), ValueError, "u"),
    ("population_loss-exact-str", lambda: lt.population_loss(_t(), E2, 1, exact="no"), TypeError, "exact"),
    ("population_loss-exact-int", lambda: lt.population_loss(_t(), E2, 1, exact=1), TypeError, "exact"),
    ("population_loss-exact-None", lambda: lt.population_loss(_t(), E2, 1, exact=None), TypeError, "exact"),
    ("population_loss-exact-float-A", lambda: lt.population_loss(_t(), E2 * 0.5, 1, exact=True), TypeError, "A"),
    ("population_loss-d-huge", lambda: lt.population_loss(_t(2000, 20), np.zeros((2000, 2000)), 6), ValueError, "task"),
    # d = 300: 291 trie nodes x d^2 Fractions (the split layout; d = 60 fits since it)
    ("population_loss-exact-d-huge", lambda: lt.population_loss(_t(300, 20), np.zeros((300, 300), int), 6, exact=True),
     ValueError, "task"),
    ("population_loss_grad-task-str", lambda: lt.population_loss_grad("task", E2, 1), TypeError, "task"),
    ("population_loss_grad-loops-zero", lambda: lt.population_loss_grad(_t(), E2, 0), ValueError, "loops"),
    ("population_loss_grad-A-nan", lambda: lt.population_loss_grad(_t(), E2 * NAN, 1), ValueError, "A"),
    ("population_loss_grad-d-huge", lambda: lt.population_loss_grad(_t(2000, 20), np.zeros((2000, 2000)), 5),
     ValueError, "task"),
    # --- moments --------------------------------------------------------------------------------
    ("trace_moments-kmax-negative", lambda: lt.trace_moments(-1, 3, 2), ValueError, "kmax"),
    ("trace_moments-kmax-float", lambda: lt.trace_moments(2.0, 3, 2), TypeError, "kmax"),
    ("trace_moments-kmax-bool", lambda: lt.trace_moments(True, 3, 2), TypeError, "kmax"),
    ("trace_moments-kmax-str", lambda: lt.trace_moments("3", 3, 2), TypeError, "kmax"),
    ("trace_moments-kmax-None", lambda: lt.trace_moments(None, 3, 2), TypeError, "kmax"),
    ("trace_moments-n-zero", lambda: lt.trace_moments(3, 0, 2), ValueError, "n"),
    ("trace_moments-n-fraction", lambda: lt.trace_moments(3, 2.5, 2), TypeError, "n"),
    ("trace_moments-n-str", lambda: lt.trace_moments(3, "5", 2), TypeError, "n"),
    ("trace_moments-n-nan", lambda: lt.trace_moments(3, NAN, 2), TypeError, "n"),
    ("trace_moments-d-zero", lambda: lt.trace_moments(3, 5, 0), ValueError, "d"),
    ("trace_moments-d-inf", lambda: lt.trace_moments(3, 5, INF), TypeError, "d"),
    ("trace_moments-kmax-huge", lambda: lt.trace_moments(10**6, 20, 10), ValueError, "kmax"),
    ("trace_moments-kmax-huge-n", lambda: lt.trace_moments(2000, 10**400, 2), ValueError, "kmax"),
    ("trace_moments-kmax-symbolic-huge", lambda: lt.trace_moments(10**4, __import__("sympy").Symbol("n"), 3),
     ValueError, "kmax"),
    ("wishart_trace_moments-kmax-negative", lambda: lt.wishart_trace_moments(-1, 3, 2), ValueError, "kmax"),
    ("wishart_trace_moments-n-inf", lambda: lt.wishart_trace_moments(3, INF, 2), TypeError, "n"),
    ("wishart_trace_moments-d-str", lambda: lt.wishart_trace_moments(3, 5, "2"), TypeError, "d"),
    ("wishart_trace_moments-kmax-huge", lambda: lt.wishart_trace_moments(10**6, 20, 10), ValueError, "kmax"),
    # --- the scalar family and the optimum ------------------------------------------------------
    ("optimal_scale-task-str", lambda: lt.optimal_scale("task", 2), TypeError, "task"),
    ("optimal_scale-loops-zero", lambda: lt.optimal_scale(_t(), 0), ValueError, "loops"),
    ("optimal_scale-loops-huge", lambda: lt.optimal_scale(_t(), 3000), ValueError, "loops"),
    ("scale_loss-gamma-nan", lambda: lt.scale_loss(_t(), 2, NAN), ValueError, "gamma"),
    ("scale_loss-gamma-str", lambda: lt.scale_loss(_t(), 2, "a"), TypeError, "gamma"),
    ("scale_loss-gamma-None", lambda: lt.scale_loss(_t(), 2, None), TypeError, "gamma"),
    ("scale_loss-loops-huge", lambda: lt.scale_loss(_t(), 3000, 0.5), ValueError, "loops"),
    ("scale_loss-task-str", lambda: lt.scale_loss("task", 2, 0.5), TypeError, "task"),
    ("optimal_preconditioner-task-str", lambda: lt.optimal_preconditioner("task", 1), TypeError, "task"),
    ("optimal_preconditioner-loops-above-limit", lambda: lt.optimal_preconditioner(_t(), 7), ValueError, "loops"),
    ("optimal_preconditioner-starts-zero", lambda: lt.optimal_preconditioner(_t(), 1, starts=0), ValueError, "starts"),
    ("optimal_preconditioner-starts-nan", lambda: lt.optimal_preconditioner(_t(), 1, starts=NAN), TypeError, "starts"),
    ("optimal_preconditioner-seed-negative", lambda: lt.optimal_preconditioner(_t(), 1, seed=-1), ValueError, "seed"),
    ("optimal_preconditioner-seed-str", lambda: lt.optimal_preconditioner(_t(), 1, seed="abc"), TypeError, "seed"),
    ("optimal_preconditioner-with_u-str", lambda: lt.optimal_preconditioner(_t(), 1, with_u="no"), TypeError, "with_u"),
    ("optimal_preconditioner-d-huge", lambda: lt.optimal_preconditioner(_t(2000, 20), 6), ValueError, "task"),
    # --- spectral family ------------------------------------------------------------------------
    ("spectral_loss-a-str", lambda: lt.spectral_loss("abc", 5, 1), TypeError, "a"),
    ("spectral_loss-a-empty", lambda: lt.spectral_loss([], 5, 1), ValueError, "a"),
    ("spectral_loss-a-nan", lambda: lt.spectral_loss([NAN], 5, 1), ValueError, "a"),
    ("spectral_loss-n-zero", lambda: lt.spectral_loss([0.5], 0, 1), ValueError, "n"),
    ("spectral_loss-n-str", lambda: lt.spectral_loss([0.5], "5", 1), TypeError, "n"),
    ("spectral_loss-loops-above-limit", lambda: lt.spectral_loss([0.5], 5, 7), ValueError, "loops"),
    ("spectral_loss-noise-negative", lambda: lt.spectral_loss([0.5], 5, 1, noise=-1), ValueError, "noise"),
    ("spectral_loss-multiplicity-fraction", lambda: lt.spectral_loss([0.5], 5, 1, multiplicity=[1.5]),
     ValueError, "multiplicity"),
    ("spectral_loss-multiplicity-shape", lambda: lt.spectral_loss([0.5, 0.2], 5, 1, multiplicity=[1]),
     ValueError, "multiplicity"),
    ("spectral_loss_grad-a-complex", lambda: lt.spectral_loss_grad([0.5j], 5, 1), TypeError, "a"),
    ("spectral_loss_grad-loops-zero", lambda: lt.spectral_loss_grad([0.5], 5, 0), ValueError, "loops"),
    # --- flow and dominance ---------------------------------------------------------------------
    ("gradient_flow-task-str", lambda: lt.gradient_flow("task", E2, 1), TypeError, "task"),
    ("gradient_flow-A0-nan", lambda: lt.gradient_flow(_t(), E2 * NAN, 1), ValueError, "A0"),
    ("gradient_flow-loops-zero", lambda: lt.gradient_flow(_t(), E2, 0), ValueError, "loops"),
    ("gradient_flow-u0-shape", lambda: lt.gradient_flow(_t(), E2, 1, u0=[1.0]), ValueError, "u0"),
    ("gradient_flow-t_max-zero", lambda: lt.gradient_flow(_t(), E2, 1, t_max=0), ValueError, "t_max"),
    ("gradient_flow-t_max-nan", lambda: lt.gradient_flow(_t(), E2, 1, t_max=NAN), ValueError, "t_max"),
    ("gradient_flow-tol-negative", lambda: lt.gradient_flow(_t(), E2, 1, tol=-1.0), ValueError, "tol"),
    ("gradient_flow-rtol-zero", lambda: lt.gradient_flow(_t(), E2, 1, rtol=0.0), ValueError, "rtol"),
    ("gradient_flow-rtol-nan", lambda: lt.gradient_flow(_t(), E2, 1, rtol=NAN), ValueError, "rtol"),
    ("gradient_flow-atol-zero", lambda: lt.gradient_flow(_t(), E2, 1, atol=0.0), ValueError, "atol"),
    ("gradient_flow-atol-nan", lambda: lt.gradient_flow(_t(), E2, 1, atol=NAN), ValueError, "atol"),
    ("gradient_flow-atol-str", lambda: lt.gradient_flow(_t(), E2, 1, atol="1e-9"), TypeError, "atol"),
    ("gradient_flow-A_ref-shape", lambda: lt.gradient_flow(_t(), E2, 1, A_ref=E3), ValueError, "A_ref"),
    ("dominance_ratio-task-str", lambda: lt.dominance_ratio("task", E2, 1), TypeError, "task"),
    ("dominance_ratio-A-shape", lambda: lt.dominance_ratio(_t(), E3, 1), ValueError, "A"),
    ("dominance_ratio-loops-zero", lambda: lt.dominance_ratio(_t(), E2, 0), ValueError, "loops"),
    ("dominance_ratio-f_star-nan", lambda: lt.dominance_ratio(_t(), E2, 1, f_star=NAN), ValueError, "f_star"),
    ("dominance_ratio-f_star-str", lambda: lt.dominance_ratio(_t(), E2, 1, f_star="0"), TypeError, "f_star"),
    ("dominance_ratio-f_star-negative", lambda: lt.dominance_ratio(_t(), E2, 1, f_star=-1.0), ValueError, "f_star"),
    ("worst_dominance-task-str", lambda: lt.worst_dominance("task", 1, 0.1, 0.0), TypeError, "task"),
    ("worst_dominance-loops-zero", lambda: lt.worst_dominance(_t(), 0, 0.1, 0.0), ValueError, "loops"),
    ("worst_dominance-rho-nan", lambda: lt.worst_dominance(_t(), 1, NAN, 0.0), ValueError, "rho"),
    ("worst_dominance-rho-negative", lambda: lt.worst_dominance(_t(), 1, -0.1, 0.0), ValueError, "rho"),
    ("worst_dominance-f_star-nan", lambda: lt.worst_dominance(_t(), 1, 0.1, NAN), ValueError, "f_star"),
    ("worst_dominance-f_star-None", lambda: lt.worst_dominance(_t(), 1, 0.1, None), TypeError, "f_star"),
    ("worst_dominance-excess-str", lambda: lt.worst_dominance(_t(), 1, 0.1, 0.0, excess="no"), TypeError, "excess"),
    ("worst_dominance-starts-zero", lambda: lt.worst_dominance(_t(), 1, 0.1, 0.0, starts=0), ValueError, "starts"),
    ("worst_dominance-starts-nan", lambda: lt.worst_dominance(_t(), 1, 0.1, 0.0, starts=NAN), TypeError, "starts"),
    ("worst_dominance-seed-negative", lambda: lt.worst_dominance(_t(), 1, 0.1, 0.0, seed=-1), ValueError, "seed"),
    ("worst_dominance-seed-str", lambda: lt.worst_dominance(_t(), 1, 0.1, 0.0, seed="abc"), TypeError, "seed"),
    ("worst_dominance-candidates-shape", lambda: lt.worst_dominance(_t(), 1, 0.1, 0.0, candidates=[(E3, "x")]),
     ValueError, "candidates"),
    ("worst_dominance-candidates-str", lambda: lt.worst_dominance(_t(), 1, 0.1, 0.0, candidates="abc"),
     TypeError, "candidates"),
    ("worst_dominance_spectral-d-fraction", lambda: lt.worst_dominance_spectral(2.5, 5, 1, 0.1, 0.0), TypeError, "d"),
    ("worst_dominance_spectral-d-zero", lambda: lt.worst_dominance_spectral(0, 5, 1, 0.1, 0.0), ValueError, "d"),
    ("worst_dominance_spectral-d-str", lambda: lt.worst_dominance_spectral("3", 5, 1, 0.1, 0.0), TypeError, "d"),
    ("worst_dominance_spectral-n-zero", lambda: lt.worst_dominance_spectral(2, 0, 1, 0.1, 0.0), ValueError, "n"),
    ("worst_dominance_spectral-loops-above-limit", lambda: lt.worst_dominance_spectral(2, 5, 7, 0.1, 0.0),
     ValueError, "loops"),
    ("worst_dominance_spectral-rho-nan", lambda: lt.worst_dominance_spectral(2, 5, 1, NAN, 0.0), ValueError, "rho"),
    ("worst_dominance_spectral-f_star-nan", lambda: lt.worst_dominance_spectral(2, 5, 1, 0.1, NAN), ValueError, "f_star"),
    ("worst_dominance_spectral-excess-str", lambda: lt.worst_dominance_spectral(2, 5, 1, 0.1, 0.0, excess="no"),
     TypeError, "excess"),
    ("worst_dominance_spectral-starts-zero", lambda: lt.worst_dominance_spectral(2, 5, 1, 0.1, 0.0, starts=0),
     ValueError, "starts"),
    ("worst_dominance_spectral-seed-negative", lambda: lt.worst_dominance_spectral(2, 5, 1, 0.1, 0.0, seed=-1),
     ValueError, "seed"),
    ("worst_dominance_spectral-groups-zero", lambda: lt.worst_dominance_spectral(2, 5, 1, 0.1, 0.0, groups=0),
     ValueError, "groups"),
    ("worst_dominance_spectral-groups-fraction", lambda: lt.worst_dominance_spectral(2, 5, 1, 0.1, 0.0, groups=2.5),
     TypeError, "groups"),
    # --- claims and experiments (refused before anything runs) ----------------------------------
    ("check_claims-ids-unknown", lambda: lt.check_claims(["X9"]), ValueError, "ids"),
    ("check_claims-ids-int", lambda: lt.check_claims(5), TypeError, "ids"),
    ("check_claims-quick-str", lambda: lt.check_claims(["C1"], quick="no"), TypeError, "quick"),
    ("check_claims-progress-str", lambda: lt.check_claims(["C1"], quick=True, progress="x"), TypeError, "progress"),
    ("run_experiments-ids-unknown", lambda: lt.run_experiments(["E9"]), ValueError, "ids"),
    ("run_experiments-ids-int", lambda: lt.run_experiments(5), TypeError, "ids"),
    ("run_experiments-quick-str", lambda: lt.run_experiments(["E1"], quick="no"), TypeError, "quick"),
    ("run_experiments-progress-str", lambda: lt.run_experiments(["E1"], quick=True, progress="x"), TypeError, "progress"),
    ("run_experiments-bars-str", lambda: lt.run_experiments(["E1"], quick=True, bars="yes"), TypeError, "bars"),
    # --- Chen et al. ----------------------------------------------------------------------------
    ("chen_prompt-X-str", lambda: lt.chen_prompt("abc", np.zeros(4)), TypeError, "X"),
    ("chen_prompt-X-1d", lambda: lt.chen_prompt(np.zeros(3), np.zeros(3)), ValueError, "X"),
    ("chen_prompt-w0-shape", lambda: lt.chen_prompt(_X(), np.zeros(4), w0=np.zeros(3)), ValueError, "w0"),
    ("chen_prompt-y-nan", lambda: lt.chen_prompt(_X(), np.full(4, NAN)), ValueError, "y"),
    ("chen_weights-d-zero", lambda: lt.chen_weights(0, 1.0), ValueError, "d"),
    ("chen_weights-d-fraction", lambda: lt.chen_weights(2.5, 1.0), TypeError, "d"),
    ("chen_weights-eta-negative", lambda: lt.chen_weights(2, -1.0), ValueError, "eta"),
    ("chen_weights-eta-nan", lambda: lt.chen_weights(2, NAN), ValueError, "eta"),
    ("chen_weights-eta-str", lambda: lt.chen_weights(2, "1"), TypeError, "eta"),
    ("chen_weights-d-huge", lambda: lt.chen_weights(10**6, 1.0), ValueError, "d"),
    ("chen_readout-Z-str", lambda: lt.chen_readout("abc"), TypeError, "Z"),
    ("chen_readout-Z-1d", lambda: lt.chen_readout(np.zeros(3)), ValueError, "Z"),
    ("chen_readout-Z-None", lambda: lt.chen_readout(None), TypeError, "Z"),
    ("chen_forward-update-unknown", lambda: lt.chen_forward(_Z(), E3, E3, 1, update="x"), ValueError, "update"),
    ("chen_forward-update-None", lambda: lt.chen_forward(_Z(), E3, E3, 1, update=None), ValueError, "update"),
    ("chen_forward-loops-zero", lambda: lt.chen_forward(_Z(), E3, E3, 0, update="last"), ValueError, "loops"),
    ("chen_forward-Z-nan", lambda: lt.chen_forward(np.full((3, 5), NAN), E3, E3, 1), ValueError, "Z"),
    ("prompt_condition_number-X-str", lambda: lt.prompt_condition_number("abc"), TypeError, "X"),
    ("prompt_condition_number-X-nan", lambda: lt.prompt_condition_number(E2 * NAN), ValueError, "X"),
    ("prompt_condition_number-X-1d", lambda: lt.prompt_condition_number(np.zeros(3)), ValueError, "X"),
    ("gd_error_after-loops-negative", lambda: lt.gd_error_after(E2, np.ones(2), -1), ValueError, "loops"),
    ("gd_error_after-loops-empty", lambda: lt.gd_error_after(E2, np.ones(2), []), ValueError, "loops"),
    ("gd_error_after-loops-fraction", lambda: lt.gd_error_after(E2, np.ones(2), [1, 2.5]), TypeError, "loops"),
    ("gd_error_after-eta-zero", lambda: lt.gd_error_after(E2, np.ones(2), 1, eta=0.0), ValueError, "eta"),
    ("gd_error_after-eta-nan", lambda: lt.gd_error_after(E2, np.ones(2), 1, eta=NAN), ValueError, "eta"),
    ("gd_error_after-w0-shape", lambda: lt.gd_error_after(E2, np.ones(2), 1, w0=np.zeros(3)), ValueError, "w0"),
    ("gd_error_after-y-shape", lambda: lt.gd_error_after(E2, np.ones(3), 1), ValueError, "y"),
    ("gd_bounds-loops-str", lambda: lt.gd_bounds(E2, np.ones(2), "3"), TypeError, "loops"),
    ("gd_bounds-w0-nan", lambda: lt.gd_bounds(E2, np.ones(2), 1, w0=[NAN, 0]), ValueError, "w0"),
    ("gd_bounds-X-complex", lambda: lt.gd_bounds(E2 * 1j, np.ones(2), 1), TypeError, "X"),
    # --- diagnostics ----------------------------------------------------------------------------
    ("taylor_test-f-str", lambda: lt.taylor_test("f", np.cos, np.zeros(2), np.ones(2)), TypeError, "f"),
    ("taylor_test-grad-None", lambda: lt.taylor_test(np.sum, None, np.zeros(2), np.ones(2)), TypeError, "grad"),
    ("taylor_test-x-str", lambda: lt.taylor_test(np.sum, np.ones_like, "abc", np.ones(2)), TypeError, "x"),
    ("taylor_test-x-nan", lambda: lt.taylor_test(np.sum, np.ones_like, [NAN, 0], np.ones(2)), ValueError, "x"),
    ("taylor_test-direction-shape", lambda: lt.taylor_test(np.sum, np.ones_like, np.zeros(2), np.ones(3)),
     ValueError, "direction"),
    ("taylor_test-h-zero", lambda: lt.taylor_test(np.sum, np.ones_like, np.zeros(2), np.ones(2), h=[1e-3, 0.0]),
     ValueError, "h"),
    ("taylor_test-h-nan", lambda: lt.taylor_test(np.sum, np.ones_like, np.zeros(2), np.ones(2), h=NAN), ValueError, "h"),
    ("taylor_test-h-str", lambda: lt.taylor_test(np.sum, np.ones_like, np.zeros(2), np.ones(2), h="a"), TypeError, "h"),
    ("finite_difference_gradient-f-None", lambda: lt.finite_difference_gradient(None, np.zeros(2)), TypeError, "f"),
    ("finite_difference_gradient-h-zero", lambda: lt.finite_difference_gradient(np.sum, np.zeros(2), h=0.0),
     ValueError, "h"),
    ("finite_difference_gradient-h-nan", lambda: lt.finite_difference_gradient(np.sum, np.zeros(2), h=NAN),
     ValueError, "h"),
    ("finite_difference_gradient-h-negative", lambda: lt.finite_difference_gradient(np.sum, np.zeros(2), h=-1e-6),
     ValueError, "h"),
    ("finite_difference_gradient-x-str", lambda: lt.finite_difference_gradient(np.sum, "abc"), TypeError, "x"),
    ("finite_difference_gradient-x-inf", lambda: lt.finite_difference_gradient(np.sum, [INF]), ValueError, "x"),
    # --- training -------------------------------------------------------------------------------
    ("train-task-str", lambda: lt.train("task", steps=1), TypeError, "task"),
    ("train-task-inf-n", lambda: lt.train(_t(2, INF), steps=1), ValueError, "task"),
    ("train-model-unknown", lambda: lt.train(_t(), "dense", steps=1), ValueError, "model"),
    ("train-optimizer-unknown", lambda: lt.train(_t(), optimizer="rmsprop", steps=1), ValueError, "optimizer"),
    ("train-loops-zero", lambda: lt.train(_t(), loops=0, steps=1), ValueError, "loops"),
    ("train-steps-zero", lambda: lt.train(_t(), steps=0), ValueError, "steps"),
    ("train-batch-zero", lambda: lt.train(_t(), steps=1, batch=0), ValueError, "batch"),
    ("train-lr-zero", lambda: lt.train(_t(), steps=1, lr=0.0), ValueError, "lr"),
    ("train-lr-nan", lambda: lt.train(_t(), steps=1, lr=NAN), ValueError, "lr"),
    ("train-lr_final-zero", lambda: lt.train(_t(), steps=1, lr_final=0.0), ValueError, "lr_final"),
    ("train-seed-negative", lambda: lt.train(_t(), steps=1, seed=-1), ValueError, "seed"),
    ("train-seed-str", lambda: lt.train(_t(), steps=1, seed="abc"), TypeError, "seed"),
    ("train-init_scale-negative", lambda: lt.train(_t(), steps=1, init_scale=-1.0), ValueError, "init_scale"),
    ("train-init_scale-nan", lambda: lt.train(_t(), steps=1, init_scale=NAN), ValueError, "init_scale"),
    ("train-average-above-one", lambda: lt.train(_t(), steps=1, average=1.5), ValueError, "average"),
    ("train-average-nan", lambda: lt.train(_t(), steps=1, average=NAN), ValueError, "average"),
    ("train-clip-zero", lambda: lt.train(_t(), steps=1, clip=0.0), ValueError, "clip"),
    ("train-progress-str", lambda: lt.train(_t(), steps=1, batch=2, progress="yes"), TypeError, "progress"),
    ("train-checkpoint-int", lambda: lt.train(_t(), steps=1, checkpoint=5), TypeError, "checkpoint"),
    ("train-resume-str", lambda: lt.train(_t(), steps=1, resume="x"), TypeError, "resume"),
    ("train-init-shape", lambda: lt.train(_t(), steps=1, init={"A": E3, "u": np.zeros(2)}), ValueError, "params"),
    ("train-n-huge", lambda: lt.train(_t(2, 10**9), steps=1, batch=1), ValueError, "task"),
    ("train-batch-huge", lambda: lt.train(_t(), steps=1, batch=10**10), ValueError, "batch"),
    ("train-loops-huge", lambda: lt.train(_t(), "multilayer", loops=10**9, steps=1), ValueError, "loops"),
    ("batch_loss_grad-params-str", lambda: lt.batch_loss_grad("x", "sparse", _Z(batch=3), np.zeros(3), 1),
     TypeError, "params"),
    ("batch_loss_grad-model-unknown", lambda: lt.batch_loss_grad(_params(), "x", _Z(batch=3), np.zeros(3), 1),
     ValueError, "model"),
    ("batch_loss_grad-Z-str", lambda: lt.batch_loss_grad(_params(), "sparse", "abc", np.zeros(3), 1), TypeError, "Z"),
    ("batch_loss_grad-Z-shape", lambda: lt.batch_loss_grad(_params(), "sparse", _Z(), np.zeros(3), 1), ValueError, "Z"),
    ("batch_loss_grad-y_q-shape", lambda: lt.batch_loss_grad(_params(), "sparse", _Z(batch=3), np.zeros(2), 1),
     ValueError, "y_q"),
    ("batch_loss_grad-loops-zero", lambda: lt.batch_loss_grad(_params(), "sparse", _Z(batch=3), np.zeros(3), 0),
     ValueError, "loops"),
    ("batch_loss_grad-method-unknown", lambda: lt.batch_loss_grad(_params(), "sparse", _Z(batch=3), np.zeros(3), 1,
                                                                  method="fast"), ValueError, "method"),
    ("batch_loss_grad-loops-huge", lambda: lt.batch_loss_grad(_params(), "sparse", _Z(batch=3), np.zeros(3), 10**9),
     ValueError, "loops"),
    ("init_params-model-unknown", lambda: lt.init_params("x", 2, 1, 0), ValueError, "model"),
    ("init_params-d-zero", lambda: lt.init_params("full", 0, 1, 0), ValueError, "d"),
    ("init_params-loops-fraction", lambda: lt.init_params("full", 2, 1.5, 0), TypeError, "loops"),
    ("init_params-rng-negative", lambda: lt.init_params("full", 2, 1, -1), ValueError, "rng"),
    ("init_params-rng-str", lambda: lt.init_params("full", 2, 1, "abc"), TypeError, "rng"),
    ("init_params-scale-negative", lambda: lt.init_params("full", 2, 1, 0, scale=-1.0), ValueError, "scale"),
    ("init_params-scale-nan", lambda: lt.init_params("full", 2, 1, 0, scale=NAN), ValueError, "scale"),
    ("init_params-d-huge", lambda: lt.init_params("full", 10**6, 1, 0), ValueError, "d"),
    ("init_params-loops-huge", lambda: lt.init_params("multilayer", 2, 10**9, 0), ValueError, "loops"),
    ("layer_weights-params-empty", lambda: lt.layer_weights({}, "full", 1), ValueError, "params"),
    ("layer_weights-params-str", lambda: lt.layer_weights("x", "full", 1), TypeError, "params"),
    ("layer_weights-model-unknown", lambda: lt.layer_weights(_params(), "x", 1), ValueError, "model"),
    ("layer_weights-loops-zero", lambda: lt.layer_weights(_params(), "sparse", 0), ValueError, "loops"),
    ("layer_weights-params-nan", lambda: lt.layer_weights({"A": E2 * NAN, "u": np.zeros(2)}, "sparse", 1),
     ValueError, "params"),
    ("layer_weights-loops-mismatch", lambda: lt.layer_weights(_params("multilayer", 2, 3), "multilayer", 2),
     ValueError, "loops"),
    ("layer_weights-loops-huge", lambda: lt.layer_weights(_params(), "sparse", 10**9), ValueError, "loops"),
    ("predict-params-empty", lambda: lt.predict({}, "full", _Z(), 1), ValueError, "params"),
    ("predict-model-unknown", lambda: lt.predict(_params(), "x", _Z(), 1), ValueError, "model"),
    ("predict-Z-str", lambda: lt.predict(_params(), "sparse", "abc", 1), TypeError, "Z"),
    ("predict-loops-zero", lambda: lt.predict(_params(), "sparse", _Z(), 0), ValueError, "loops"),
    ("save_checkpoint-result-str", lambda: lt.save_checkpoint(tempfile.mktemp(), "x"), TypeError, "result"),
    ("save_checkpoint-path-int", lambda: lt.save_checkpoint(5, lt.train(_t(), steps=1, batch=2, progress=False)),
     TypeError, "path"),
    ("save_checkpoint-overwrite-str", lambda: lt.save_checkpoint(tempfile.mktemp(), lt.train(
        _t(), steps=1, batch=2, progress=False), overwrite="yes"), TypeError, "overwrite"),
    ("load_checkpoint-path-int", lambda: lt.load_checkpoint(5), TypeError, "path"),
    ("load_checkpoint-path-missing", lambda: lt.load_checkpoint(tempfile.mktemp()), ValueError, "path"),
    ("load_checkpoint-meta-loops-huge", lambda: lt.load_checkpoint(_bad_checkpoint(loops=10**9)), ValueError, "path"),
    ("load_checkpoint-meta-loops-str", lambda: lt.load_checkpoint(_bad_checkpoint(loops="3")), ValueError, "path"),
    ("load_checkpoint-meta-n-huge", lambda: lt.load_checkpoint(_bad_checkpoint(n=10**9)), ValueError, "path"),
    ("fix_scale-P-str", lambda: lt.fix_scale("abc", E3), TypeError, "P"),
    ("fix_scale-P-nan", lambda: lt.fix_scale(E3 * NAN, E3), ValueError, "P"),
    ("fix_scale-P-shape", lambda: lt.fix_scale(np.ones((2, 3)), E3), ValueError, "P"),
    ("fix_scale-Q-shape", lambda: lt.fix_scale(E3, E2), ValueError, "Q"),
    ("fix_scale-P-zero-corner", lambda: lt.fix_scale(np.zeros((3, 3)), E3), ValueError, "P"),
    ("prompt_errors-task-str", lambda: lt.prompt_errors(_params(), "sparse", "task", 1, 10, 0), TypeError, "task"),
    ("prompt_errors-model-unknown", lambda: lt.prompt_errors(_params(), "x", _t(), 1, 10, 0), ValueError, "model"),
    ("prompt_errors-samples-zero", lambda: lt.prompt_errors(_params(), "sparse", _t(), 1, 0, 0), ValueError, "samples"),
    ("prompt_errors-seed-negative", lambda: lt.prompt_errors(_params(), "sparse", _t(), 1, 10, -1), ValueError, "seed"),
    ("prompt_errors-seed-str", lambda: lt.prompt_errors(_params(), "sparse", _t(), 1, 10, "abc"), TypeError, "seed"),
    ("prompt_errors-chunk-zero", lambda: lt.prompt_errors(_params(), "sparse", _t(), 1, 10, 0, chunk=0),
     ValueError, "chunk"),
    ("prompt_errors-samples-huge", lambda: lt.prompt_errors(_params(), "sparse", _t(), 1, 10**12, 0), ValueError, "samples"),
    ("prompt_errors-n-huge", lambda: lt.prompt_errors(_params(), "sparse", _t(2, 10**9), 1, 10, 0), ValueError, "task"),
    ("prompt_errors-chunk-huge", lambda: lt.prompt_errors(_params(), "sparse", _t(2, 1000), 1, 10**8, 0,
                                                          chunk=10**8), ValueError, "chunk"),
    # plotting: refused before any figure is made
    ("plot_flow-quantity-unknown", lambda: lt.plot_flow(_FLOW, quantity="nope"), ValueError, "quantity"),
    ("plot_flow-flows-empty", lambda: lt.plot_flow([]), ValueError, "flows"),
    ("plot_flow-flows-int", lambda: lt.plot_flow(3), TypeError, "flows"),
    ("plot_flow-ax-str", lambda: lt.plot_flow(_FLOW, ax="x"), TypeError, "ax"),
    ("plot_flow-f_star-nan", lambda: lt.plot_flow(_FLOW, "excess", f_star=NAN), ValueError, "f_star"),
    ("plot_flow-mu-negative", lambda: lt.plot_flow(_FLOW, "dominance", mu=-1.0), ValueError, "mu"),
    ("plot_flow_eigenvalues-flows-str", lambda: lt.plot_flow_eigenvalues("x"), TypeError, "flows"),
    ("plot_loss_vs_loops-data-str", lambda: lt.plot_loss_vs_loops("x"), TypeError, "data"),
    ("plot_loss_vs_loops-data-empty", lambda: lt.plot_loss_vs_loops({"curves": []}), ValueError, "data"),
    ("plot_optimal_scale-data-int", lambda: lt.plot_optimal_scale(3), TypeError, "data"),
    ("plot_dominance-record-int", lambda: lt.plot_dominance(3), TypeError, "record"),
    ("plot_dominance-record-no-rows", lambda: lt.plot_dominance({"evidence": {"x": 1}}), ValueError, "record"),
    ("plot_optimal_loss-record-str", lambda: lt.plot_optimal_loss("G5"), TypeError, "record"),
    ("plot_test_time_loops-record-no-curves", lambda: lt.plot_test_time_loops({"evidence": {}}), ValueError, "record"),
    ("plot_chen_error-data-empty", lambda: lt.plot_chen_error({}), TypeError, "data"),
    ("plot_chen_kappa-data-list", lambda: lt.plot_chen_kappa([]), TypeError, "data"),
    ("plot_chen_divergence-data-empty", lambda: lt.plot_chen_divergence({"divergence": []}), ValueError, "data"),
    ("plot_sample_complexity-data-str", lambda: lt.plot_sample_complexity("x"), TypeError, "data"),
    ("plot_training-records-empty", lambda: lt.plot_training([]), ValueError, "records"),
    ("plot_looped_vs_multilayer-panel-unknown", lambda: lt.plot_looped_vs_multilayer({"evidence": {"rows": []}},
                                                                                      panel="x"), ValueError, "panel"),
    # the claim API and sweeps (issue 15)
    ("Claim-id", lambda: lt.Claim(3, "s", "src", lt.Grid(a=[1]), abs), TypeError, "id"),
    ("Claim-check", lambda: lt.Claim("X", "s", "src", lt.Grid(a=[1]), 5), TypeError, "check"),
    ("Claim-region", lambda: lt.Claim("X", "s", "src", [1, 2], abs), TypeError, "region"),
    ("Case-margin", lambda: lt.Case("a"), TypeError, "margin"),
    ("Case-nan", lambda: lt.Case(NAN), ValueError, "margin"),
    ("Grid-axis", lambda: lt.Grid(a=3), TypeError, "Grid"),
    ("Grid-empty", lambda: lt.Grid(), ValueError, "Grid"),
    ("verify_claim-claim", lambda: lt.verify_claim("x"), TypeError, "claim"),
    ("verify_claim-max_examples", lambda: lt.verify_claim(lt.Claim("X", "s", "src", lt.Grid(a=[1]), abs), max_examples=0),
     ValueError, "max_examples"),
    ("sweep-fn", lambda: lt.sweep(5, lt.Grid(a=[1])), TypeError, "fn"),
    ("sweep-grid", lambda: lt.sweep(abs, [1]), TypeError, "grid"),
]

# Exported names that are not functions taking input: result records and a constant.
NOT_CALLED = {"MAX_LOOPS", "RTOL", "Certified", "OptimumResult", "FlowResult", "WorstCase", "ClaimResult", "TrainResult", "ExperimentResult",
              "Record", "SweepError", "MonteCarloResult"}

# The untied multi-layer model (issue 16), in a block of its own.
_AS = np.stack([E2, E2])
CASES += [
    ("multilayer_population_loss-task-str", lambda: lt.multilayer_population_loss("task", _AS), TypeError, "task"),
    ("multilayer_population_loss-As-one-matrix", lambda: lt.multilayer_population_loss(_t(), E2), ValueError, "As"),
    ("multilayer_population_loss-As-shape", lambda: lt.multilayer_population_loss(_t(), np.stack([E3, E3])), ValueError, "As"),
    ("multilayer_population_loss-As-too-many", lambda: lt.multilayer_population_loss(_t(), [E2] * (lt.MAX_LAYERS + 1)),
     ValueError, "As"),
    ("multilayer_population_loss-As-none", lambda: lt.multilayer_population_loss(_t(), np.zeros((0, 2, 2))), ValueError, "As"),
    ("multilayer_population_loss-As-empty-list", lambda: lt.multilayer_population_loss(_t(), []), ValueError, "As"),
    ("multilayer_population_loss-As-ragged", lambda: lt.multilayer_population_loss(_t(), [E2, E2[:1]]), ValueError, "As"),
    ("multilayer_population_loss-As-nan", lambda: lt.multilayer_population_loss(_t(), [E2, [[1, NAN], [0, 1]]]), ValueError, "As"),
    ("multilayer_population_loss-As-str", lambda: lt.multilayer_population_loss(_t(), "abc"), TypeError, "As"),
    ("multilayer_population_loss-us-length", lambda: lt.multilayer_population_loss(_t(), _AS, [[1.0, 0.0]]), ValueError, "us"),
    ("multilayer_population_loss-us-shape", lambda: lt.multilayer_population_loss(_t(), _AS, np.zeros((2, 3))), ValueError, "us"),
    ("multilayer_population_loss-exact-str", lambda: lt.multilayer_population_loss(_t(), _AS, exact="no"), TypeError, "exact"),
    ("multilayer_population_loss-exact-float-As", lambda: lt.multilayer_population_loss(_t(), 0.5 * _AS, exact=True),
     TypeError, "As"),
    ("multilayer_population_loss_grad-fallback-str", lambda: lt.multilayer_population_loss_grad(_t(), _AS, fallback="no"),
     TypeError, "fallback"),
    ("multilayer_population_loss_grad-memory", lambda: lt.multilayer_population_loss_grad(_t(400), np.zeros((4, 400, 400))),
     ValueError, "task"),
    ("monte_carlo_multilayer_loss-task-inf-n", lambda: lt.monte_carlo_multilayer_loss(_t(2, INF), _AS), ValueError, "task"),
    ("monte_carlo_multilayer_loss-As-shape", lambda: lt.monte_carlo_multilayer_loss(_t(), np.stack([E3])), ValueError, "As"),
    ("monte_carlo_multilayer_loss-us-length", lambda: lt.monte_carlo_multilayer_loss(_t(), _AS, [[0.0, 0.0]]), ValueError, "us"),
    ("monte_carlo_multilayer_loss-samples-one", lambda: lt.monte_carlo_multilayer_loss(_t(), _AS, samples=1), ValueError,
     "samples"),
]
CASES += [
    ("optimal_multilayer-layers-above-limit", lambda: lt.optimal_multilayer(_t(), lt.MAX_LAYERS + 1), ValueError, "layers"),
    ("optimal_multilayer-task-str", lambda: lt.optimal_multilayer("task", 2), TypeError, "task"),
    ("optimal_multilayer-starts-zero", lambda: lt.optimal_multilayer(_t(), 2, starts=0), ValueError, "starts"),
    ("optimal_multilayer-inits-shape", lambda: lt.optimal_multilayer(_t(), 2, inits=[np.zeros((3, 2, 2))]), ValueError, "inits"),
    ("optimal_schedule-layers-zero", lambda: lt.optimal_schedule(_t(), 0), ValueError, "layers"),
    ("optimal_schedule-task-str", lambda: lt.optimal_schedule("task", 2), TypeError, "task"),
    ("ScheduleResult.As-task-other-d", lambda: lt.optimal_schedule(_t(2), 2).As(_t(3)), ValueError, "task"),
    ("ScheduleResult.As-task-str", lambda: lt.optimal_schedule(_t(2), 2).As("task"), TypeError, "task"),
    ("multilayer_gradient_flow-As0-too-many", lambda: lt.multilayer_gradient_flow(_t(), np.zeros((5, 2, 2))), ValueError, "As0"),
    ("multilayer_gradient_flow-us0-length", lambda: lt.multilayer_gradient_flow(_t(), _AS, us0=np.zeros((1, 2))), ValueError, "us0"),
    ("multilayer_gradient_flow-t_max-negative", lambda: lt.multilayer_gradient_flow(_t(), _AS, t_max=-1.0), ValueError, "t_max"),
    ("scalar_family_limit-alpha-zero", lambda: lt.scalar_family_limit(0, 2), ValueError, "alpha"),
    ("scalar_family_limit-rho-negative", lambda: lt.scalar_family_limit(1, 2, rho=-0.5), ValueError, "rho"),
    ("scalar_family_limit-loops-zero", lambda: lt.scalar_family_limit(1, 0), ValueError, "loops"),
    ("scalar_family_limit-digits-str", lambda: lt.scalar_family_limit(1, 2, digits="30"), TypeError, "digits"),
    ("scalar_family_convergence-ds-not-integer-n", lambda: lt.scalar_family_convergence(0.3, 2, ds=(3, 7)), ValueError, "ds"),
    ("plot_looped_vs_untied-panel-unknown", lambda: lt.plot_looped_vs_untied({"evidence": {"rows": [{}]}}, panel="x"),
     ValueError, "panel"),
    ("plot_scalar_limit-results-str", lambda: lt.plot_scalar_limit("x"), TypeError, "results"),
]
NOT_CALLED |= {"MAX_LAYERS", "MultilayerOptimum", "ScheduleResult", "LimitResult"}

# The command line: (argv, text the one-line error must contain). Exit status 2, nothing run.
CLI_CASES = [
    (["verify", "--bogus"], "--bogus"),
    (["frobnicate"], "COMMAND"),
    (["verify", "--out"], "--out"),
    (["verify", "--quick=yes"], "--quick"),
    (["verify", "--out", ""], "--out"),
    (["verify", "--only", "G9"], "--only"),
    (["verify", "--only"], "--only"),
    (["verify", "--resume"], "--resume"),
    (["verify", "--resume", "missing-folder"], "--resume"),
    (["verify", "--resume", ".", "--force"], "--resume"),
    (["--version=1"], "--version"),
]


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout("took too long: bad input must be refused up front")


@pytest.mark.parametrize("case_id, call, exc, name", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_parameter(case_id, call, exc, name):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        with pytest.raises((ValueError, TypeError)) as info:
            call()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert type(info.value) is exc, f"{case_id}: expected {exc.__name__}, got {type(info.value).__name__}: {info.value}"
    assert str(info.value).startswith(name), f"{case_id}: message does not start with {name!r}: {info.value}"


def test_every_exported_function_has_a_case():
    covered = {c[0].split("-")[0].split(".")[0] for c in CASES}
    missing = [name for name in lt.__all__ if name not in covered and name not in NOT_CALLED]
    assert not missing, f"no bad-input case for {missing}"
    for name in NOT_CALLED:
        assert not inspect.isfunction(getattr(lt, name))


@pytest.mark.parametrize("argv, must", CLI_CASES)
def test_command_line_bad_arguments(argv, must, capsys, tmp_path, monkeypatch):
    from looptheory.cli import main

    monkeypatch.chdir(tmp_path)  # nothing may be created; if it were, it lands here
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and must in err, err
    assert os.listdir(tmp_path) == []


# --- the memory guard -----------------------------------------------------------------------------


def test_memory_error_gives_the_estimate_and_how_to_raise_the_cap():
    with pytest.raises(ValueError) as info:
        lt.population_loss(_t(2000, 20), np.zeros((2000, 2000)), 6)
    msg = str(info.value)
    assert msg.startswith("task:") and "d = 2000" in msg and "loops = 6" in msg
    assert "GiB" in msg and "LOOPTHEORY_MEMORY_CAP" in msg and "memory cap" in msg


def test_memory_cap_can_be_raised_and_lowered(monkeypatch):
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", "1K")
    with pytest.raises(ValueError, match="^d:.*memory cap of 1 KiB"):
        lt.Task(20, 5)
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", "64G")
    assert V.memory_cap() == 64 * 2**30
    monkeypatch.delenv("LOOPTHEORY_MEMORY_CAP")
    assert V.memory_cap() == V.MEMORY_CAP_BYTES
    monkeypatch.setattr(V, "MEMORY_CAP_BYTES", 2000)
    with pytest.raises(ValueError, match="^d:"):
        lt.Task(20, 5)


def test_the_gradient_needs_more_memory_than_the_loss(monkeypatch):
    """The estimate counts 4 arrays of (trie nodes) x d^2 doubles for a loss and 6 with the
    gradient's adjoints: at a cap of 5 of them the loss runs and its gradient is refused."""
    from looptheory.loss import _TRIE_NODES

    d = 50
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", str(5 * _TRIE_NODES[1][False] * d * d * 8))
    task, A = _t(d, 5), 0.1 * np.eye(d)
    assert lt.population_loss(task, A, 1) > 0
    with pytest.raises(ValueError, match="^task: population_loss_grad at d = 50, loops = 1"):
        lt.population_loss_grad(task, A, 1)
    # the route without the bound (inner steps) is refused where the certified gradient is
    from looptheory.loss import population_loss_grad_route

    with pytest.raises(ValueError, match="^task: population_loss_grad at d = 50, loops = 1"):
        population_loss_grad_route(task, A, 1)


@pytest.mark.parametrize("text", ["lots", "-1", "1X", "nan", ""])
def test_a_bad_cap_setting_is_named(monkeypatch, text):
    monkeypatch.setenv("LOOPTHEORY_MEMORY_CAP", text)
    with pytest.raises(ValueError, match="^LOOPTHEORY_MEMORY_CAP:"):
        V.memory_cap()


def test_trie_size_table_is_the_largest_real_trie():
    """The table holds, without and with the u part, the most trie nodes any route's layout
    has: it bounds every layout and is attained (so the memory estimate is not inflated)."""
    from looptheory.loss import CENTRED_MAX_LOOPS, _TRIE_NODES, _compiled

    for loops in range(1, 7):
        forms = [("main0", "main")] + ([("centred",)] if loops <= CENTRED_MAX_LOOPS else [])
        most = [0, 0]
        for head in forms:
            for tail, with_u in (((), False), (("noise",), False), (("u",), True), (("u", "noise"), True)):
                most[with_u] = max(most[with_u], _compiled(loops, head + tail).n_nodes)
        assert tuple(most) == _TRIE_NODES[loops]


# --- huge n and overflow ----------------------------------------------------------------------------


def test_astronomical_n_is_the_infinite_n_limit():
    huge = 10**400
    A = np.array([[0.5, 0.1], [-0.2, 0.7]])
    u = np.array([0.3, -0.1])
    t = lt.Task(2, huge, noise=0.5)
    assert t.n == huge
    f = lt.population_loss(t, A, 3, u)
    assert f == lt.population_loss(lt.Task(2, math.inf, noise=0.5), A, 3, u)
    f_grad, gA, gu = lt.population_loss_grad(t, A, 3, u)
    assert f_grad == f and np.all(np.isfinite(gA)) and np.all(np.isfinite(gu))
    exact = lt.population_loss(lt.Task(2, huge, noise=1), np.eye(2, dtype=int), 2, exact=True)
    assert 0 < exact < 1e-300  # only the 1/n terms remain at A = I, exactly
    assert lt.spectral_loss([0.5, 0.5], huge, 2) == lt.spectral_loss([0.5, 0.5], math.inf, 2)
    assert lt.scale_loss(t, 3, 0.5) == pytest.approx(lt.scale_loss(lt.Task(2, math.inf), 3, 0.5), rel=1e-12)
    assert lt.optimal_scale(lt.Task(2, huge), 3) == pytest.approx(1.0, abs=1e-12)
    assert lt.trace_moments(3, huge, 2)[2] > 2
    assert "n=" in repr(lt.Task(2, 10**5000))


def test_overflow_is_inf_with_a_warning_not_nan():
    with pytest.warns(RuntimeWarning, match="overflow"):
        f = lt.population_loss(lt.Task(2, 5), 1e200 * E2, 2)
    assert f == math.inf


def test_outputs_of_a_diverged_model_pass_through_the_readouts():
    # prediction and chen_readout read what a forward pass produced, overflow included
    Z = np.full((2, 3, 4), np.inf)
    assert np.all(np.isinf(lt.prediction(Z))) and np.all(np.isinf(lt.chen_readout(Z)))


@pytest.mark.slow
def test_large_but_reasonable_inputs_still_run():
    # the guards refuse what cannot fit, not what is merely big
    lt.Task(1000, 10)
    assert lt.population_loss(lt.Task(300, 20), 0.5 * np.eye(300), 2) > 0
    assert len(lt.trace_moments(400, 10**6, 100)) == 401
    assert 0 < lt.optimal_scale(lt.Task(2, 20), 40) < 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lt.monte_carlo_loss(lt.Task(2, 5), E2 * 0.5, 2, samples=1000)
