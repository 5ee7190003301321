"""Sweeps: a function evaluated over a `Grid` of parameters, serially or on any executor, with an
optional cache of finished cells.

  Grid(d=[2, 5], loops=[2, 3])      the cases {"d": 2, "loops": 2}, {"d": 2, "loops": 3}, ... (every
                                    combination, the first axis outermost)
  sweep(fn, grid, executor=None, cache=None)
                                    [fn(**case) for case in grid], in grid order

The executor is any `concurrent.futures.Executor`: a ProcessPoolExecutor on one machine, the
executor of a dask.distributed Client (`client.get_executor()`) on a cluster, or an MPIPoolExecutor
(mpi4py.futures) in a batch job (docs/own-claims.md, "Sweeps on many processes and machines").
The results are those of a serial run on the same machine: each cell is one call fn(**case), and
the cells are put back in grid order. fn must be importable by the workers: a function defined
at module level (or a functools.partial of one), not a lambda or a nested function; sweep checks
this first and says so.

With cache=DIR every finished cell is written to DIR at once, atomically (a temporary file, then
os.replace), and a rerun reads it instead of calling fn. A cell's key is made of fn's module and
name, a hash of fn's module source, a hash of the looptheory package's files (so a changed
editable install never serves cells computed by older code) and the cell's parameters exactly
(floats by their bits). A cache file is validated when it is read (its header, key, parameters
and a SHA-256 of its payload); one that does not validate is computed again. The payload is a
pickle: read only caches you wrote. If fn raises or the executor dies, the cells finished before
stay in the cache, and SweepError says how many.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import inspect
import itertools
import json
import os
import pickle
import sys
from fractions import Fraction

import numpy as np

from . import _validate as V

CACHE_FORMAT = 1
_MAGIC = b"looptheory-sweep-cell\n"


class Grid:
    """A region of parameters as a product of axes: Grid(name=[values], ...). Iterating gives one
    dict per combination, the first axis outermost (like itertools.product); len() is their
    number. Every axis needs at least one value (an empty axis would make an empty region, and is
    refused); a single value is given as a one-element list."""

    __slots__ = ("_axes",)

    def __init__(self, **axes):
        if not axes:
            raise ValueError("Grid: expected at least one axis, e.g. Grid(d=[2, 3])")
        out = {}
        for name, values in axes.items():
            if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
                raise TypeError(f"Grid: axis {name!r}: expected a list of values, got {values!r} "
                                f"(a single value is written [{values!r}])")
            values = tuple(values)
            if not values:
                raise ValueError(f"Grid: axis {name!r} has no values: the region would have no case")
            out[name] = values
        object.__setattr__(self, "_axes", out)

    def __setattr__(self, name, value):
        raise AttributeError("Grid is immutable")

    @property
    def axes(self) -> dict:
        """{name: tuple of values}, in the order given."""
        return dict(self._axes)

    def __iter__(self):
        names = list(self._axes)
        for combo in itertools.product(*self._axes.values()):
            yield dict(zip(names, combo))

    def __len__(self) -> int:
        return int(np.prod([len(v) for v in self._axes.values()]))

    def __eq__(self, other):
        return isinstance(other, Grid) and _canonical(self._axes) == _canonical(other._axes)

    __hash__ = None

    def __repr__(self) -> str:
        return "Grid(" + ", ".join(f"{k}={list(v)!r}" for k, v in self._axes.items()) + ")"


class SweepError(RuntimeError):
    """A sweep that could not finish: fn raised on a cell, or the executor died. `done` maps the
    index (in grid order) of every cell finished before to its result; `total` is the number of
    cells. With a cache those cells are already written."""

    def __init__(self, message, done, total):
        super().__init__(message)
        self.done = done
        self.total = total


def require_importable(name: str, fn) -> str:
    """fn's "module:qualname" if worker processes can import it (standard pickle finds it by
    name); TypeError naming `name` otherwise (a lambda, a nested function, a bound method of
    an unpicklable object)."""
    V.function(name, fn)
    qual = getattr(fn, "__qualname__", "")
    if "<lambda>" in qual or "<locals>" in qual:
        raise TypeError(f"{name}: must be importable by worker processes: a function defined at module level (or a "
                        f"functools.partial of one), not {qual!r}; define it at the top level of a module")
    try:
        pickle.dumps(fn)
    except Exception as exc:  # PicklingError, AttributeError, TypeError, ...
        raise TypeError(f"{name}: must be importable by worker processes (a function defined at module level); "
                        f"{fn!r} cannot be pickled ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if isinstance(fn, functools.partial):
        parts = [_describe(name, a) for a in fn.args] + [f"{k}={_describe(name, v)}" for k, v in fn.keywords.items()]
        return f"partial({require_importable(name, fn.func)}, {', '.join(parts)})"
    return f"{getattr(fn, '__module__', '?')}:{qual or type(fn).__qualname__}"


def _describe(name, x) -> str:
    """An argument bound by a functools.partial, as text for the cache key."""
    if callable(x):
        return require_importable(name, x)
    try:
        return _canonical_text(x)
    except TypeError:
        return repr(x)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=None)
def package_hash() -> str:
    """SHA-256 of the looptheory package's files (sources and shipped data), by relative path."""
    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith((".pyc", ".pyo")):
                continue
            path = os.path.join(folder, f)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as fh:
                h.update(_digest(fh.read()).encode())
    return h.hexdigest()


