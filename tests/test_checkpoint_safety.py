"""Checkpoint data safety (issue 11, part 4): the user's name holds a complete file or nothing,
even after SIGKILL or a full disk; a finished run is never lost; a damaged or hostile file gets
a ValueError naming the path and the problem before any large allocation.

Each damaged file is made from a real checkpoint of a tiny run, so the tests exercise the
reader on exactly the format the writer produces.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import pytest

import looptheory as lt
from looptheory import training as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = lt.Task(2, 4)
RUN = dict(model="full", loops=2, steps=5, batch=8, seed=3, progress=False)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real checkpoint (full model: P, Q and the whole optimizer state) and its result."""
    folder = tmp_path_factory.mktemp("good")
    res = T.train(TASK, checkpoint=str(folder / "good"), **RUN)
    return str(folder / "good.npz"), res


def _members(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rewrite(path, members, **meta_changes):
    members = dict(members)
    if meta_changes:
        meta = json.loads(str(members["meta"]))
        for key, value in meta_changes.items():
            target = meta
            *parents, last = key.split(".")
            for p in parents:
                target = target[p]
            target[last] = value
        members["meta"] = np.array(json.dumps(meta))
    np.savez(path, **members)
    return str(path)


def _refused(path, *words):
    with pytest.raises(ValueError) as info:
        T.load_checkpoint(path)
    message = str(info.value)
    assert repr(str(path)) in message, message
    for word in words:
        assert word in message, message
    return message


def _same(a, b):
    assert (a.model, a.loops, a.steps, a.batch, a.optimizer, a.seed) == (b.model, b.loops, b.steps, b.batch,
                                                                         b.optimizer, b.seed)
    for slot in ("m", "v", "last"):
        for k in a.params:
            np.testing.assert_array_equal(a.state[slot][k], b.state[slot][k])
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    np.testing.assert_array_equal(a.history, b.history)
    assert a.state["rng"] == b.state["rng"]


# --- writing ----------------------------------------------------------------------------------

def test_train_leaves_exactly_the_checkpoint_and_says_where(good):
    path, res = good
    assert res.checkpoint == path and res.checkpoint_error is None
    assert os.listdir(os.path.dirname(path)) == ["good.npz"]  # no temporary or probe file
    _same(T.load_checkpoint(path), res)


def test_a_full_disk_at_the_end_keeps_the_finished_result(tmp_path, monkeypatch):
    def full_disk(fh, **arrays):
        fh.write(b"PK\x03\x04" + bytes(100))  # some bytes reach the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(T.np, "savez", full_disk)
    target = tmp_path / "model.npz"
    with pytest.warns(RuntimeWarning, match="No space left"):
        res = T.train(TASK, checkpoint=str(target), **RUN)
    monkeypatch.undo()
    assert isinstance(res, T.TrainResult) and res.checkpoint is None
    assert repr(str(target)) in res.checkpoint_error and "unsaved" in res.checkpoint_error
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone, nothing under the name
    np.testing.assert_array_equal(res.params["P"], T.train(TASK, **RUN).params["P"])


def test_save_checkpoint_on_a_full_disk_changes_nothing(tmp_path, monkeypatch, good):
    _, res = good
    target = tmp_path / "keep.npz"
    target.write_bytes(b"precious")

    def full_disk(fh, **arrays):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(T.np, "savez", full_disk)
    with pytest.raises(OSError, match="keep.npz") as info:
        T.save_checkpoint(target, res, overwrite=True)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"precious" and sorted(os.listdir(tmp_path)) == ["keep.npz"]


def test_a_name_taken_during_training_is_never_replaced(tmp_path, monkeypatch):
    target = tmp_path / "model.npz"
    run = T._run

    def another_process_takes_the_name(*args):
        result = run(*args)
        target.write_bytes(b"precious")
        return result

    monkeypatch.setattr(T, "_run", another_process_takes_the_name)
    with pytest.warns(RuntimeWarning, match="someone else"):
        res = T.train(TASK, checkpoint=str(target), **RUN)
    assert target.read_bytes() == b"precious"
    assert res.checkpoint == str(tmp_path / "model-2.npz") and "model-2.npz" in res.checkpoint_error
    _same(T.load_checkpoint(res.checkpoint), res)
    assert sorted(os.listdir(tmp_path)) == ["model-2.npz", "model.npz"]


def test_checkpoint_problems_found_before_training(tmp_path, monkeypatch):
    def no_training(*args):
        raise AssertionError("trained although the checkpoint could not be written")

    monkeypatch.setattr(T, "_run", no_training)
    with pytest.raises(ValueError, match="checkpoint"):
        T.train(TASK, checkpoint="", **RUN)
    with pytest.raises(ValueError, match="checkpoint: loops = 20000 exceeds"):
        T.train(TASK, **{**RUN, "loops": 20_000}, checkpoint=str(tmp_path / "x"))
    # A read-only folder: as root, chmod does not stop writes, so the refusal the probe meets
    # on a read-only folder is simulated at os.open.
    real_open = os.open

    def read_only(name, flags, *a, **k):
        if os.path.dirname(name) == str(tmp_path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
        return real_open(name, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(ValueError, match="checkpoint: cannot write in folder .*Permission denied"):
        T.train(TASK, checkpoint=str(tmp_path / "x"), **RUN)
    monkeypatch.undo()
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="exists"):  # a symlink under the name is not replaced
        T.train(TASK, checkpoint=str(dangling), **RUN)
    assert sorted(os.listdir(tmp_path)) == ["dangling.npz"]


def test_save_checkpoint_refuses_what_load_would_refuse(tmp_path, good):
    _, res = good
    odd = T.TrainResult(res.params, "full", 2, TASK, res.history[:3], 5, 8, "adam", 1e-2, 1e-2, 0, res.state)
    with pytest.raises(ValueError, match="result.*history"):
        T.save_checkpoint(tmp_path / "odd", odd)
    assert list(tmp_path.iterdir()) == []


_CHILD = r"""
import sys, time
import numpy as np
import looptheory as lt
from looptheory import training as T

where, target = sys.argv[1], sys.argv[2]
real_savez, real_sync = np.savez, T._fsync_folder

def stalled_savez(fh, **arrays):
    buf = __import__("io").BytesIO()
    real_savez(buf, **arrays)
    data = buf.getvalue()
    fh.write(data[: len(data) // 2])  # half of the file is on disk when the kill comes
    fh.flush()
    print("stalled", flush=True)
    time.sleep(60)

def stalled_after_publish(folder):
    print("stalled", flush=True)  # the file is in place, the temporary name not yet removed
    time.sleep(60)

if where == "write":
    np.savez = stalled_savez
else:
    T._fsync_folder = stalled_after_publish
print("start", flush=True)
T.train(lt.Task(2, 4), "full", 2, steps=5, batch=8, seed=3, progress=False, checkpoint=target)
"""


@pytest.mark.parametrize("where", ["write", "publish"])
def test_sigkill_leaves_a_complete_file_or_none(tmp_path, where):
    target = tmp_path / "model.npz"
    env = {**os.environ, "PYTHONPATH": ROOT}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, where, str(target)], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=str(tmp_path))
    try:
        lines = []
        deadline = time.monotonic() + 60
        while "stalled" not in lines and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:  # the child ended without reaching the write
                break
            lines.append(line.strip())
        assert "stalled" in lines, lines
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    names = sorted(os.listdir(tmp_path))
    # the only leftover besides the checkpoint is the hidden temporary file of the killed process
    assert [n for n in names if n != "model.npz"] == [n for n in names if n.startswith(".model.npz.tmp-")]
    assert len(names) - ("model.npz" in names) == 1, names
    if where == "write":
        assert not target.exists()  # never a truncated file under the user's name
    else:
        _same(T.load_checkpoint(target), T.train(TASK, **RUN))  # complete and right


