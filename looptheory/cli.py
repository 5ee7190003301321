"""Command line:

  looptheory --version
  looptheory verify [--quick] [--out DIR] [--force] [--only ID ...] [--list] [--jobs N]
  looptheory verify --resume DIR [--jobs N]

Errors are one line on stderr naming the flag, and exit status 2. An interrupted run (Ctrl-C,
SIGTERM) leaves a valid partial report and prints one line saying how to resume it; exit status
130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
import time


def _version() -> str:
    from . import __version__

    return __version__


def _parser():
    p = argparse.ArgumentParser(
        prog="looptheory",
        description="Exact theory of looped linear Transformers on in-context linear regression.",
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    v = sub.add_parser(
        "verify",
        help="run every check on built-in defaults and write a report",
        description="Run every check, symbolic derivation, claim and experiment the toolkit has on built-in "
        "defaults; write DIR/report.md, DIR/results.json and figures, item by item, so that an interrupted "
        "run can be resumed with --resume DIR.",
    )
    v.add_argument("--quick", action="store_true", default=None,
                   help="smaller Monte Carlo samples, fewer cases and shorter training")
    v.add_argument("--out", metavar="DIR", help="output folder (default: a new timestamped folder); must be new or empty")
    v.add_argument("--force", action="store_true", help="allow writing into a non-empty --out folder")
    v.add_argument("--only", metavar="ID", nargs="+", action="extend",
                   help="run only these items (repeatable; ids as --list prints them: claims such as G3 or G1-structure, checks, "
                        "proofs_check modules, experiments E1 ... E5)")
    v.add_argument("--list", action="store_true", help="print every item's id, kind and title, and exit")
    v.add_argument("--resume", metavar="DIR", help="continue the interrupted run in DIR (same version and settings)")
    v.add_argument("--jobs", metavar="N", default="1",
                   help="run the items on N worker processes (default 1: in this process); the report keeps the "
                        "items' order")
    return p


class _OneLineArgumentParserError(Exception):
    pass


class _Terminated(BaseException):
    """Raised by the SIGTERM handler during a run (a BaseException, like KeyboardInterrupt, so
    that no `except Exception` inside an item swallows it)."""


def _error(message) -> int:
    print(f"looptheory: error: {message}".replace("\n", " "), file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """The `looptheory` command (argv: the arguments, default sys.argv[1:]); returns the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before a run started (a run reports its own interruption)
        print("looptheory: interrupted", file=sys.stderr)
        return 130


def _main(argv):
    parser = _parser()

    def error(message):
        raise _OneLineArgumentParserError(message)

    parser.error = error
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sp in action.choices.values():
            sp.error = error
    try:
        args = parser.parse_args(argv)
    except _OneLineArgumentParserError as exc:
        return _error(exc)
    if args.version:
        print(f"looptheory {_version()}")
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "verify":
        return _verify(args)
    return 2


def _check_verify_args(args):
    """One-line problems with the verify flags (None if there are none), before any work."""
    try:
        jobs = int(args.jobs)
    except (TypeError, ValueError):
        jobs = 0
    if jobs < 1 or str(args.jobs).strip() != str(jobs):
        return f"--jobs: expected a whole number of worker processes >= 1, got {args.jobs!r}"
    args.jobs = jobs
    if args.only is not None:
        if any(not isinstance(i, str) or not i.strip() for i in args.only):
            return "--only: an empty id; give ids as `looptheory verify --list` prints them"
    if args.resume is not None:
        if not str(args.resume).strip():
            return "--resume: empty folder name; give the folder of the run to resume"
        for flag, given in (("--out", args.out is not None), ("--force", args.force), ("--list", args.list)):
            if given:
                return f"--resume: cannot be combined with {flag} (the run continues in its own folder)"
    return None