def _module_source_hash(fn) -> str:
    """SHA-256 of the source of fn's module ("" when it has no source file, e.g. a REPL)."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    mod = sys.modules.get(getattr(target, "__module__", None) or "")
    try:
        path = inspect.getsourcefile(mod) if mod is not None else None
    except TypeError:
        path = None
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as fh:
        return _digest(fh.read())


def _canonical(x):
    """x as JSON data that identifies it exactly (floats by their hex bits, arrays with dtype and
    shape); TypeError for a value that cannot be keyed."""
    if isinstance(x, dict):
        return ["dict", sorted([str(k), _canonical(v)] for k, v in x.items())]
    if isinstance(x, (list, tuple)):
        return [type(x).__name__, [_canonical(v) for v in x]]
    if isinstance(x, np.ndarray):
        return ["array", x.dtype.str, list(x.shape), [_canonical(v) for v in x.ravel().tolist()]]
    if isinstance(x, (bool, np.bool_)):
        return ["bool", bool(x)]
    if isinstance(x, (int, np.integer)):
        return ["int", str(int(x))]
    if isinstance(x, (float, np.floating)):
        return ["float", float(x).hex()]
    if isinstance(x, Fraction):
        return ["fraction", str(x)]
    if isinstance(x, str) or x is None:
        return x
    raise TypeError(f"grid: the value {x!r} ({type(x).__name__}) cannot be part of a cache key; use numbers, strings, "
                    f"tuples, lists, dicts or NumPy arrays")


def _canonical_text(x) -> str:
    return json.dumps(_canonical(x), separators=(",", ":"))


def _cell_key(fn_name, fn_source, params) -> tuple:
    text = _canonical_text(params)
    key = _digest(json.dumps([fn_name, fn_source, package_hash(), text]).encode())
    return key, text


def _cache_path(cache, key):
    return os.path.join(cache, key[:2], key + ".pkl")


def _load_cell(path, key, fn_name, params_text):
    """(True, result) if path holds a valid cell for this key, else (False, None)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False, None
    if not data.startswith(_MAGIC):
        return False, None
    try:
        head, payload = data[len(_MAGIC):].split(b"\n", 1)
        header = json.loads(head)
        ok = (header.get("format") == CACHE_FORMAT and header.get("key") == key and header.get("fn") == fn_name
              and header.get("params") == params_text and header.get("package") == package_hash()
              and header.get("payload_sha256") == _digest(payload))
        if not ok:
            return False, None
        return True, pickle.loads(payload)
    except Exception:  # a torn or foreign file is recomputed, never trusted
        return False, None


