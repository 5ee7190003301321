"""Command line: `looptheory verify [--quick] [--out DIR] [--force]`.

Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time


def _parser():
    p = argparse.ArgumentParser(
        prog="looptheory",
        description="Exact theory of looped linear Transformers on in-context linear regression.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    v = sub.add_parser(
        "verify",
        help="run every check on built-in defaults and write a report",
        description="Run every check the toolkit has on built-in defaults; write DIR/report.md, "
        "DIR/results.json and figures.",
    )
    v.add_argument("--quick", action="store_true", help="smaller Monte Carlo samples and fewer cases")
    v.add_argument("--out", metavar="DIR", help="output folder (default: a new timestamped folder); must be new or empty")
    v.add_argument("--force", action="store_true", help="allow writing into a non-empty --out folder")
    return p


class _OneLineArgumentParserError(Exception):
    pass


def main(argv=None) -> int:
    """The `looptheory` command (argv: the arguments, default sys.argv[1:]); returns the exit status."""
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
        print(f"looptheory: error: {exc}", file=sys.stderr)
        return 2
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "verify":
        return _verify(args)
    return 2


def _verify(args) -> int:
    from .report import prepare_out_dir
    from .runlock import lock_folder

    # Every problem with --out is found here, before any work, and the folder's lock is held
    # for the whole run (released by the OS if the process dies), so two runs never share it.
    with contextlib.ExitStack() as stack:
        try:
            out = prepare_out_dir(args.out, force=args.force)
            stack.enter_context(lock_folder(out, "--out"))
        except ValueError as exc:
            print(f"looptheory: error: {exc}".replace("\n", " "), file=sys.stderr)
            return 2
        return _run_verify(out, args)


def _run_verify(out, args) -> int:
    """The work of `verify` in the prepared, locked folder out; returns the exit status."""
    from .report import write_report

    t0 = time.perf_counter()
    print(f"looptheory verify ({'quick' if args.quick else 'full'}) -> {out}", file=sys.stderr)

    def progress(i, total, res):
        where = f"[{i}/{total}]" if total else "[claim]"
        took = f" ({res.seconds:.1f} s)" if hasattr(res, "seconds") else ""
        print(f"{where} {res.verdict.upper():7s} {res.id}{took}: {res.summary}", file=sys.stderr, flush=True)

    def experiment_progress(res):
        print(f"[experiment] {res.id} ({res.seconds:.1f} s): {res.summary}", file=sys.stderr, flush=True)

    payload = write_report(out, quick=args.quick, progress=progress, experiment_progress=experiment_progress)
    failed = [c["id"] for c in payload["checks"] if c["verdict"] == "fail"]
    verdicts = ", ".join(f"{c['id']} {c['verdict']}" for c in payload["claims"])
    print(f"wrote {out}/report.md in {time.perf_counter() - t0:.1f} s; checks: "
          f"{len(payload['checks']) - len(failed)} passed, {len(failed)} failed; claims: {verdicts}", file=sys.stderr)
    # A claim that fails is a finding, not an error of the toolkit: only failed checks set the status.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
