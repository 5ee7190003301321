"""One record type for every verified item, and the verify command's selection, resume and
interruption (issue 12). The command-line tests replace the items' functions with cheap stubs,
so that they run in seconds; the real items run in the verify --quick test (test_cli)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest

import looptheory as lt
from looptheory import report
from looptheory import verify as V
from looptheory.cli import main
from looptheory.record import CLAIM_VERDICTS, STATUS_VERDICTS, Outcome, Record, Spec


# --- the record ---------------------------------------------------------------------------------


def test_every_kind_returns_the_one_record_type(monkeypatch):
    from proofs_check import run as run_proofs

    from looptheory import checks, experiments

    check = next(s for s in checks.CHECKS if s.id == "optimal_scale_one_loop").run(quick=True)
    proof = run_proofs("wishart_moments")[0]
    claim = lt.check_claims(["C1"], quick=True)[0]
    # an experiment in its quick form (it re-evaluates the shipped checkpoints, never trains),
    # with the exact engine's first use (loading the loss expansions of loops 1-6, ~10 s) skipped
    monkeypatch.setattr(experiments, "population_loss", lambda task, A, loops, u=None: 1.0)
    experiment = lt.run_experiments(["E4"], quick=True)[0]
    for rec, kind in ((check, "check"), (proof, "proof"), (claim, "claim"), (experiment, "experiment")):
        assert type(rec) is Record and rec.kind == kind, rec
        assert rec.verdict in (CLAIM_VERDICTS if kind == "claim" else STATUS_VERDICTS)
        assert rec.id and rec.title and rec.summary and rec.source and rec.complete, rec.id
        assert isinstance(rec.optimiser, tuple) and isinstance(rec.figures, tuple)
        assert rec.params, f"{rec.id} declares no parameters"
        with pytest.raises(dataclasses.FrozenInstanceError):
            rec.verdict = "pass"
        assert Record.from_dict(json.loads(V.record_json(rec))).id == rec.id
    assert claim.id == "C1" and claim.source.startswith("Chen") and claim.examples_run > 0
    assert experiment.evidence["rows"] and all("SE" in r and "mean resolved" in r for r in experiment.evidence["rows"])
    # the older names are the one record
    assert lt.ClaimResult is Record and lt.ExperimentResult is Record and checks.CheckResult is Record


def test_a_verdict_outside_the_kinds_vocabulary_is_refused():
    with pytest.raises(ValueError, match="verdict"):
        Record("x", "check", "t", "holds", "s")
    with pytest.raises(ValueError, match="verdict"):
        Record("x", "claim", "t", "pass", "s")
    with pytest.raises(ValueError, match="kind"):
        Record("x", "theorem", "t", "pass", "s")


def test_a_crashing_check_becomes_a_record():
    def boom(quick, params):
        raise RuntimeError("no")

    claim = Spec("X", "claim", "t", boom).run(True)
    check = Spec("Y", "check", "t", boom).run(True)
    assert claim.verdict == "unresolved" and check.verdict == "fail"
    assert not claim.complete and "RuntimeError" in claim.summary


def test_the_registry_declares_each_claim_once():
    from looptheory.claims import REGISTRY

    assert list(REGISTRY) == ["G1", "G1-structure", "G2", "G3", "G4", "G5", "C1", "C2", "A1", "G6", "A1-global", "B1"]
    for cid, spec in REGISTRY.items():
        assert spec.id == cid and spec.kind == "claim" and spec.statement
        assert "as reported" in spec.source and "docs/conventions.md" in spec.source
        assert spec.params(True) and spec.params(False)
    # C2's table has exactly the declared cells
    region = REGISTRY["C2"].params(True)
    assert (5, 2) in region["cells (d, n)"] and (5, 8) in region["cells (d, n)"]


def test_g2_parameters_say_what_the_quick_run_does():
    from looptheory.claims import REGISTRY

    quick, full = REGISTRY["G2"].params(True), REGISTRY["G2"].params(False)
    assert "loops <= 0" not in json.dumps(quick) and "inf only" in quick["n (spectral)"]
    assert "loops <= 2" in full["n (spectral)"]


def test_report_prints_g1s_table_once_and_has_no_bare_nan():
    def rec(i, ev):
        return Record(i, "claim", i, "holds", "s", params={"a": 1}, evidence=ev, mode="quick")

    rows = [{"d": 2, "x": 1.0, "y": None}, {"d": 3, "x": float("nan"), "y": 2.0}]
    g1 = rec("G1", {"rows": rows})
    g1s = rec("G1-structure", {"rows": rows, "same_table_as": "G1"})
    meta = {"status": "complete", "mode": "quick", "looptheory": "0", "date": "d", "seconds": 1.0, "python": "3",
            "numpy": "1", "folder": "r"}
    text = report.render([g1, g1s], meta, [], [])
    assert text.count("| d | x | y |") == 1 and "the table under G1 above" in text
    assert "nan" not in text and "None" not in text and "n/a: no value for that row" in text
    assert "quick run" in text


# --- the command line ---------------------------------------------------------------------------


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"looptheory {lt.__version__}"


def test_list_prints_every_item(capsys):
    assert main(["verify", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ids = [line.split("\t")[0] for line in lines]
    kinds = {line.split("\t")[1] for line in lines}
    assert {"G1", "G1-structure", "G3", "C2", "E1", "E5", "gd_equivalence", "proofs_check.flow_bound"} <= set(ids)
    assert kinds == {"check", "proof", "claim", "experiment"} and len(ids) == len(set(ids))
    assert all(len(line.split("\t")) == 3 for line in lines)


@pytest.mark.parametrize("argv, flag", [
    (["verify", "--only", "G9"], "--only"),
    (["verify", "--only", ""], "--only"),
    (["verify", "--only"], "--only"),
    (["verify", "--resume"], "--resume"),
    (["verify", "--resume", ""], "--resume"),
    (["verify", "--resume", "r", "--out", "s"], "--resume"),
    (["verify", "--resume", "r", "--force"], "--resume"),
    (["verify", "--resume", "nowhere"], "--resume"),
    (["verify", "--jobs", "0"], "--jobs"),
    (["verify", "--jobs", "two"], "--jobs"),
])
def test_bad_new_flags_are_one_line_errors(argv, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("looptheory: error:") and flag in err, err
    assert os.listdir(tmp_path) == []


def test_unknown_only_lists_the_valid_ids(capsys):
    assert main(["verify", "--only", "G3", "X1"]) == 2
    err = capsys.readouterr().err
    assert "'X1'" in err and "G1-structure" in err and "E5" in err


def _stub(kind, verdict, calls, raise_first=None):
    def check(quick, params, **options):
        calls.append(check.id)
        if raise_first is not None and calls.count(check.id) == 1:
            raise raise_first()
        return Outcome(verdict, f"stub {check.id} ran", {"rows": [{"a": 1.0}]}, params={"stub": True})

    return check


def _stub_items(calls, interrupt=None):
    specs = []
    for i, (kind, verdict) in enumerate([("check", "pass"), ("claim", "holds"), ("proof", "pass"), ("experiment", "pass")]):
        fn = _stub(kind, verdict, calls, interrupt if i == 1 else None)
        fn.id = f"S{i + 1}"
        specs.append(Spec(f"S{i + 1}", kind, f"stub {i + 1}", fn))
    return specs


@pytest.fixture
def no_figures(monkeypatch):
    monkeypatch.setattr(report, "draw_figures", lambda out, records, quick: ([], [], {}))


def test_only_g3_runs_only_g3(tmp_path, monkeypatch, capsys, no_figures):
    from looptheory import claims

    calls = []
    fn = _stub("claim", "fails", calls)
    fn.id = "G3"
    monkeypatch.setitem(claims.REGISTRY, "G3", dataclasses.replace(claims.REGISTRY["G3"], check=fn))
    out = tmp_path / "s"
    assert main(["verify", "--quick", "--only", "G3", "--out", str(out)]) == 0
    assert calls == ["G3"]
    data = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in data["records"]] == ["G3"] and data["complete"]
    assert data["claims"][0]["verdict"] == "fails" and data["claims"][0]["source"].startswith("Gatmiry")
    assert os.listdir(out / "items") == ["G3.json"]
    text = (out / "report.md").read_text()
    assert "G3: " in text and "Status: complete" in text and "--only G3" in text
    assert "[1/1] FAILS" in capsys.readouterr().err


def test_resume_is_refused_when_the_settings_differ(tmp_path, monkeypatch, capsys, no_figures):
    calls = []
    monkeypatch.setattr(V, "all_items", lambda: _stub_items(calls))
    out = tmp_path / "r"
    assert main(["verify", "--quick", "--only", "S1", "--out", str(out)]) == 0
    capsys.readouterr()
    for argv, words in [(["--only", "S2"], ["--only S1", "--only S2"]),
                        (["--quick", "--only", "S1", "S3"], ["--only"])]:
        assert main(["verify", "--resume", str(out)] + argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("looptheory: error: --resume") and "cannot resume" in err, err
        for w in words:
            assert w in err, err
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "looptheory": "0.0.1"}))
    assert main(["verify", "--resume", str(out)]) == 2
    assert "looptheory 0.0.1" in capsys.readouterr().err
    (out / "run.json").write_text(json.dumps({**run, "mode": "full"}))
    assert main(["verify", "--resume", str(out), "--quick"]) == 2
    assert "full run" in capsys.readouterr().err
    assert calls == ["S1"]  # nothing ran again


def _check_partial(out, finished, total):
    text = (out / "report.md").read_text()
    assert f"incomplete ({len(finished)} of {total} items)" in text
    for i in finished:
        assert f"{i}: stub" in text
    data = json.loads((out / "results.json").read_text())
    assert not data["complete"] and [r["id"] for r in data["records"]] == finished
    return text


@pytest.mark.parametrize("how, code", [(KeyboardInterrupt, 130), ("sigterm", 143)])
def test_an_interrupted_run_leaves_a_partial_report_and_resumes(how, code, tmp_path, monkeypatch, capsys, no_figures):
    calls = []

    def term():
        os.kill(os.getpid(), signal.SIGTERM)
        return RuntimeError("the SIGTERM handler should have stopped the run")

    monkeypatch.setattr(V, "all_items", lambda: _stub_items(calls, interrupt=KeyboardInterrupt if how != "sigterm" else term))
    out = tmp_path / "r"
    before = signal.getsignal(signal.SIGTERM)
    assert main(["verify", "--quick", "--out", str(out)]) == code
    assert signal.getsignal(signal.SIGTERM) == before and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last == f"interrupted: 1 of 4 items done; resume with: looptheory verify --resume {out}"
    assert "Traceback" not in err
    text = _check_partial(out, ["S1"], 4)
    assert "--resume" in text and "`S2`" in text  # S2 is listed as not run yet
    assert sorted(os.listdir(out / "items")) == ["S1.json"]
    assert not [f for f in os.listdir(out) if f.endswith(".part")]
    # a new run may not take the folder; --resume finishes it, running only what is missing
    assert main(["verify", "--quick", "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["verify", "--resume", str(out)]) == 0
    assert calls == ["S1", "S2", "S2", "S3", "S4"]
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] and [r["id"] for r in data["records"]] == ["S1", "S2", "S3", "S4"]
    assert data["meta"]["status"] == "complete" and data["meta"]["mode"] == "quick"
    assert "Status: complete" in (out / "report.md").read_text()
    assert "resumed" in capsys.readouterr().err


# --- verify --jobs N ------------------------------------------------------------------------------


def test_jobs_keep_items_that_share_a_computation_together():
    specs = V.select(["G1", "G2", "G1-structure", "C1"])
    assert V.groups(specs) == [["G1", "G1-structure"], ["G2"], ["C1"]]
    assert V.groups(V.select(["G1-structure", "G3"])) == [["G1-structure"], ["G3"]]


@pytest.mark.slow
def test_jobs_2_gives_the_serial_report(tmp_path, capsys, no_figures):
    only = ["gd_equivalence", "trace_moments", "optimal_scale_one_loop", "G4"]
    assert main(["verify", "--quick", "--only", *only, "--out", str(tmp_path / "serial")]) == 0
    assert main(["verify", "--quick", "--only", *only, "--jobs", "2", "--out", str(tmp_path / "jobs")]) == 0
    err = capsys.readouterr().err
    assert "[4/4]" in err
    one, two = (json.loads((tmp_path / d / "results.json").read_text())["records"] for d in ("serial", "jobs"))
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in one] == \
           [{k: v for k, v in r.items() if k not in drop} for r in two]
    assert sorted(os.listdir(tmp_path / "jobs" / "items")) == sorted(f"{i}.json" for i in only)


def test_scalar_limit_check_passes_and_flips_on_a_wrong_limit(monkeypatch):
    """The check holds the proportional limit against the one-loop formula and the finite-d
    optima; a limit off by 1% fails it (both its parts)."""
    from fractions import Fraction

    from looptheory import checks, limit

    spec = next(s for s in checks.CHECKS if s.id == "scalar_limit")
    rec = spec.run(quick=True)
    assert rec.verdict == "pass" and len(rec.evidence["convergence"]) == len(checks.LIMIT_CASES)
    assert all(-1.3 <= c["rate"] <= -0.7 for c in rec.evidence["convergence"])
    right = limit.scalar_family_limit

    def off(*a, **k):
        r = right(*a, **k)
        return type(r)(r.alpha, r.loops, r.rho, r.gamma, r.loss_per_d * Fraction(101, 100), r.exact, r.digits)

    monkeypatch.setattr(limit, "scalar_family_limit", off)
    bad = spec.run(quick=True)
    assert bad.verdict == "fail"
    assert not any(r["equal"] for r in bad.evidence["rows"])
    assert not any(c["falls"] and c["rate_in_range"] for c in bad.evidence["convergence"])