def _save_cell(path, key, fn_name, params_text, result):
    from .verify import atomic_write

    payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
    header = {"format": CACHE_FORMAT, "key": key, "fn": fn_name, "params": params_text, "package": package_hash(),
              "payload_sha256": _digest(payload)}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write(path, _MAGIC + json.dumps(header).encode() + b"\n" + payload)


#: Exceptions (by class name) with which an executor reports that it, not fn, failed.
_EXECUTOR_FAILURES = ("BrokenExecutor", "BrokenProcessPool", "BrokenThreadPool", "KilledWorker", "CommClosedError",
                      "CancelledError")


def _executor_failed(exc) -> bool:
    return any(c.__name__ in _EXECUTOR_FAILURES for c in type(exc).__mro__)


def sweep(fn, grid, executor=None, cache=None) -> list:
    """[fn(**case) for case in grid]: fn evaluated on every case of a `Grid`, in grid order.

    fn: a function importable by worker processes (defined at module level, or a
    functools.partial of one: TypeError otherwise); grid: a Grid; executor: None (serial, in this
    process) or any concurrent.futures.Executor (ProcessPoolExecutor, a dask.distributed
    Client's `get_executor()`, mpi4py.futures.MPIPoolExecutor), which sweep does not shut down;
    cache: None or a folder (created if missing) where each finished cell is kept (module
    docstring). The results equal those of executor=None on the same machine.

    If fn raises on a cell, the other cells still run (and are cached), then SweepError names
    the first failing cell in grid order, chained to fn's exception. If the executor dies
    (a killed worker process), SweepError says how many cells finished; with a cache they are
    kept and a rerun computes only the rest. Ctrl-C cancels the cells not yet started."""
    fn_name = require_importable("fn", fn)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid: expected a looptheory.Grid, got {type(grid).__name__}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(f"executor: expected None or a concurrent.futures.Executor, got {type(executor).__name__}")
    if cache is not None:
        if not isinstance(cache, (str, os.PathLike)) or not str(cache).strip():
            raise TypeError(f"cache: expected None or a folder name, got {cache!r}")
        cache = os.fspath(cache)
        if os.path.exists(cache) and not os.path.isdir(cache):
            raise ValueError(f"cache: {cache!r} exists and is not a folder")
        os.makedirs(cache, exist_ok=True)
    cells = list(grid)
    total = len(cells)
    fn_source = _module_source_hash(fn) if cache is not None else ""
    keys = [_cell_key(fn_name, fn_source, c) if cache is not None else (None, None) for c in cells]
    results = {}
    for i, (key, text) in enumerate(keys):
        if cache is not None:
            ok, value = _load_cell(_cache_path(cache, key), key, fn_name, text)
            if ok:
                results[i] = value
    todo = [i for i in range(total) if i not in results]

    def finish(i, value):
        results[i] = value
        if cache is not None:
            _save_cell(_cache_path(cache, keys[i][0]), keys[i][0], fn_name, keys[i][1], value)

    def kept():
        return f"; the {len(results)} finished cells are in the cache {cache!r}" if cache is not None else \
               "; pass cache=DIR to keep finished cells"

    errors = {}
    if executor is None:
        for i in todo:
            try:
                value = fn(**cells[i])
            except Exception as exc:
                raise SweepError(f"fn raised on cell {i} of {total} {cells[i]!r}: {exc!r}{kept()}",
                                 dict(results), total) from exc
            finish(i, value)
    else:
        futures = {}
        try:
            for i in todo:
                futures[executor.submit(fn, **cells[i])] = i
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    value = fut.result()
                except Exception as exc:
                    if _executor_failed(exc):
                        raise SweepError(f"executor: it stopped working after {len(results)} of {total} cells "
                                         f"({type(exc).__name__}: {exc}){kept()}", dict(results), total) from exc
                    errors[i] = exc
                    continue
                finish(i, value)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    if errors:
        i = min(errors)
        raise SweepError(f"fn raised on {len(errors)} of {total} cells, first on cell {i} {cells[i]!r}: "
                         f"{errors[i]!r}{kept()}", dict(results), total) from errors[i]
    return [results[i] for i in range(total)]
