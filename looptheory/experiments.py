"""Trained models against the exact theory: the experiments of the papers, redone.

Each experiment trains models with `training.train` on sampled prompts (never on the exact
gradient; each minibatch is drawn as the prompts' statistics, `training.sample_statistics`, which
have the prompts' law) and compares them with the exact engine (`population_loss`,
`optimal_preconditioner`) and with Monte Carlo of the package's reference forward pass
(`model.looped_forward`, `model.multilayer_forward`, `model.preconditioned_gd`) on sampled
prompts, which is independent of the training code's own forward and backward passes. Settings
are declared here (TRAININGS for every trained model), before any result is seen.

Full run: every model of TRAININGS is trained now, and compared with its shipped checkpoint
(bit-for-bit identical or not: a reproducibility check, not part of any verdict). Quick run:
nothing is trained; the shipped checkpoints (looptheory/data/checkpoints/, made by
scripts/train_checkpoints.py with train_declared, the full run's own function, seeds and
budgets; each names its command and seed) are re-evaluated now against the exact engine and by
Monte Carlo, on smaller declared grids and samples, and every record says so.

  E1 sparse_vs_exact    the sparse model trained at d = 5, n = 20, loops = 3 against the exact
                        optimum (target: relative Frobenius distance <= 1e-2).
  E2 full_vs_sparse     every entry of P, Q trainable; scale fixed by P[d, d] = 1; the
                        off-structure blocks, the A block against the exact optimum, and the
                        loss against the exact sparse optimum.
  E3 loops              exact optimal loss against loops; trained looped against trained
                        multi-layer models.
  E4 test_time_loops    models trained with 2 and 5 loops run with 1 ... 64 loops: mean and
                        median over prompts, and the exact mean where the engine reaches.
  E5 out_of_distribution  trained models on test covariances other than the training one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from . import _validate as V
from .loss import MAX_LOOPS, population_loss
from .model import looped_forward, make_prompt, multilayer_forward, prediction, preconditioned_gd
from .montecarlo import monte_carlo_loss
from .multilayer import multilayer_population_loss
from .multilayer_optimum import certainly_above, optimal_multilayer, optimal_schedule
from .optimum import optimal_preconditioner, optimal_scale, scale_loss
from .record import Outcome, Record, Spec, mc_summary, median_interval
from .task import Task
from .training import (TrainResult, check_model, check_params, fix_scale, layer_weights, load_checkpoint,
                       task_record, train)

TARGET_REL = 1e-2  # the acceptance target for E1
# E1's sample-size constant: the largest N rel^2 seen (N prompts, rel the distance reached) over
# the runs of E1's schedule made before its budget was declared (see _e1)
E1_SPREAD = 6.2e3
D, N = 5, 20  # every experiment's training task: Task.gatmiry(D, N) (sigma_x = I, sigma_w = I)

_ADAM = {"optimizer": "adam", "sampling": "statistics"}
_E2_SEEDS = (0, 1, 2, 3)
_DEPTHS = (1, 2, 3, 4)

#: Every model the experiments train, declared once: train's keyword arguments on
#: Task.gatmiry(D, N). The full run trains each of them (train_declared); the quick run loads the
#: checkpoint scripts/train_checkpoints.py made from these very settings, with the same function
#: (looptheory/data/checkpoints/{name}.npz; load_shipped), and re-evaluates it against the exact
#: engine without training. Budgets and why: see each experiment's docstring and
#: docs/claims.md, "Trained models against the exact theory (experiments E1–E5)".
TRAININGS = {
    # E1 (and E5): 61M prompts, the tail average over the last 80% (see _e1's sample-size argument)
    "e1_sparse_L3": {"model": "sparse", "loops": 3, "steps": 15_000, "batch": 4096, "seed": 0, **_ADAM,
                     "lr": 1e-2, "lr_final": 1e-3, "average": 0.8},
    # E2 (and E5), 3M prompts per seed: Adam at lr 1e-2 without clipping was thrown off by rare heavy-tailed minibatches
    # (loss 0.045 -> 50 at step ~1100 in a full run); a smaller step and a gradient-norm cap keep it on course
    **{f"e2_full_L3_seed{s}": {"model": "full", "loops": 3, "steps": 3000, "batch": 1024, "seed": s, **_ADAM,
                               "lr": 3e-3, "lr_final": 2e-4, "clip": 1.0, "average": 0.3} for s in _E2_SEEDS},
    # E3 (looped and multi-layer at each depth) and E4 (trained with 2 and 5 loops)
    **{f"{m}_L{L}": {"model": m, "loops": L, "steps": 2000, "batch": 1024, "seed": L, **_ADAM,
                     "lr": 1e-2, "lr_final": 1e-3, "average": 0.5}
       for m in ("sparse", "multilayer_sparse") for L in _DEPTHS},
    "sparse_L5": {"model": "sparse", "loops": 5, "steps": 2000, "batch": 1024, "seed": 5, **_ADAM,
                  "lr": 1e-2, "lr_final": 1e-3, "average": 0.5},
}

#: Where the shipped checkpoints live (package data), and the command that makes them.
CHECKPOINT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "checkpoints")
TRAINING_COMMAND = "python scripts/train_checkpoints.py"


def training_task() -> Task:
    """The task every declared model is trained on: Task.gatmiry(D, N)."""
    return Task.gatmiry(D, N)


def declared_settings(name: str) -> str:
    """The declared training of model `name` (a key of TRAININGS) as canonical JSON text: the
    task and train's keyword arguments. A shipped checkpoint's provenance carries this text, and
    the quick run refuses a checkpoint whose text differs."""
    if name not in TRAININGS:
        raise ValueError(f"name: expected one of the declared models {', '.join(TRAININGS)}, got {name!r}")
    return json.dumps({"task": task_record(training_task()), **TRAININGS[name]}, sort_keys=True)


def train_declared(name: str, progress=None) -> TrainResult:
    """Train the declared model `name` (TRAININGS) exactly as the full run does: the one
    function both the full run and scripts/train_checkpoints.py call."""
    declared_settings(name)
    return train(training_task(), progress=progress, **TRAININGS[name])


def checkpoint_path(name: str) -> str:
    """The shipped checkpoint file of the declared model `name`."""
    declared_settings(name)
    return os.path.join(CHECKPOINT_DIR, f"{name}.npz")


def source_hash() -> str:
    """SHA-256 of the code a declared model's weights depend on (looptheory/training.py and
    looptheory/task.py, in that order): recorded in each shipped checkpoint, so that a quick run
    can say whether that code has changed since the checkpoint was made."""
    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("training.py", "task.py"):
        with open(os.path.join(here, name), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def load_shipped(name: str) -> TrainResult:
    """The shipped checkpoint of the declared model `name`, checked: the file must exist, read
    back as a valid checkpoint (load_checkpoint), and carry provenance naming its command and
    seed with exactly the declared settings (declared_settings). ValueError naming the file and
    what to do otherwise; the quick run never trains in its place."""
    path = checkpoint_path(name)
    fix = (f"the quick run re-evaluates shipped models and does not train; reinstall looptheory, or re-create "
           f"it with `{TRAINING_COMMAND} --only {name}`, or run the full `looptheory verify`, which retrains")
    if not os.path.exists(path):
        raise ValueError(f"shipped checkpoint {path!r} is missing: {fix}")
    try:
        res = load_checkpoint(path)
    except ValueError as exc:
        raise ValueError(f"shipped checkpoint {path!r} cannot be used ({exc}): {fix}") from None
    prov = res.provenance or {}
    missing = [k for k in ("command", "seed", "settings") if k not in prov]
    if missing:
        raise ValueError(f"shipped checkpoint {path!r} does not say what made it (no {', '.join(missing)} in its "
                         f"provenance): {fix}")
    if prov["settings"] != declared_settings(name):
        raise ValueError(f"shipped checkpoint {path!r} was trained with settings {prov['settings']} but the "
                         f"experiments declare {declared_settings(name)}: {fix}")
    return res


@dataclass(frozen=True)
class TrainedModel:
    """A declared model as an experiment uses it: `result` (the TrainResult), `source`
    ("shipped checkpoint" or "trained in this run") and `note`, the sentence the record carries
    about where the weights come from (command, seed, prompts; for a retrained model, whether
    it is identical to the shipped checkpoint)."""

    name: str
    result: TrainResult
    source: str
    note: str

    def record(self) -> dict:
        """The evidence entry for this model."""
        return {"model": self.name, "source": self.source, "note": self.note,
                "prompts": self.result.steps * self.result.batch, "seed": self.result.seed}


def _prompts_text(res):
    return f"{res.steps * res.batch / 1e6:.3g}M prompts"


def compare_with_shipped(name: str, result: TrainResult) -> str:
    """One sentence: whether retrained weights are identical to the shipped checkpoint of `name`
    (the reproducibility check of the full run), or how far they differ, or why there is
    nothing to compare."""
    try:
        shipped = load_shipped(name)
    except ValueError as exc:
        return f"no usable shipped checkpoint to compare with ({exc})"
    same = all(np.array_equal(shipped.params[k], result.params[k]) for k in result.params) and np.array_equal(
        shipped.history, result.history)
    if same:
        return "bit-for-bit identical to the shipped checkpoint"
    diff = max(float(np.max(np.abs(shipped.params[k] - result.params[k])) / max(float(np.max(np.abs(shipped.params[k]))), 1e-300))
               for k in result.params)
    prov = shipped.provenance
    return (f"differs from the shipped checkpoint by {diff:.1e} (largest entry difference relative to the largest "
            f"entry; that file was made with looptheory {prov.get('looptheory', '?')}, numpy {prov.get('numpy', '?')}"
            f"{'' if prov.get('source_sha256') == source_hash() else ', from training code that has changed since'})")


_TRAINED: dict = {}


def trained_model(name: str, quick: bool, progress=None) -> TrainedModel:
    """The declared model `name`: in a quick run its shipped checkpoint (load_shipped, never
    trained), in a full run trained now (train_declared) and compared with the shipped one.
    Memoised within the process, so a run of all experiments trains (or loads) each once."""
    key = (name, bool(quick))
    if key in _TRAINED:
        return _TRAINED[key]
    if quick:
        res = load_shipped(name)
        prov = res.provenance
        same_code = prov.get("source_sha256") == source_hash()
        note = (f"shipped checkpoint (trained by: {prov['command']}, seed {prov['seed']}, {_prompts_text(res)}, "
                f"looptheory {prov.get('looptheory', '?')}, {prov.get('date', 'date not recorded')}"
                f"{'' if same_code else '; the training code has changed since'}); not retrained in this quick run: "
                f"its weights are re-evaluated now")
        model = TrainedModel(name, res, "shipped checkpoint", note)
    else:
        res = train_declared(name, progress=progress)
        model = TrainedModel(name, res, "trained in this run",
                             f"trained in this run (seed {res.seed}, {_prompts_text(res)}); "
                             f"{compare_with_shipped(name, res)}")
    _TRAINED[key] = model
    return model


def _provenance_text(models):
    """The record's opening words on where its trained weights come from."""
    models = list(models)
    plural = "s" if len(models) > 1 else ""
    which = ", ".join(f"{m.name} seed {m.result.seed}" for m in models)
    if models[0].source == "shipped checkpoint":
        commands = " / ".join(dict.fromkeys(m.result.provenance["command"] for m in models))
        return (f"Shipped checkpoint{plural} (trained by: {commands}; {which}), not retrained in this quick run, "
                f"re-evaluated now: ")
    same = sum("bit-for-bit identical" in m.note for m in models)
    return (f"Trained in this run ({which}; {same} of {len(models)} bit-for-bit identical to the shipped "
            f"checkpoint{plural}): ")