# --- reading damaged or hostile files ---------------------------------------------------------

def test_a_truncated_file_is_refused(tmp_path, good):
    data = open(good[0], "rb").read()
    for cut in (len(data) // 2, len(data) - 1, 10):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        _refused(bad)


def test_a_flipped_byte_is_refused_or_harmless(tmp_path, good):
    # A flip in the data, the .npy headers or the zip records is refused (zip CRC, header or
    # size checks); a flip in a field nothing reads (a timestamp) may load, and then the
    # result must be the original exactly: damage never gives silently wrong numbers.
    data = open(good[0], "rb").read()
    original = T.load_checkpoint(good[0])
    refused = 0
    positions = sorted(set(np.linspace(0, len(data) - 1, 40).astype(int)) | {len(data) // 2})
    for pos in positions:
        bad = tmp_path / f"flip{pos}.npz"
        bad.write_bytes(data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1:])
        try:
            back = T.load_checkpoint(bad)
        except ValueError as exc:
            assert repr(str(bad)) in str(exc)
            refused += 1
            continue
        _same(back, original)
    assert refused >= 0.8 * len(positions)
    middle = tmp_path / f"flip{len(data) // 2}.npz"
    _refused(middle)


def test_missing_and_unexpected_members_are_refused(tmp_path, good):
    members = _members(good[0])
    for key in ("param_P", "history", "m_Q"):
        _refused(_rewrite(tmp_path / f"no_{key}.npz", {k: v for k, v in members.items() if k != key}),
                 "missing", key)
    _refused(_rewrite(tmp_path / "extra.npz", {**members, "param_X": np.zeros(2)}), "unexpected", "param_X")
    _refused(_rewrite(tmp_path / "no_meta.npz", {k: v for k, v in members.items() if k != "meta"}), "no meta")
    # a whole optimizer slot may be absent (a TrainResult built by hand has none)
    T.load_checkpoint(_rewrite(tmp_path / "no_m.npz", {k: v for k, v in members.items() if not k.startswith("m_")}))


def test_wrong_shapes_types_and_values_are_refused(tmp_path, good):
    members = _members(good[0])
    _refused(_rewrite(tmp_path / "shape.npz", {**members, "param_P": np.zeros((4, 4))}), "param_P", "(3, 3)")
    _refused(_rewrite(tmp_path / "int.npz", {**members, "v_Q": np.zeros((3, 3), dtype=np.int64)}), "v_Q")
    _refused(_rewrite(tmp_path / "nan.npz", {**members, "last_P": np.full((3, 3), np.nan)}), "last_P", "finite")
    _refused(_rewrite(tmp_path / "obj.npz", {**members, "history": np.array(["x"] * 5)}), "history")
    _refused(_rewrite(tmp_path / "meta.npz", {**members, "meta": np.array("not json")}), "JSON")


@pytest.mark.parametrize("change, words", [
    ({"loops": 10**9}, ["loops", "1000000000"]),
    ({"task.d": 10**6}, ["d", "1000000"]),
    ({"steps": 10**12}, ["steps"]),
    ({"loops": True}, ["loops"]),
    ({"model": "huge"}, ["model"]),
    ({"lr": float("nan")}, ["lr"]),
    ({"t": 4}, ["t"]),
    ({"task.sigma_x": [[1.0, 2.0], [2.0, 1.0]]}, ["sigma_x"]),
    ({"task.sigma_w": [[1.0]]}, ["sigma_w"]),
    ({"format": "other"}, ["format"]),
])
def test_absurd_or_inconsistent_settings_are_refused(tmp_path, good, change, words):
    _refused(_rewrite(tmp_path / "bad.npz", _members(good[0]), **change), *words)


def test_multilayer_sizes_come_from_the_checked_settings(tmp_path):
    # loops sets the arrays' sizes here: a meta record claiming more layers than the arrays
    # hold is refused from the headers, before any array is read
    res = T.train(TASK, model="multilayer", loops=2, steps=3, batch=4, progress=False,
                  checkpoint=str(tmp_path / "ml"))
    members = _members(res.checkpoint)
    _refused(_rewrite(tmp_path / "more.npz", members, loops=3), "param_P", "(3, 3, 3)")
    _refused(_rewrite(tmp_path / "huge.npz", members, loops=5000, **{"task.d": 999}), "bytes")


@pytest.mark.parametrize("rng", [
    "rename",
    {"bit_generator": "MT19937", "state": {"key": [0] * 624, "pos": 0}},
    {"bit_generator": "PCG64", "state": {"state": -1, "inc": 1}, "has_uint32": 0, "uinteger": 0},
    {"bit_generator": "PCG64", "state": {"state": 1, "inc": 1}, "has_uint32": 0, "uinteger": 0, "extra": 1},
    [1, 2, 3],
])
def test_a_wrong_generator_state_is_refused(tmp_path, good, rng):
    if rng == "rename":
        rng = json.loads(str(_members(good[0])["meta"]))["rng"]
        rng["state"]["incr"] = rng["state"].pop("inc")
    _refused(_rewrite(tmp_path / "rng.npz", _members(good[0]), rng=rng), "rng")


def _zip_stored_and_raw(path, stored, raw_name, raw_deflated, crc, size):
    """A zip with `stored` members (name: bytes, uncompressed) and one raw deflated member, laid
    out by hand so that a 1 GiB member costs only its compressed bytes to make."""
    out, central = io.BytesIO(), io.BytesIO()
    entries = [(n, 0, zlib.crc32(b), len(b), len(b), b) for n, b in stored.items()]
    entries.append((raw_name, 8, crc, len(raw_deflated), size, raw_deflated))
    for name, method, c, csize, usize, payload in entries:
        offset = out.tell()
        fname = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, c, csize, usize, len(fname), 0))
        out.write(fname + payload)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, c, csize, usize,
                                  len(fname), 0, 0, 0, 0, 0, offset) + fname)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(cd), start, 0))
    path.write_bytes(out.getvalue())
    return path


