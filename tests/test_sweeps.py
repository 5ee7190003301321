"""lt.sweep: results in grid order equal to a serial run on any executor, importable functions
only, and a cache that is written cell by cell, validated on load, keyed on the package's source
and kept when the executor dies."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

import looptheory as lt
from looptheory import sweeps

GRID = lt.Grid(loops=[1, 2, 3], gamma=[0.5, 0.9])
CALLS = []


def scale_cell(loops, gamma):
    """The scalar family's loss at d = 2, n = 10 (a module-level function: importable)."""
    CALLS.append((loops, gamma))
    return lt.scale_loss(lt.Task(2, 10), loops, gamma)


def dies_at(x):
    if x == 3:
        os._exit(1)  # a worker process killed mid-sweep
    return x * x


def test_grid_order_and_a_process_pool_equals_serial():
    assert list(lt.Grid(a=[1, 2], b=["x", "y"])) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                                              {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert len(GRID) == 6
    serial = lt.sweep(scale_cell, GRID)
    assert serial == [lt.scale_loss(lt.Task(2, 10), c["loops"], c["gamma"]) for c in GRID]
    with ProcessPoolExecutor(2) as ex:
        assert lt.sweep(scale_cell, GRID, executor=ex) == serial  # bit for bit


def test_fn_must_be_importable():
    with pytest.raises(TypeError, match="fn: must be importable by worker processes"):
        lt.sweep(lambda loops, gamma: 0.0, GRID)

    def nested(loops, gamma):
        return 0.0

    with pytest.raises(TypeError, match="fn: must be importable.*<locals>"):
        lt.sweep(nested, GRID)
    with pytest.raises(TypeError, match="grid: expected a looptheory.Grid"):
        lt.sweep(scale_cell, [{"loops": 1, "gamma": 0.5}])


def test_cache_skips_finished_cells_and_revalidates(tmp_path, monkeypatch):
    CALLS.clear()
    first = lt.sweep(scale_cell, GRID, cache=tmp_path)
    assert len(CALLS) == 6
    files = sorted(p for p in tmp_path.rglob("*.pkl"))
    assert len(files) == 6 and not list(tmp_path.rglob("*.part"))
    assert lt.sweep(scale_cell, GRID, cache=tmp_path) == first and len(CALLS) == 6  # nothing recomputed
    files[0].write_bytes(files[0].read_bytes()[:-3])  # a torn file is not trusted
    assert lt.sweep(scale_cell, GRID, cache=tmp_path) == first and len(CALLS) == 7
    monkeypatch.setattr(sweeps, "package_hash", lambda: "another version of the package")
    assert lt.sweep(scale_cell, GRID, cache=tmp_path) == first and len(CALLS) == 13  # stale cells not served
    with pytest.raises(TypeError, match="cannot be part of a cache key"):
        lt.sweep(scale_cell, lt.Grid(loops=[1], gamma=[object()]), cache=tmp_path)


def test_a_dying_executor_keeps_the_finished_cells(tmp_path):
    grid = lt.Grid(x=[0, 1, 2, 3, 4, 5])
    with ProcessPoolExecutor(1) as ex:
        with pytest.raises(lt.SweepError, match="executor: it stopped working after") as err:
            lt.sweep(dies_at, grid, executor=ex, cache=tmp_path)
    done = err.value.done
    assert set(done) <= {0, 1, 2} and len(list(tmp_path.rglob("*.pkl"))) == len(done)
    assert all(done[i] == i * i for i in done)
    with pytest.raises(lt.SweepError, match=r"fn raised on cell 3 of 6 \{'x': 3\}"):
        lt.sweep(sweeps_raise, grid, cache=tmp_path)


def sweeps_raise(x):
    if x == 3:
        raise ValueError("x = 3")
    return x * x


@pytest.mark.slow
def test_a_local_dask_cluster_equals_serial():
    distributed = pytest.importorskip("distributed")
    serial = lt.sweep(scale_cell, GRID)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            assert lt.sweep(scale_cell, GRID, executor=client.get_executor()) == serial