_OPTIMA: dict = {}


def _optimum(task, loops, starts, seed=0):
    """optimal_preconditioner, memoised within the process (E1, E2, E3 and E5 ask for the same
    optimum more than once)."""
    key = (json.dumps(task_record(task)), loops, starts, seed)
    if key not in _OPTIMA:
        _OPTIMA[key] = optimal_preconditioner(task, loops, starts=starts, seed=seed)
    return _OPTIMA[key]


#: Kept for code written against earlier versions: every item now returns a Record.
ExperimentResult = Record


def prompt_errors(params: dict, model: str, task: Task, loops: int, samples: int, seed: int,
                     chunk: int = 20_000) -> np.ndarray:
    """Squared errors (yhat - y_q)^2 of a trained model (`training` parameter dict) on `samples`
    fresh prompts, through the package's reference forward pass (model.py), not the training
    code; reproducible for a seed. A looped model may be run with any number of loops.
    Overflowing predictions give +inf, so the mean shows divergence and the median stays usable.
    seed: an integer >= 0. Limits as in monte_carlo_loss: a chunk of prompts and the samples
    errors must fit in the memory cap, and samples x (d+1) x (n+1) random numbers in the work cap
    (ValueError naming task, chunk or samples)."""
    if not isinstance(task, Task):
        raise TypeError(f"task: expected a looptheory.Task, got {type(task).__name__}")
    model = check_model(model)
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
    samples = V.positive_int("samples", samples)
    chunk = V.positive_int("chunk", chunk)
    loops = V.positive_int("loops", loops)
    if model in ("full", "sparse"):
        params = check_params(params, model, task.d, loops)
    else:  # a multi-layer model has as many layers as its stacked weights (layer_weights checks loops)
        stacked = np.shape(params.get("P", params.get("A", ())))
        params = check_params(params, model, task.d, stacked[0] if stacked else 0)
    rng = np.random.default_rng(V.seed("seed", seed))
    if V.is_infinite(task.n):
        raise ValueError("task: prompt_errors samples prompts, so n must be finite")
    per_prompt = (task.d + 1) * (task.n + 1)
    where = f"at d = {task.d}, n = {V.number_text(task.n)}"
    V.check_memory("task" if 6 * per_prompt * 8 > V.memory_cap() else "chunk",
                   f"prompt_errors with chunk = {V.number_text(chunk)} {where}", 6 * min(chunk, samples) * per_prompt * 8,
                   "6 x prompts per chunk x (d + 1) x (n + 1) x 8 bytes")
    V.check_memory("samples", f"prompt_errors with samples = {V.number_text(samples)}", 8 * samples,
                   "one squared error per prompt, 8 bytes each")
    V.check_work("samples", f"prompt_errors with samples = {V.number_text(samples)} {where}", samples * per_prompt,
                 "samples x (d + 1) x (n + 1)")
    out = []
    left = samples
    while left:
        b = min(chunk, left)
        X, y, x_q, y_q, _ = task.sample(b, rng)
        with np.errstate(over="ignore", invalid="ignore"):
            if model == "sparse":
                yhat = _sparse_predictions(params["A"], params["u"], X, y, x_q, loops)
            else:
                Z = make_prompt(X, y, x_q)
                ws = layer_weights(params, model, loops)
                if model == "full":
                    Z = looped_forward(Z, ws[0][0], ws[0][1], loops)
                else:
                    Z = multilayer_forward(Z, [p for p, _ in ws], [q for _, q in ws])
                yhat = prediction(Z)
            e = (yhat - y_q) ** 2
        out.append(np.where(np.isfinite(e), e, np.inf))
        left -= b
    return np.concatenate(out)