def test_a_zip_bomb_is_refused_from_the_directory(tmp_path, good):
    # history.npy replaced by a valid .npy header for 2**27 float64 and 1 GiB of zeros, deflated
    # to ~1 MB (a real bomb: right CRC, right sizes; a reader that trusts it allocates 1 GiB).
    # It must be refused from the zip directory, without inflating anything.
    with zipfile.ZipFile(good[0]) as zf:
        stored = {n: zf.read(n) for n in zf.namelist() if n != "history.npy"}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (1 << 27,)})
    header = header.getvalue()
    chunk = bytes(1 << 20)
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)  # byte-aligned, not final: blocks repeat
    raw = first.compress(header) + first.flush(zlib.Z_FULL_FLUSH) + block * 1024 + comp.flush()
    crc = zlib.crc32(header)
    for _ in range(1024):
        crc = zlib.crc32(chunk, crc)
    size = len(header) + (1 << 30)
    bomb = _zip_stored_and_raw(tmp_path / "bomb.npz", stored, "history.npy", raw, crc, size)
    with zipfile.ZipFile(bomb) as zf:  # a valid zip, as a hostile file would be
        assert zf.getinfo("history.npy").file_size == size and len(raw) < 2 << 20
        with zf.open("history.npy") as fh:
            assert np.lib.format.read_array_header_1_0((np.lib.format.read_magic(fh), fh)[1])[0] == (1 << 27,)
    # refused from the zip directory alone: nothing near the claimed 1 GiB is ever allocated
    import tracemalloc

    tracemalloc.start()
    try:
        _refused(bomb, "history.npy", "zip bomb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


@pytest.mark.parametrize("excess, bomb", [(0, False), (1, True)])
def test_the_zip_bomb_limit_is_20_fold_plus_1_mib(tmp_path, good, excess, bomb):
    """A member may claim at most 20 times its compressed size plus 1 MiB: one byte more is
    refused as a zip bomb from the directory; at the limit the claim is let through to the
    reader (which then finds the member shorter than claimed: damaged, not a bomb)."""
    with zipfile.ZipFile(good[0]) as zf:
        stored = {n: zf.read(n) for n in zf.namelist() if n != "history.npy"}
        data = zf.read("history.npy")
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = comp.compress(data) + comp.flush()
    claimed = 20 * len(raw) + (1 << 20) + excess
    path = _zip_stored_and_raw(tmp_path / "limit.npz", stored, "history.npy", raw, zlib.crc32(data), claimed)
    message = _refused(path, "history.npy")
    assert ("zip bomb" in message) == bomb, message


class _Killed(BaseException):
    """Stands for SIGKILL between two system calls."""


def test_without_hard_links_the_name_is_reserved_then_replaced(tmp_path, good, monkeypatch):
    """On a file system without hard links the name is reserved (an empty file, created like any
    new file: mode 0o666 less the umask) and the complete file renamed over it: the save works,
    and a kill between the two steps leaves only that empty file, with an ordinary mode."""
    def no_links(src, dst):
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(T.os, "link", no_links)
    res = good[1]
    saved = T.save_checkpoint(str(tmp_path / "plain"), res)
    _same(T.load_checkpoint(saved), res)

    def killed(src, dst):
        raise _Killed

    monkeypatch.setattr(T.os, "replace", killed)
    with pytest.raises(_Killed):
        T.save_checkpoint(str(tmp_path / "cut"), res)
    with open(tmp_path / "ordinary", "x"):
        pass
    cut = tmp_path / "cut.npz"
    assert cut.stat().st_size == 0 and sorted(os.listdir(tmp_path)) == ["cut.npz", "ordinary", "plain.npz"]
    assert cut.stat().st_mode & 0o777 == (tmp_path / "ordinary").stat().st_mode & 0o777
