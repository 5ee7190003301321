import json
import os
import subprocess
import sys

import pytest

from looptheory.cli import main


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "verify" in capsys.readouterr().out


def test_unknown_option_is_one_line_exit_2(capsys):
    assert main(["verify", "--bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--bogus" in err


def test_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["verify", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out" in err and err.count("\n") == 0
    assert (tmp_path / "keep.txt").read_text() == "user data"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["verify", "--out", str(f)]) == 2
    assert f.read_text() == "x"


@pytest.mark.slow
def test_verify_quick_writes_report(tmp_path):
    out = tmp_path / "rep"
    r = subprocess.run([sys.executable, "-m", "looptheory", "verify", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=2400)  # a guard against a hang, not a timing target (benchmarks/ time it)
    assert r.returncode == 0, r.stderr
    report = (out / "report.md").read_text()
    assert "## Checks of the toolkit (quick run)" in report and "**pass**" in report
    data = json.loads((out / "results.json").read_text())
    assert all(c["verdict"] == "pass" for c in data["checks"] + data["proofs"])
    assert (out / "loss_vs_loops.png").exists()  # the quick run saves PNG only (the full run adds SVG)
    # every claim, every proofs_check module and every trained-model experiment is in the report
    from proofs_check.runner import CHECKS

    assert [c["id"] for c in data["claims"]] == ["G1", "G1-structure", "G2", "G3", "G4", "G5", "C1", "C2", "A1", "G6", "A1-global", "B1"]
    assert [c["id"] for c in data["proofs"]] == [f"proofs_check.{name}" for name in CHECKS]
    assert [e["id"] for e in data["experiments"]] == ["E1", "E2", "E3", "E4", "E5"]
    assert data["complete"] and data["meta"]["status"] == "complete" and data["meta"]["mode"] == "quick"
    assert all(set(rec) == set(data["records"][0]) for rec in data["records"])  # one record shape
    for fig in ("training_curves", "test_time_loops", "looped_vs_multilayer"):
        assert (out / f"{fig}.png").exists() and f"({fig}.png)" in report
    # progress is shown while it runs: one line per item
    total = len(data["records"])
    assert all(f"[{i}/{total}]" in r.stderr for i in range(1, total + 1))
    # G1's cell table is printed once; no unexplained nan or None cell
    assert report.count("the table under G1 above") == 1
    assert "| nan |" not in report and "| None |" not in report and " nan " not in report


# --- --out problems are one-line errors with status 2, found before any work (issue 11) -------
# None of these tests runs a verify: the work function is replaced by one that fails the test.

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_work(monkeypatch):
    from looptheory import cli

    def work(out, args):
        raise AssertionError(f"verify started its work in {out!r}")

    monkeypatch.setattr(cli, "_run_verify", work)


def _one_line_error(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("looptheory: error: --out"), err
    for word in words:
        assert word in err, err
    return err


def test_bad_out_paths_are_one_line_errors(tmp_path, capsys, no_work):
    f = tmp_path / "file"
    f.write_text("x")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    _one_line_error(capsys, ["verify", "--out", ""], "empty")
    _one_line_error(capsys, ["verify", "--out", str(dangling)], "symlink", "does not exist")
    _one_line_error(capsys, ["verify", "--out", str(f / "sub" / "dir")], "under", "a file")
    _one_line_error(capsys, ["verify", "--out", str(dangling / "sub")], "under", "missing target")
    assert sorted(os.listdir(tmp_path)) == ["dangling", "file"] and f.read_text() == "x"


def test_read_only_folders_are_found_by_a_real_write(tmp_path, capsys, monkeypatch, no_work):
    # The tests run as root, whom chmod 0o555 does not stop, so the refusal a read-only folder
    # gives is simulated where the probe meets it: os.open creating a file in that folder.
    real_open = os.open
    read_only = {str(tmp_path / "ro"), str(tmp_path)}

    def refusing_open(name, flags, *a, **k):
        if os.path.dirname(os.fspath(name)) in read_only and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, flags, *a, **k)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", refusing_open)
    _one_line_error(capsys, ["verify", "--out", str(tmp_path / "ro")], "read-only", "Permission denied")
    _one_line_error(capsys, ["verify", "--out", str(tmp_path / "new")], "cannot create", "read-only")
    assert os.listdir(tmp_path) == ["ro"] and os.listdir(tmp_path / "ro") == []
    # and os.access, which is what a non-root user would be refused by
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    _one_line_error(capsys, ["verify", "--out", str(tmp_path / "ro")], "read-only")


def test_a_folder_in_use_is_refused_and_a_killed_run_frees_it(tmp_path, capsys, monkeypatch):
    from looptheory import cli
    from looptheory.runlock import LOCK_NAME, FolderBusy, lock_folder

    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT}
    with lock_folder(str(out)):
        # a second run, in its own process, while this one holds the folder
        r = subprocess.run([sys.executable, "-m", "looptheory", "verify", "--quick", "--out", str(out)],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "in use" in r.stderr and repr(str(out)) in r.stderr
        assert str(os.getpid()) in r.stderr  # the holder is named
        with pytest.raises(FolderBusy):  # within one process too (each lock opens its own file)
            with lock_folder(str(out)):
                pass
    # a holder killed with SIGKILL: the OS releases its lock, the folder can be taken at once
    child = subprocess.Popen([sys.executable, "-c", "import sys, time, importlib.util as u\n"
                              "s = u.spec_from_file_location('runlock', sys.argv[1]); m = u.module_from_spec(s)\n"
                              "s.loader.exec_module(m)\n"
                              "with m.lock_folder(sys.argv[2]):\n    print('held', flush=True); time.sleep(60)\n",
                              os.path.join(ROOT, "looptheory", "runlock.py"), str(out)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=str(child.pid)):
            with lock_folder(str(out)):
                pass
        child.kill()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    # the lock file stays, and does not make the folder count as non-empty
    assert os.listdir(out) == [LOCK_NAME]
    ran = []
    monkeypatch.setattr(cli, "_run_verify", lambda o, args: ran.append(o) or 0)
    assert main(["verify", "--quick", "--out", str(out)]) == 0 and ran == [str(out)]