def _sparse_predictions(A, u, X, y, x_q, loops, every_loop=False):
    """The sparse looped model through its GD form (model.preconditioned_gd with B = A^T on the
    labels y + X^T u): yhat after `loops` loops, or after 0 ... loops loops (every_loop)."""
    yu = y + np.einsum("bdn,d->bn", X, u)
    w = preconditioned_gd(X, yu, A.T, loops, return_path=every_loop)
    return np.einsum("b...d,bd->b...", w, x_q)


def _errors_at_loops(A, u, task, loops, samples, seed, chunk=20_000):
    """Squared errors (samples, len(loops)) of the sparse model (A, u) on the same `samples` fresh
    prompts after each loop count in `loops` (+inf where it overflows), through the GD form of
    the reference forward pass; drawn and run `chunk` prompts at a time, so that memory stays at
    about chunk x max(loops) x d numbers (all 100 000 prompts at once took 0.9 GB)."""
    rng = np.random.default_rng(seed)
    out = np.empty((samples, len(loops)))
    for i in range(0, samples, chunk):
        b = min(chunk, samples - i)
        X, y, x_q, y_q, _ = task.sample(b, rng)
        with np.errstate(over="ignore", invalid="ignore"):
            e = (_sparse_predictions(A, u, X, y, x_q, max(loops), every_loop=True) - y_q[:, None]) ** 2
        out[i:i + b] = e[:, loops]
    return np.where(np.isfinite(out), out, np.inf)


def _mc(errors):
    """Mean and its standard error (inf when any error overflowed)."""
    if not np.all(np.isfinite(errors)):
        return math.inf, math.inf
    return float(np.mean(errors)), float(np.std(errors, ddof=1) / math.sqrt(len(errors)))


def _rel(A, B):
    return float(np.linalg.norm(A - B) / np.linalg.norm(B))


# --- E1 ---------------------------------------------------------------------------------------