def _verify(args) -> int:
    from .runlock import lock_folder

    problem = _check_verify_args(args)
    if problem:
        return _error(problem)
    from . import verify as V

    try:
        selected = V.select(args.only)
    except ValueError as exc:
        return _error(exc)
    if args.list:
        for s in selected:
            print(f"{s.id}\t{s.kind}\t{s.title}")
        return 0
    # Every problem with --out or --resume is found here, before any work, and the folder's lock
    # is held for the whole run (released by the OS if the process dies), so two runs never
    # share it.
    with contextlib.ExitStack() as stack:
        try:
            if args.resume is not None:
                out = args.resume
                run = V.read_run(out)
                why = V.resume_refusal(run, args.quick, args.only)
                if why:
                    raise ValueError(f"--resume: cannot resume the run in {out!r}: {why}; start a new run with --out")
                stack.enter_context(lock_folder(out, "--resume"))
            else:
                from .report import prepare_out_dir

                out = prepare_out_dir(args.out, force=args.force)
                stack.enter_context(lock_folder(out, "--out"))
        except ValueError as exc:
            return _error(exc)
        return _run_verify(out, args)


def _done_count(out: str) -> tuple:
    from . import verify as V

    try:
        run = V.read_run(out)
    except ValueError:
        return 0, 0
    return len(V.load_done(out, run["items"])), len(run["items"])


def _run_verify(out, args) -> int:
    """The work of `verify` in the prepared, locked folder out; returns the exit status."""
    from .report import WorkerDied, run_verify

    t0 = time.perf_counter()
    resume = args.resume is not None
    quick = bool(args.quick)
    if resume:
        from . import verify as V

        quick = V.read_run(out)["mode"] == "quick"
    print(f"looptheory verify ({'quick' if quick else 'full'}){' resumed' if resume else ''} -> {out}",
          file=sys.stderr)

    def progress(i, total, res):
        print(f"[{i}/{total}] {res.verdict.upper():10s} {res.id} ({res.seconds:.1f} s): {res.summary}",
              file=sys.stderr, flush=True)

    def on_term(signum, frame):
        raise _Terminated()

    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        payload = run_verify(out, quick, only=args.only, resume=resume, progress=progress, jobs=args.jobs)
    except WorkerDied as exc:
        done, total = _done_count(out)
        print(f"looptheory: error: {exc}; {done} of {total} items done; resume with: looptheory verify --resume "
              f"{shlex.quote(os.fspath(out))}".replace("\n", " "), file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, _Terminated) as exc:
        code = 143 if isinstance(exc, _Terminated) else 130
        if main_thread:  # a second Ctrl-C while the message is printed must not give a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            done, total = _done_count(out)
            sys.stderr.write("\n" if getattr(sys.stderr, "isatty", lambda: False)() else "")
            print(f"interrupted: {done} of {total} items done; resume with: looptheory verify --resume "
                  f"{shlex.quote(os.fspath(out))}", file=sys.stderr, flush=True)
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, old_term)
        return code
    finally:
        if main_thread and signal.getsignal(signal.SIGTERM) is on_term:
            signal.signal(signal.SIGTERM, old_term)
    recs = payload["records"]
    failed = [r["id"] for r in recs if r["kind"] in ("check", "proof") and r["verdict"] == "fail"]
    crashed = [r["id"] for r in recs if not r["complete"]]
    toolkit = [r for r in recs if r["kind"] in ("check", "proof")]
    verdicts = ", ".join(f"{r['id']} {r['verdict']}" for r in recs if r["kind"] in ("claim", "experiment"))
    print(f"wrote {out}/report.md in {time.perf_counter() - t0:.1f} s; checks: "
          f"{len(toolkit) - len(failed)} passed, {len(failed)} failed"
          + (f"; crashed: {', '.join(crashed)}" if crashed else "") + (f"; {verdicts}" if verdicts else ""),
          file=sys.stderr)
    # A claim that fails is a finding, not an error of the toolkit: only failed checks or
    # derivations, and items that crashed, set the status.
    return 1 if (failed or crashed) else 0


if __name__ == "__main__":
    sys.exit(main())
