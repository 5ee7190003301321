import argparse
import json
import sys

from .runner import CHECKS, PREFIX, run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proofs_check", description="Symbolic checks of the derivations (SymPy).")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    ap.add_argument("--only", metavar="NAME", help="run one check (NAME or proofs_check.NAME)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--quick", action="store_true",
                    help="the quick run's parameters (each module's QUICK: fewer, smaller cases)")
    args = ap.parse_args(argv)
    if args.list:
        for name, fn in CHECKS.items():
            print(f"{name}: {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    try:
        results = run(args.only, quick=args.quick)
    except ValueError as exc:
        print(f"proofs_check: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"name": r.id[len(PREFIX):], "passed": r.verdict == "pass", "detail": r.summary,
                           "mode": r.mode, "seconds": r.seconds} for r in results], indent=1))
    else:
        for r in results:
            print(f"{'PASS' if r.verdict == 'pass' else 'FAIL'} {r.id[len(PREFIX):]} {r.seconds:.2f}s  {r.summary}")
    return 0 if all(r.verdict == "pass" for r in results) else 1


sys.exit(main())