def _e1(quick: bool, params: dict, progress=None) -> Outcome:
    """E1: the sparse model (A and u trainable) trained by Adam on fresh prompts at d = 5,
    n = 20, loops = 3 (Gatmiry et al.'s prior, sigma_x = I), against the exact global optimum
    found blind by optimal_preconditioner (4 starts in the full run, 1 in the quick run).

    Budget: why ~6e7 prompts. At the optimum the Hessian's skew directions have curvature 0.049
    against 1.5 for the symmetric ones, and Polyak averaging over N prompts attains at best the
    error covariance H^{-1} C H^{-1} / N (C the per-prompt gradient covariance); measured
    tr(H^{-1} C H^{-1}) / ||A*||_F^2 ~ 1.3e3 ... 2.0e3, so E rel^2 >= ~1.5e3 / N (rel the relative
    Frobenius distance, N the prompts). The error sits in a few flat directions, so N rel^2
    scatters widely from seed to seed: runs of this schedule gave N rel^2 = 1.5e3 ... 5.5e3 at
    N = 6.1M (8 runs), 1.7e3 and 4.8e3 at 24.6M, and 6.2e3 at 98M (the budget until issue 13, which
    reached 7.95e-3). The full run's 10 CPU-minutes leave about 100 CPU-seconds for this model
    (1.6 us per prompt), so the budget is 61.4M prompts (15 000 steps of 4096), where the
    largest N rel^2 seen, E1_SPREAD = 6.2e3, lands at the target: sqrt(6.2e3 / 61.4M) = 1.0e-2.

    Verdict, declared with the budget: pass if rel <= TARGET_REL; a miss within twice that
    sampling spread (rel <= 2 sqrt(E1_SPREAD / N)) is unresolved (this budget cannot tell a
    failure from an unlucky seed); a miss beyond it is a failure (training does not land at the
    exact optimum); unresolved also when the exact optimum did not converge. The quick run
    re-evaluates the shipped checkpoint of this very training (TRAININGS["e1_sparse_L3"]) and so
    decides the same question.
    """
    task = training_task()
    L = 3
    model = trained_model("e1_sparse_L3", quick, progress)
    res = model.result
    steps, batch = res.steps, res.batch
    starts = 1 if quick else 4
    settings = {"d": D, "n": N, "loops": L, "sigma_x": "I", "sigma_w": "sigma_x^{-1}", "noise": 0,
                **TRAININGS["e1_sparse_L3"], "averaging": "Polyak-Ruppert, over the final `average` fraction",
                "init": "A ~ N(0, 0.1^2/6), u = 0", "model source": model.source,
                "exact optimum starts": starts, "target": f"||A - A*||_F / ||A*||_F <= {TARGET_REL}",
                "unresolved band": f"a miss up to 2 sqrt({E1_SPREAD:g} / prompts)"}
    opt = _optimum(task, L, starts)
    A, u = res.params["A"], res.params["u"]
    rel = _rel(A, opt.A)
    f_trained = population_loss(task, A, L, u)
    ok = rel <= TARGET_REL
    spread = 2 * math.sqrt(E1_SPREAD / (steps * batch))
    if not opt.converged:
        verdict = "unresolved"
    else:
        verdict = "pass" if ok else ("unresolved" if rel <= spread else "fail")
    miss = ("" if ok else f" ({'within' if rel <= spread else 'beyond'} twice the sampling spread of this budget, "
                          f"{spread:.2g}: {'an unlucky seed cannot be ruled out' if rel <= spread else 'a failure'})")
    summary = (_provenance_text([model]) +
               f"trained A is {rel:.2e} from the exact optimum (relative Frobenius; target {TARGET_REL:g}: "
               f"{'met' if ok else 'missed'}{miss}) after {_prompts_text(res)}; exact loss "
               f"{f_trained:.6f} against f* = {opt.loss:.6f}; ||u|| = {np.linalg.norm(u):.1e} (u* = {opt.u_norm:.1e})"
               + ("" if opt.converged else f"; the exact optimum did not converge ({opt.status}): unresolved"))
    return Outcome(
        verdict, summary,
        {"rel_distance": rel, "target_met": ok, "f_trained_exact": f_trained, "f_star": opt.loss,
         "A_trained": A, "u_trained": u, "A_star": opt.A, "u_star": opt.u, "history": res.history[:: max(1, steps // 200)],
         "prompts": steps * batch, "optimum_is_scalar": opt.distance_to_scale, "models": [model.record()]},
        params=settings, worst_case={"rel_distance": rel, "target": TARGET_REL, "unresolved up to": spread},
        counterexample=None if verdict != "fail" else {"rel_distance": rel, "target": TARGET_REL},
        examples_run=steps * batch, optimiser=(f"exact optimum: {opt.status}",), figures=("training_curves",))


def experiment_sparse_vs_exact(quick: bool = False, progress=None) -> Record:
    """E1 as a Record (REGISTRY["E1"].run): see _e1."""
    return REGISTRY["E1"].run(quick, progress=progress)


# --- E2 ---------------------------------------------------------------------------------------


def _e2_models(quick, progress=None):
    """E2's four full models (seeds 0-3), their (mean training loss over the last 10% of steps,
    seed), and the index of the chosen one.

    Runs from different seeds end in different basins (one with small off-structure blocks and a
    loss far below f*, one with P_top ~ 2 and a loss above it), so several seeds are trained and
    the one with the lowest training loss (never a test value) is compared; E5 tests the same
    choice."""
    models = [trained_model(f"e2_full_L3_seed{s}", quick, progress) for s in _E2_SEEDS]
    runs = [(float(np.mean(m.result.history[-max(1, m.result.steps // 10):])), m.result.seed) for m in models]
    return models, runs, min(range(len(runs)), key=lambda i: runs[i][0])


def _e2(quick: bool, params: dict, progress=None) -> Outcome:
    """E2: every entry of P and Q trainable (d = 5, n = 20, loops = 3), the scale freedom
    (P, Q) -> (cP, Q/c) fixed by P[d, d] = 1. Reports the off-structure blocks (P's top d rows,
    Q's last row and column), the A block against the exact sparse optimum, and the full model's
    loss (Monte Carlo of the reference forward pass, with its standard error) against the exact
    sparse optimum f*. Whether unrestricted attention beats preconditioned GD at finite n is the
    finding, either way."""
    task = training_task()
    L = 3
    samples = 40_000 if quick else 400_000
    starts = 1 if quick else 4
    declared = {k: v for k, v in TRAININGS["e2_full_L3_seed0"].items() if k != "seed"}
    models, runs, best = _e2_models(quick, progress)
    res = models[best].result
    steps, best_seed = res.steps, res.seed
    settings = {"d": D, "n": N, "loops": L, "sigma_x": "I", "sigma_w": "sigma_x^{-1}", **declared,
                "average": "last 30%", "init": "every entry N(0, 0.1^2/6)", "seeds": list(_E2_SEEDS),
                "selection": "lowest mean training minibatch loss over the last 10% of steps",
                "model source": models[0].source, "exact optimum starts": starts, "Monte Carlo prompts": samples}
    opt = _optimum(task, L, starts)
    seed_rows = []
    for (tail, seed), m in zip(runs, models):
        _, _, pr = fix_scale(m.result.params["P"], m.result.params["Q"])
        seed_rows.append({"seed": seed, "final training loss": tail, "P_top": pr["P_top"], "Q_edge": pr["Q_edge"],
                          "chosen": seed == best_seed})
    P2, Q2, parts = fix_scale(res.params["P"], res.params["Q"])
    # paired: the same prompts (same seed) through the full model and the exact sparse optimum,
    # so the difference's standard error is not swamped by the prompts' common heavy tail
    e_full = prompt_errors({"P": P2, "Q": Q2}, "full", task, L, samples, seed=11)
    e_opt = prompt_errors({"A": opt.A, "u": opt.u}, "sparse", task, L, samples, seed=11)
    mean, se = _mc(e_full)
    s_full, s_opt = mc_summary(e_full), mc_summary(e_opt)
    med_full, med_opt = float(np.median(e_full)), float(np.median(e_opt))
    f_sparse_part = population_loss(task, parts["A"], L, parts["u"])
    if not np.all(np.isfinite(e_full)):
        # the full model overflows on some prompts: its mean loss is infinite
        diff, diff_se, z, verdict = -math.inf, math.inf, -math.inf, "is beaten by (it diverges on some prompts)"
    else:
        diff, diff_se = _mc(e_opt - e_full)
        z = diff / diff_se if diff_se > 0 else 0.0
        verdict = "beats" if z > 3 else ("is beaten by" if z < -3 else "is indistinguishable from")
    diverges = not np.all(np.isfinite(e_full))
    tails = [f"{name}: {st['why']}" for name, st in (("full model", s_full), ("sparse optimum", s_opt))
             if not st["resolved"] and not diverges]
    status = "unresolved" if (tails or not opt.converged) else "pass"
    summary = (_provenance_text(models) + f"full model's loss {mean:.4f} ± {se:.1g} (Monte Carlo; median {med_full:.3g}) against the exact sparse "
               f"optimum f* = {opt.loss:.4f} (median {med_opt:.3g}): unrestricted attention {verdict} preconditioned GD "
               f"(paired difference {z:+.1f} standard errors); after P[d,d] = 1 the off-structure blocks have norms "
               f"P_top {parts['P_top']:.3f}, Q_edge {parts['Q_edge']:.3f}, and A is {_rel(parts['A'], opt.A):.2f} "
               f"from A* (relative); with those blocks zeroed, the exact loss is {f_sparse_part:.3g}. Seeds (final "
               f"training loss): " + ", ".join(f"{r['seed']}: {r['final training loss']:.3g}" for r in seed_rows)
               + f"; seed {best_seed} compared"
               + (f"; the Monte Carlo comparison is not resolved ({'; '.join(tails)})" if tails else "")
               + ("" if opt.converged else f"; the exact optimum did not converge ({opt.status})"))
    return Outcome(
        status, summary,
        {"f_full_mc": mean, "f_full_se": se, "f_star_sparse": opt.loss, "paired_gain": diff, "paired_gain_se": diff_se,
         "z_below_f_star": z, "median_full": med_full, "median_sparse_optimum": med_opt,
         "P_top_norm": parts["P_top"], "Q_edge_norm": parts["Q_edge"], "scale_c": parts["c"],
         "A_rel_distance": _rel(parts["A"], opt.A), "u_norm": float(np.linalg.norm(parts["u"])),
         "f_sparse_part_exact": f_sparse_part, "P": P2, "Q": Q2, "history": res.history[:: max(1, steps // 200)],
         "chosen_seed": best_seed, "full_top10_share": s_full["top10_share"],
         "sparse_optimum_top10_share": s_opt["top10_share"], "rows": seed_rows,
         "models": [m.record() for m in models]},
        params=settings, worst_case={"paired difference (standard errors)": z},
        examples_run=samples, optimiser=(f"exact sparse optimum: {opt.status}",), figures=("training_curves",))


def experiment_full_vs_sparse(quick: bool = False, progress=None) -> Record:
    """E2 as a Record (REGISTRY["E2"].run): see _e2."""
    return REGISTRY["E2"].run(quick, progress=progress)


# --- E3 ---------------------------------------------------------------------------------------


def _e3(quick: bool, params: dict, progress=None) -> Outcome:
    """E3: the exact optimal loss against loops (at the trained depths; claim G5 has the curve to
    MAX_LOOPS), and trained looped against trained multi-layer sparse models at the same depth (Monte Carlo of the
    reference forward passes). A multi-layer model contains the looped one, so its population
    optimum is at most the looped optimum; the trained values show how much that buys."""
    task = training_task()
    depths = [1, 2, 3] if quick else list(_DEPTHS)
    samples = 20_000 if quick else 200_000
    starts = 1 if quick else 2
    untied_starts = 2  # As = 0, the looped optimum and one random start (2 random in G6's cells)
    declared = {k: v for k, v in TRAININGS["sparse_L1"].items() if k not in ("model", "loops", "seed")}
    models = {(m, L): trained_model(f"{m}_L{L}", quick, progress) for L in depths for m in ("sparse", "multilayer_sparse")}
    settings = {"d": D, "n": N, "sigma_x": "I", "exact loops": depths, "trained depths": depths, **declared,
                "seed": "the depth", "average": "last 50%", "model source": models[("sparse", depths[0])].source,
                "exact optimum starts": starts, "untied optimum": f"optimal_multilayer(task, L, starts={untied_starts}, seed=0) "
                "with the looped optimum repeated per layer as one more start; u_l = 0 (loses nothing)",
                "schedule": "optimal_schedule (exact)", "Monte Carlo prompts": samples}
    # the exact optima at the trained depths, of both models; the looped curve to MAX_LOOPS is
    # claim G5's (a). The untied search is blind (optimal_multilayer; the looped optimum
    # repeated per layer is one of its starts); its converged includes no worse than the exact
    # best schedule, and it must also be no worse than the looped optimum, both feasible untied
    # points (as in claim G6)
    opts = {L: _optimum(task, L, starts) for L in depths}
    untied = {L: optimal_multilayer(task, L, starts=untied_starts, seed=0, inits=[np.stack([opts[L].A] * L)])
              for L in depths}
    schedules = {L: optimal_schedule(task, L) for L in depths}
    exact = []
    for L in depths:
        lo, un, sch = opts[L], untied[L], schedules[L]
        un_ok = un.converged and not certainly_above(un.loss, lo.loss)
        exact.append({"loops": L, "f_star": lo.loss, "converged": lo.converged,
                      "f_star_untied": un.loss, "untied_converged": un_ok, "f_star_schedule": float(sch.loss),
                      "schedule_a": list(sch.a)})
    rows = []
    for L in depths:
        row = {"loops": L, "f_star_looped_exact": exact[L - 1]["f_star"], "f_star_untied_exact": exact[L - 1]["f_star_untied"],
               "f_star_schedule_exact": exact[L - 1]["f_star_schedule"]}
        paired = {}
        for model in ("sparse", "multilayer_sparse"):
            r = models[(model, L)].result
            if model == "sparse":
                row["looped_exact_of_trained"] = population_loss(task, r.params["A"], L, r.params["u"])
                ref_model, ref_params = "sparse", r.params
            else:
                row["untied_exact_of_trained"] = multilayer_population_loss(task, r.params["A"], r.params["u"])
                ref_model = "multilayer"
                ref_params = {"P": np.stack([p for p, _ in layer_weights(r.params, model, L)]),
                              "Q": np.stack([q for _, q in layer_weights(r.params, model, L)])}
            errs = prompt_errors(ref_params, ref_model, task, L, samples, seed=100 + L)
            row[f"{model}_mc"], row[f"{model}_se"] = _mc(errs)
            st = mc_summary(errs)
            row[f"{model}_resolved"] = "yes" if st["resolved"] else f"no ({st['why']})"
            paired[model] = errs
        # same seed, same prompts: the difference has its own, smaller standard error
        row["multilayer_minus_looped"], row["difference_se"] = _mc(paired["multilayer_sparse"] - paired["sparse"])
        rows.append(row)
    falls = all(exact[i + 1]["f_star"] < exact[i]["f_star"] for i in range(len(exact) - 1))
    unconv = [x["loops"] for x in exact if not x["converged"]]
    unconv_untied = [x["loops"] for x in exact if not x["untied_converged"]]
    tails = [f"L = {r['loops']} {m}" for r in rows for m in ("sparse", "multilayer_sparse") if r[f"{m}_resolved"] != "yes"]
    status = "unresolved" if (unconv or unconv_untied or tails) else "pass"
    summary = (_provenance_text(models.values()) + f"exact optimal loss {'falls' if falls else 'does not fall'} with loops "
               f"({exact[0]['f_star']:.3f} at 1 to {exact[-1]['f_star']:.3f} at {exact[-1]['loops']}); exact optima, looped / "
               "untied multi-layer / trained looped / trained multi-layer (exact loss of the trained weights): " + ", ".join(
                   f"L={r['loops']}: {float(r['f_star_looped_exact']):.3f} / {float(r['f_star_untied_exact']):.3f} / "
                   f"{float(r['looped_exact_of_trained']):.3f} / {float(r['untied_exact_of_trained']):.3f}" for r in rows)
               + "; trained multi-layer minus "
               "trained looped loss (paired on the same prompts): " + ", ".join(
                   f"L={r['loops']}: {r['multilayer_minus_looped']:+.4f} (SE {r['difference_se']:.0e})" for r in rows)
               + (f"; the exact optimum did not converge at loops {unconv}" if unconv else "")
               + (f"; the untied search did not converge (or ended above a feasible candidate) at layers {unconv_untied}"
                  if unconv_untied else "")
               + (f"; Monte Carlo mean not resolved (heavy tail) for {', '.join(tails)}" if tails else ""))
    return Outcome(status, summary, {"exact": exact, "rows": rows, "models": [m.record() for m in models.values()]},
                   params=settings, examples_run=samples * 2 * len(depths),
                   optimiser=tuple(f"exact optimum at loops = {L}: {o.status}" for L, o in opts.items())
                   + tuple(f"exact untied optimum at layers = {L}: {o.status}" for L, o in untied.items()),
                   figures=("looped_vs_multilayer", "training_curves"))


def experiment_loops(quick: bool = False, progress=None) -> Record:
    """E3 as a Record (REGISTRY["E3"].run): see _e3."""
    return REGISTRY["E3"].run(quick, progress=progress)


# --- E4 ---------------------------------------------------------------------------------------

TEST_LOOPS = [1, 2, 3, 4, 5, 6, 8, 12, 16, 24, 32, 48, 64]


def _e4(quick: bool, params: dict, progress=None) -> Outcome:
    """E4: sparse models trained with 2 and with 5 loops (d = 5, n = 20), then run with
    1 ... 64 loops: mean (with its standard error) and median (with its distribution-free 95%
    interval) of the squared error over prompts (simulation, the same prompts for every loop
    count), the exact mean for loops <= MAX_LOOPS, and, as an exact reference at every loop
    count, the mean of the scalar-family optimum gamma_L I for the training loop count. At
    large loop counts a few prompts on which the model diverges set the sample mean: those
    means are marked unresolved (heavy tail), and the record is then unresolved."""
    task = training_task()
    samples = 10_000 if quick else 100_000
    models = {L: trained_model(f"sparse_L{L}", quick, progress) for L in (2, 5)}
    declared = {k: v for k, v in TRAININGS["sparse_L5"].items() if k not in ("model", "loops", "seed")}
    settings = {"d": D, "n": N, "sigma_x": "I", "train loops": [2, 5], "test loops": TEST_LOOPS, **declared,
                "seed": "the training loop count", "average": "last 50%", "model source": models[2].source,
                "prompts per test loop": samples, "prompt seeds": "200 + training loops",
                "mean resolved": "finite, the 10 largest errors carry <= 10% of the sum, standard error <= 10% of the mean",
                "exact reference": "scale_loss of γ_L I, γ_L = optimal_scale at the training loop count"}
    curves = []
    rows = []
    for train_L in (2, 5):
        r = models[train_L].result
        A, u = r.params["A"], r.params["u"]
        err = _errors_at_loops(A, u, task, TEST_LOOPS, samples, seed=200 + train_L)
        stats = [mc_summary(e) for e in err.T]
        meds = [median_interval(e) for e in err.T]
        mean = [st["mean"] for st in stats]
        median = [m[0] for m in meds]
        exact = [population_loss(task, A, L, u) if L <= MAX_LOOPS else None for L in TEST_LOOPS]
        g = optimal_scale(task, train_L)
        scalar_ref = [scale_loss(task, L, g) for L in TEST_LOOPS]
        resolved = [st["resolved"] for st in stats]
        res_means = [(L, m) for L, m, ok in zip(TEST_LOOPS, mean, resolved) if ok]
        curves.append({"train_loops": train_L, "test_loops": TEST_LOOPS, "mean_mc": mean,
                       "mean_mc_se": [st["se"] for st in stats], "mean_resolved": resolved, "median_mc": median,
                       "median_lo": [m[1] for m in meds], "median_hi": [m[2] for m in meds], "mean_exact": exact,
                       "scalar_reference_exact": scalar_ref, "gamma_reference": g,
                       "median_keeps_falling": all(median[i + 1] < median[i] for i in range(len(median) - 1)),
                       "best_mean_at": min(res_means, key=lambda t: t[1])[0] if res_means else None,
                       "first_unresolved_mean_at": next((L for L, ok in zip(TEST_LOOPS, resolved) if not ok), None)})
        for i, L in enumerate(TEST_LOOPS):
            st = stats[i]
            rows.append({"train loops": train_L, "test loops": L,
                         "mean (MC)": st["mean"] if math.isfinite(st["mean"]) else "n/a (overflow on some prompts)",
                         "SE": st["se"] if math.isfinite(st["se"]) else "n/a (overflow)",
                         "10 largest / sum": st["top10_share"],
                         "mean resolved": "yes" if st["resolved"] else "no (heavy tail)",
                         "median (MC)": meds[i][0], "median 95% low": meds[i][1], "median 95% high": meds[i][2],
                         "exact mean": exact[i] if exact[i] is not None else f"n/a (loops > {MAX_LOOPS}: beyond the exact engine)",
                         "exact mean of γ I (reference)": scalar_ref[i]})
    parts = []
    for c in curves:
        text = (f"trained with {c['train_loops']} loops: median {'keeps falling' if c['median_keeps_falling'] else 'stops falling'} "
                f"to 64 loops ({c['median_mc'][0]:.3g} -> {c['median_mc'][-1]:.3g}, 95% interval "
                f"[{c['median_lo'][-1]:.3g}, {c['median_hi'][-1]:.3g}])")
        bad = c["first_unresolved_mean_at"]
        if bad is None:
            text += f"; mean (resolved at every loop count) is lowest at {c['best_mean_at']} loops"
        else:
            k = sum(not ok for ok in c["mean_resolved"])
            share = rows[len(TEST_LOOPS) * curves.index(c) + len(TEST_LOOPS) - 1]["10 largest / sum"]
            text += (f"; the mean over prompts is not resolved at {k} of {len(TEST_LOOPS)} loop counts, from {bad} loops "
                     f"on: a few prompts with huge errors (those on which looping diverges) set it (at 64 loops the 10 "
                     f"largest errors carry {share:.0%} of the sum), so where the sample mean is lowest "
                     f"({TEST_LOOPS[int(np.argmin(c['mean_mc']))]} loops here) says nothing; for comparison the exact "
                     f"mean of γ_{c['train_loops']} I (the scalar-family optimum for {c['train_loops']} loops, near but "
                     f"not the trained model) grows to {c['scalar_reference_exact'][-1]:.3g} at 64 loops (claim G5): the "
                     f"population mean diverges with loops while the median keeps falling")
        parts.append(text)
    unresolved = any(c["first_unresolved_mean_at"] is not None for c in curves)
    return Outcome("unresolved" if unresolved else "pass", _provenance_text(models.values()) + "; ".join(parts),
                   {"curves": curves, "rows": rows, "models": [m.record() for m in models.values()]},
                   params=settings, examples_run=2 * samples, figures=("test_time_loops", "training_curves"),
                   worst_case={"largest 10-largest share": max(r["10 largest / sum"] for r in rows)})


def experiment_test_time_loops(quick: bool = False, progress=None) -> Record:
    """E4 as a Record (REGISTRY["E4"].run): see _e4."""
    return REGISTRY["E4"].run(quick, progress=progress)


# --- E5 ---------------------------------------------------------------------------------------


def _test_covariances(d):
    rng = np.random.default_rng(7)
    Qm, _ = np.linalg.qr(rng.standard_normal((d, d)))
    aniso = Qm @ np.diag(np.linspace(0.5, 2.0, d)) @ Qm.T
    return [("I (in distribution)", np.eye(d)), ("0.5 I", 0.5 * np.eye(d)), ("2 I", 2.0 * np.eye(d)),
            ("3 I", 3.0 * np.eye(d)), ("rotated, eigenvalues 0.5 ... 2", aniso)]


#: The quick run's smaller grid of test covariances (the full run tests all of _test_covariances).
_E5_QUICK = ("I (in distribution)", "2 I", "rotated, eigenvalues 0.5 ... 2")


def _e5(quick: bool, params: dict, progress=None) -> Outcome:
    """E5: the sparse and the full model trained at sigma_x = I (d = 5, n = 20, loops = 3) tested
    on covariances Sigma' with the test prior sigma_w = Sigma'^{-1} (docs/conventions.md, G4). Exact
    test loss for the sparse model, Monte Carlo for both (for the sparse model the conditional
    estimator of monte_carlo_loss, with its diagnostics), and the test loss of the exact optimum
    for Sigma' (what a model trained on Sigma' could reach) as the yardstick. Every Monte Carlo
    ratio carries its standard error; one whose mean is not resolved (heavy tail, or a standard
    error above 10% of the mean) is marked, and the record is then unresolved."""
    L = 3
    # the very models E1 and E2 use (memoised, so a run of all experiments trains or loads them once)
    sparse_model = trained_model("e1_sparse_L3", quick, progress)
    fulls, _, best = _e2_models(quick, progress)
    sparse, full = sparse_model.result, fulls[best].result  # E2's choice
    samples = 20_000 if quick else 200_000
    starts = 1 if quick else 2
    covariances = [c for c in _test_covariances(D) if not quick or c[0] in _E5_QUICK]
    settings = {"d": D, "n": N, "loops": L, "train sigma_x": "I", "test prior": "Σ'⁻¹",
                "test covariances": [name for name, _ in covariances], "sparse model": "E1's (e1_sparse_L3)",
                "full model": f"E2's choice (e2_full_L3_seed{full.seed})", "model source": sparse_model.source,
                "exact optimum starts": starts, "Monte Carlo prompts": samples}
    rows = []
    optimiser = []
    for name, cov in covariances:
        test = Task.gatmiry(D, N, sigma_x=cov)
        opt = _optimum(test, L, starts)
        optimiser.append(f"exact optimum for {name}: {opt.status}")
        f_opt = opt.loss
        f_sparse = population_loss(test, sparse.params["A"], L, sparse.params["u"])
        with warnings.catch_warnings():  # an untrusted standard error is reported in the row instead
            warnings.simplefilter("ignore", RuntimeWarning)
            ss = monte_carlo_loss(test, sparse.params["A"], L, sparse.params["u"], samples=samples, seed=300)
        sf = mc_summary(prompt_errors(full.params, "full", test, L, samples, seed=301))
        rows.append({"test covariance": name, "f_opt_for_test": f_opt, "optimum converged": opt.converged,
                     "sparse_exact": f_sparse, "sparse / optimum (exact)": f_sparse / f_opt,
                     "sparse_mc": ss.mean, "sparse_se": ss.stderr, "sparse_mc_ess": ss.ess,
                     "full_mc": sf["mean"], "full_se": sf["se"],
                     "full / optimum": sf["mean"] / f_opt, "full / optimum SE": sf["se"] / f_opt,
                     "10 largest / sum (full)": sf["top10_share"],
                     "full resolved": "yes" if sf["resolved"] else f"no ({sf['why']})",
                     "sparse MC resolved": "yes" if ss.trusted else f"no ({ss.why})"})

    def ratio(r):
        text = f"full {r['full / optimum']:.3g}x ± {r['full / optimum SE']:.2g}"
        return text if r["full resolved"] == "yes" else text + f" (not resolved: {r['full resolved'][4:-1]})"

    summary = (_provenance_text([sparse_model, fulls[best]]) + "test loss / exact optimum of the sparse (preconditioned-GD) form for that covariance (Monte Carlo "
               "ratios ± their standard errors): " + "; ".join(
                   f"{r['test covariance']}: sparse {r['sparse / optimum (exact)']:.3g}x (exact), {ratio(r)}" for r in rows))
    unconv = [r["test covariance"] for r in rows if not r["optimum converged"]]
    unres = [r["test covariance"] for r in rows if r["full resolved"] != "yes"]
    if unconv:
        summary += f"; the exact optimum did not converge for {', '.join(unconv)}"
    status = "unresolved" if (unconv or unres) else "pass"
    return Outcome(status, summary, {"rows": rows, "models": [sparse_model.record(), fulls[best].record()]},
                   params=settings, examples_run=2 * samples * len(rows),
                   optimiser=tuple(optimiser),
                   worst_case=max(({"test covariance": r["test covariance"], "full / optimum": r["full / optimum"],
                                    "SE": r["full / optimum SE"]} for r in rows), key=lambda w: w["full / optimum"]))


def experiment_out_of_distribution(quick: bool = False, progress=None) -> Record:
    """E5 as a Record (REGISTRY["E5"].run): see _e5."""
    return REGISTRY["E5"].run(quick, progress=progress)


def _one_blas_thread(check):
    """Run an experiment with one BLAS thread (threadpoolctl; the caller's setting is restored
    afterwards): its products are small, and on a busy machine a second thread only spins
    (SciPy's optimiser steps and the Monte Carlo forward passes take 2-300x the CPU time). The
    numbers are the same."""
    @functools.wraps(check)
    def run(quick, params, **options):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            return check(quick, params, **options)

    return run


def _spec(id, title, statement, check, figures):
    return Spec(id, "experiment", title, _one_blas_thread(check), statement=statement, figures=figures)


#: The experiments, each declared once (its settings are set in the check and reported in params).
REGISTRY = {
    "E1": _spec("E1", "Sparse model trained on prompts against the exact optimum (d = 5, n = 20, loops = 3)",
                f"The sparse model trained on sampled prompts lands within {TARGET_REL:g} (relative Frobenius) of the "
                "exact optimum found blind by optimal_preconditioner", _e1, ("training_curves",)),
    "E2": _spec("E2", "Full looped model (all of P, Q trainable) against the sparse form",
                "Unrestricted attention against preconditioned GD: the full model's loss against the exact sparse optimum",
                _e2, ("training_curves",)),
    "E3": _spec("E3", "Optimal loss against loops; looped against multi-layer",
                "The exact optimal loss against loops, and trained looped against trained multi-layer models",
                _e3, ("looped_vs_multilayer", "training_curves")),
    "E4": _spec("E4", "Trained with 2 and 5 loops, run with up to 64",
                "Models trained with few loops, run with more loops at test time: median and mean error over prompts",
                _e4, ("test_time_loops", "training_curves")),
    "E5": _spec("E5", "Out-of-distribution test covariances",
                "Trained models on test covariances other than the training one, against the exact optimum for each",
                _e5, ()),
}


def run_experiments(ids=None, quick: bool = False, progress=None, bars=None) -> list[Record]:
    """Run the experiments (all, or the given ids in order); progress(result) after each;
    bars: show tqdm bars during training (None: only on a terminal). quick: True or False.
    Arguments are checked before any experiment runs."""
    if isinstance(ids, str):
        ids = [ids]
    if ids is not None and not isinstance(ids, (list, tuple)):
        raise TypeError(f"ids: expected a list of experiment ids such as ['E1', 'E4'], got {type(ids).__name__}")
    quick = V.boolean("quick", quick)
    if progress is not None:
        V.function("progress", progress)
    bars = V.optional_boolean("bars", bars)
    ids = list(REGISTRY) if ids is None else list(ids)
    for i in ids:
        if i not in REGISTRY:
            raise ValueError(f"ids: unknown experiment {i!r}; expected some of {', '.join(REGISTRY)}")
    out = []
    for i in ids:
        res = REGISTRY[i].run(quick, progress=bars)
        out.append(res)
        if progress is not None:
            progress(res)
    return out
