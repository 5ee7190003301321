"""Mutation testing of the computing modules (issue 14): a seeded sample of semantic mutants, one
AST edit each, run against the fast tests that cover the mutated module.

Run (from the repository root; one module at a time on a shared machine):

    python scripts/mutation.py --module flow              # 30 mutants of looptheory/flow.py
    python scripts/mutation.py --list --module claims     # the sample, without running it
    python scripts/mutation.py                            # every module, one after the other
    python scripts/mutation.py --count 40 --seed 7 --jobs 2 --json out.json

A mutant is one edit of the module's syntax tree by one operator of the fixed set OPERATORS. It is
identified by `path:line:col:operator` (line 1-based, column 0-based in characters, of the node
edited; a second mutant of the same operator at the same place gets a suffix `/2`), so the
classification file scripts/mutation_equivalent.txt can name it. The sample of a module is drawn
with random.Random(f"{seed}:{module}") from its sites in source order: the same source and seed
give the same mutants.

Mutants are never applied to the working tree: the repository (without .git) is copied to a
temporary directory and the mutated module is written into the copy, which is the only package on
PYTHONPATH for the test run (bytecode writing is off, so no stale .pyc is used; hypothesis runs
derandomised, CI=1, and its example database is removed after every run). Each mutant runs
`python -m pytest -x -q -p no:cacheprovider <files>` on the module's test files (TESTS; the
project's addopts keep the slow tier out). The unmutated copy is run first: it must pass, and its
wall time sets the timeout, TIMEOUT_FACTOR times it plus TIMEOUT_SLACK seconds; a mutant that runs
past it is counted killed (reported as a timeout). A mutant whose edited source does not parse back
to the edited tree is a bug of this script and stops it.

Scope (what is not mutated, and why: these edits change no number the package computes): strings,
docstrings and f-strings; text built by concatenating string literals; the arguments of `raise`
(error messages); annotations; module-level dunder names; and the declared regions of the claims
(functions named `*_region` in claims.py and chen.py: declared data, fixed before testing, not
logic), the declared grid of the Chen figures (chen.chen_figure_data), and the numbers of
declared grids anywhere: the literal tuples and lists a loop runs over, or that a module-level
ALL_CAPS name holds (see _grid_constants). proofs_check/ is treated as ONE module: its sites are pooled over all its files and
sampled together.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFICATION = os.path.join(ROOT, "scripts", "mutation_equivalent.txt")
TIMEOUT_FACTOR = 3.0
TIMEOUT_SLACK = 5.0
DEFAULT_COUNT = 30

#: The operator set, fixed. Each operator makes at most one mutant per node it applies to.
OPERATORS = {
    "arith": "binary arithmetic swapped: + <-> -, * <-> /, // -> /, % -> //, ** -> *, @ -> *; unary minus removed",
    "compare": "comparison swapped: < <-> >, <= <-> >=, == <-> !=, is <-> is not, in <-> not in (first operator of a "
               "chain); and <-> or; `not x` -> x",
    "const": "numeric constant k -> k + 1 (int and float); True <-> False (not in subscripts: see index)",
    "drop": "dropped term: a + b -> a, a - b -> a; an augmented assignment x op= y dropped (-> pass)",
    "transpose": "x.T -> x; x.transpose(...), np.transpose(x), x.swapaxes(...) -> x; the left operand of @ "
                 "transposed (a @ b -> a.T @ b)",
    "index": "integer in a subscript or slice bound k -> k + 1 (k >= 0) or k - 1 (k < 0); a non-constant "
             "slice bound e -> e + 1",
    "args": "the first two positional arguments of a call swapped (not for min, max and other functions "
            "symmetric in them, nor when both are the same expression)",
    "return": "early return: `return e` -> `return None`; `continue` -> `break`; a `break` appended to a "
              "loop body (the loop stops after its first pass)",
}

PACKAGE_FILES = ["__init__.py", "runner.py", "gd_equivalence.py", "wishart_moments.py", "one_loop_optimum.py",
                 "gradient_formula.py", "fixed_point.py", "flow_bound.py", "dominance_infinite_n.py",
                 "chen_contraction.py", "__main__.py"]

#: Module -> the source files mutated and the fast test files run against each mutant. The test
#: files are those that exercise the module's own behaviour (its test file and the files whose
#: tests call it directly), not every file that imports it, to keep each run short; BAD (the
#: bad-input tests of every public function) is run last for the modules with public functions.
BAD = "tests/test_bad_inputs.py"
MODULES = {
    "expectations": (["looptheory/expectations.py"], ["tests/test_expectations.py", "tests/test_accuracy.py"]),
    "loss": (["looptheory/loss.py"], ["tests/test_loss.py", "tests/test_accuracy.py", "tests/test_shipped_expansions.py",
                                      "tests/test_reference.py", "tests/test_loss_hvp.py", "tests/test_layout.py", BAD]),
    "model": (["looptheory/model.py"], ["tests/test_model.py", "tests/test_montecarlo.py", "tests/test_training.py", BAD]),
    "moments": (["looptheory/moments.py"], ["tests/test_moments.py", "tests/test_optimal_scale.py", BAD]),
    "optimum": (["looptheory/optimum.py"], ["tests/test_optimum_flow.py", "tests/test_optimal_scale.py", BAD]),
    "flow": (["looptheory/flow.py"], ["tests/test_optimum_flow.py", "tests/test_multilayer_optimum.py", BAD]),
    "dominance": (["looptheory/dominance.py"], ["tests/test_dominance.py", BAD]),
    "claims": (["looptheory/claims.py"], ["tests/test_claims.py"]),
    "chen": (["looptheory/chen.py"], ["tests/test_chen.py", BAD]),
    "training": (["looptheory/training.py"], ["tests/test_training.py", "tests/test_checkpoint_safety.py", BAD]),
    "proofs_check": ([f"proofs_check/{f}" for f in PACKAGE_FILES],
                     ["tests/test_proofs_check.py", "tests/test_proofs_check_a.py", "tests/test_proofs_check_b.py"]),
}

#: Functions symmetric in their first two arguments: swapping them gives an equivalent mutant.
SYMMETRIC_CALLS = {"max", "min", "maximum", "minimum", "hypot", "gcd", "lcm", "add", "multiply", "logical_and",
                   "logical_or", "isclose", "allclose", "array_equal"}

ARITH_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
              ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.MatMult: ast.Mult}
COMPARE_SWAP = {ast.Lt: ast.Gt, ast.Gt: ast.Lt, ast.LtE: ast.GtE, ast.GtE: ast.LtE, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
#: Functions that declare settings rather than compute (declared regions of the claims, the
#: figure grid of the Chen plots): not mutated.
SKIP_FUNCTIONS_SUFFIX = "_region"
SKIP_FUNCTION_FILES = {"looptheory/claims.py", "looptheory/chen.py"}
SKIP_FUNCTIONS = {("looptheory/chen.py", "chen_figure_data")}


@dataclass(frozen=True)
class Mutant:
    module: str
    path: str
    line: int
    col: int
    op: str
    ident: str
    before: str
    after: str
    node_path: tuple = field(compare=False)
    kind: str = field(compare=False)  # "expr", "stmt" (replace) or "append_break"


# --- enumeration ---------------------------------------------------------------------------------


def _is_text(node) -> bool:
    """A string literal, an f-string, or a + of them: report text, not a computed number."""
    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_text(node.left) or _is_text(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _is_text(node.left)
    if isinstance(node, ast.IfExp):
        return _is_text(node.body) or _is_text(node.orelse)
    return False


def _call_name(call):
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _int_const(node):
    """The int an index node stands for (k or -k), else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int):
        return -node.operand.value
    return None


def _int_node(k):
    return ast.Constant(k) if k >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-k))


def _transposed(node):
    return ast.Attribute(value=node, attr="T", ctx=ast.Load())


def _candidates(node, parent_field, index_ctx):
    """(operator, edited copy of node, kind) for each mutant of this node."""
    out = []
    c = copy.deepcopy
    if isinstance(node, ast.BinOp) and not _is_text(node):
        if type(node.op) in ARITH_SWAP:
            m = c(node)
            m.op = ARITH_SWAP[type(node.op)]()
            out.append(("arith", m, "expr"))
        if isinstance(node.op, (ast.Add, ast.Sub)):
            out.append(("drop", c(node.left), "expr"))
        if isinstance(node.op, ast.MatMult) and not (isinstance(node.left, ast.Attribute) and node.left.attr == "T"):
            m = c(node)
            m.left = _transposed(m.left)
            out.append(("transpose", m, "expr"))
    elif isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub) and not (index_ctx and _int_const(node) is not None) and not (
                isinstance(node.operand, ast.Constant)):
            out.append(("arith", c(node.operand), "expr"))
        if isinstance(node.op, ast.Not):
            out.append(("compare", c(node.operand), "expr"))
    elif isinstance(node, ast.Compare):
        if type(node.ops[0]) in COMPARE_SWAP:
            m = c(node)
            m.ops[0] = COMPARE_SWAP[type(node.ops[0])]()
            out.append(("compare", m, "expr"))
    elif isinstance(node, ast.BoolOp):
        m = c(node)
        m.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append(("compare", m, "expr"))
    elif isinstance(node, ast.Constant) and not index_ctx:
        v = node.value
        if isinstance(v, bool):
            out.append(("const", ast.Constant(not v), "expr"))
        elif isinstance(v, (int, float)):
            out.append(("const", ast.Constant(v + 1), "expr"))
    elif isinstance(node, ast.Attribute) and node.attr == "T" and isinstance(node.ctx, ast.Load):
        out.append(("transpose", c(node.value), "expr"))
    elif isinstance(node, ast.Call):
        name = _call_name(node)
        if name in ("transpose", "swapaxes"):
            if isinstance(node.func, ast.Attribute) and not (isinstance(node.func.value, ast.Name)
                                                            and node.func.value.id in ("np", "numpy")):
                out.append(("transpose", c(node.func.value), "expr"))
            elif node.args:
                out.append(("transpose", c(node.args[0]), "expr"))
        pos = node.args
        if (len(pos) >= 2 and not any(isinstance(a, ast.Starred) for a in pos[:2]) and name not in SYMMETRIC_CALLS
                and ast.dump(pos[0]) != ast.dump(pos[1])):
            m = c(node)
            m.args[0], m.args[1] = m.args[1], m.args[0]
            out.append(("args", m, "expr"))
    elif isinstance(node, ast.AugAssign):
        if not isinstance(node.value, ast.JoinedStr) and not _is_text(node.value):
            out.append(("drop", ast.Pass(), "stmt"))
    elif isinstance(node, ast.Return):
        if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            out.append(("return", ast.Return(value=ast.Constant(None)), "stmt"))
    elif isinstance(node, ast.Continue):
        out.append(("return", ast.Break(), "stmt"))
    if isinstance(node, (ast.For, ast.While)):
        last = node.body[-1]
        if node.body[0].lineno > node.lineno and not isinstance(last, (ast.Return, ast.Raise, ast.Break, ast.Continue)):
            m = c(node)
            m.body.append(ast.Break())
            out.append(("return", m, "append_break"))
    if index_ctx:
        k = _int_const(node)
        if k is not None:
            out.append(("index", _int_node(k + 1 if k >= 0 else k - 1), "expr"))
        elif parent_field in ("lower", "upper"):
            out.append(("index", ast.BinOp(left=c(node), op=ast.Add(), right=ast.Constant(1)), "expr"))
    return out


def _grid_constants(tree) -> set:
    """ids of the numbers in declared grids: the literal tuples and lists (nested ones included,
    and the arguments of calls in them such as Fraction(1, 2)) that a loop or comprehension runs
    over (directly, or through enumerate / zip), or that a module-level ALL_CAPS name holds. A stated result written as an expression (such as
    proofs_check.fixed_point.C_LIMIT) is not a grid and stays mutated."""
    containers = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.comprehension)):
            it = node.iter
            containers += [it] if isinstance(it, (ast.Tuple, ast.List)) else [
                a for a in getattr(it, "args", []) if isinstance(it, ast.Call) and _call_name(it) in ("enumerate", "zip")]
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.strip("_").replace("_", "").isupper()):
            containers.append(node.value)
    out = set()

    def collect(node):
        if isinstance(node, (ast.Tuple, ast.List)):
            for e in node.elts:
                collect(e)
        elif isinstance(node, ast.Call):  # a number written as Fraction(1, 2) or float("inf")
            for a in node.args:
                collect(a)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            collect(node.operand)
            out.add(id(node))
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            out.add(id(node))

    for c in containers:
        if isinstance(c, (ast.Tuple, ast.List)):
            collect(c)
    return out


def _walk(tree, rel):
    """(node path, node, operator, edited node, kind) for every mutation site of the tree, in source
    order of a pre-order walk."""
    sites = []
    grid = _grid_constants(tree)

    def visit(node, path, index_ctx, parent_field):
        if isinstance(node, ast.JoinedStr) or isinstance(node, ast.Raise):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                (rel in SKIP_FUNCTION_FILES and node.name.endswith(SKIP_FUNCTIONS_SUFFIX)) or (rel, node.name) in SKIP_FUNCTIONS):
            return
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.left, ast.Name) \
                and node.test.left.id == "__name__":
            return
        if isinstance(node, ast.Assign) and len(path) == 2 and all(
                isinstance(t, ast.Name) and t.id.startswith("__") for t in node.targets):
            return
        if id(node) in grid:
            return  # a number of a declared grid: data, not logic
        if isinstance(node, ast.expr) or isinstance(node, ast.stmt):
            for op, new, kind in _candidates(node, parent_field, index_ctx):
                sites.append((path, node, op, new, kind))
        if index_ctx and isinstance(node, ast.UnaryOp) and _int_const(node) is not None:
            return  # -k in an index is one site (index), not also its k
        for name, value in ast.iter_fields(node):
            if name in ("annotation", "returns", "type_comment"):
                continue
            if isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant):
                continue  # a docstring or a bare constant statement
            sub_index = _child_index_ctx(node, name, index_ctx)
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        visit(item, path + ((name, i),), sub_index, name)
            elif isinstance(value, ast.AST):
                visit(value, path + ((name, None),), sub_index, name)

    visit(tree, (), False, None)
    return sites


def _read(path) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _char_col(lines, line, byte_col):
    return len(lines[line - 1].encode()[:byte_col].decode())


def enumerate_mutants(module: str) -> list[Mutant]:
    """Every mutant of the module, in source order (files in MODULES order)."""
    out = []
    for rel in MODULES[module][0]:
        src = _read(os.path.join(ROOT, rel))
        lines = src.splitlines()
        seen = {}
        for path, node, op, new, kind in _walk(ast.parse(src), rel):
            col = _char_col(lines, node.lineno, node.col_offset)
            base = f"{rel}:{node.lineno}:{col}:{op}"
            seen[base] = seen.get(base, 0) + 1
            ident = base if seen[base] == 1 else f"{base}/{seen[base]}"
            before = ast.get_source_segment(src, node) or ""
            if kind == "append_break":
                before_txt, after_txt = f"{before.splitlines()[0].strip()} ...", "... + break at the end of the body"
            else:
                before_txt, after_txt = " ".join(before.split()), ast.unparse(new)
            out.append(Mutant(module, rel, node.lineno, col, op, ident, _short(before_txt), _short(after_txt), path, kind))
    return out


def _short(text, width=90):
    return text if len(text) <= width else text[: width - 3] + "..."


def sample(module: str, count: int, seed: int) -> list[Mutant]:
    allm = enumerate_mutants(module)
    rng = random.Random(f"{seed}:{module}")
    chosen = rng.sample(range(len(allm)), min(count, len(allm)))
    return [allm[i] for i in sorted(chosen)]


# --- applying a mutant ---------------------------------------------------------------------------


def _locate(tree, path):
    parent, node = None, tree
    for name, i in path:
        parent = node
        node = getattr(node, name) if i is None else getattr(node, name)[i]
    return parent, node


def _set(tree, path, new):
    *head, (name, i) = path
    parent = _locate(tree, head)[1] if head else tree
    if i is None:
        setattr(parent, name, new)
    else:
        getattr(parent, name)[i] = new


def mutated_source(m: Mutant) -> str:
    """The module's source with the mutant applied as a text edit of the node's span (the rest of
    the file is kept as it is); checked to parse back to exactly the edited tree."""
    src = _read(os.path.join(ROOT, m.path))
    tree = ast.parse(src)
    node = _locate(tree, m.node_path)[1]
    new_tree = copy.deepcopy(tree)
    cand = [new for op, new, kind in _candidates(node, m.node_path[-1][0], _index_ctx(tree, m.node_path))
            if op == m.op and kind == m.kind]
    # several mutants of one operator at one node do not occur (one per node), so cand has one entry
    if len(cand) != 1:
        raise RuntimeError(f"{m.ident}: expected one candidate, found {len(cand)}")
    new = cand[0]
    _set(new_tree, m.node_path, new)
    lines = src.encode().split(b"\n")
    if m.kind == "append_break":
        last = node.body[-1]
        indent = b" " * node.body[0].col_offset
        lines.insert(last.end_lineno, indent + b"break")
    else:
        text = ast.unparse(new).encode()
        if m.kind == "expr":
            text = b"(" + text + b")"
        l0, c0, l1, c1 = node.lineno - 1, node.col_offset, node.end_lineno - 1, node.end_col_offset
        head, tail = lines[l0][:c0], lines[l1][c1:]
        lines[l0: l1 + 1] = [head + text + tail]
    out = b"\n".join(lines).decode()
    if ast.dump(ast.parse(out)) != ast.dump(new_tree):
        raise RuntimeError(f"{m.ident}: the edited source does not parse to the edited tree")
    return out


def _child_index_ctx(node, field_name, ctx):
    """Whether the child in node's field is inside a subscript's index: the slice of a
    subscript, and what a slice, a tuple or a unary minus inside an index holds."""
    if isinstance(node, ast.Subscript):
        return field_name == "slice"
    return ctx and isinstance(node, (ast.Slice, ast.Tuple, ast.UnaryOp))


def _index_ctx(tree, path):
    """Whether the node at path is inside a subscript's index (the context _walk computed)."""
    ctx = False
    node = tree
    for name, i in path:
        ctx = _child_index_ctx(node, name, ctx)
        node = getattr(node, name) if i is None else getattr(node, name)[i]
    return ctx


# --- classification file -------------------------------------------------------------------------


def load_classification(path=CLASSIFICATION) -> dict:
    """id -> (before -> after text, reason). Lines `id :: before -> after :: reason`; # comments."""
    out = {}
    if not os.path.exists(path):
        return out
    for raw in _read(path).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" :: ")]
        if len(parts) != 3:
            raise ValueError(f"{path}: expected `id :: before -> after :: reason`, got {line!r}")
        out[parts[0]] = (parts[1], parts[2])
    return out


# --- running -------------------------------------------------------------------------------------


def _copy_repo(dest, tests_from=None):
    """The repository without .git and caches; with tests_from (another checkout), its tests/
    folder instead of this one's (to measure an older suite against the same mutants)."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".hypothesis", ".pytest_cache", "*.egg-info", ".venv",
                                    "build", "dist")
    shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)
    if tests_from:
        shutil.rmtree(os.path.join(dest, "tests"))
        shutil.copytree(os.path.join(tests_from, "tests"), os.path.join(dest, "tests"), ignore=ignore)


def _env(copy_root):
    env = dict(os.environ)
    env.update(PYTHONPATH=copy_root, PYTHONDONTWRITEBYTECODE="1", CI="1")
    return env


def run_tests(copy_root, tests, timeout):
    """(outcome, wall seconds, CPU seconds, first failing test): outcome "passed", "failed" or
    "timeout"; the CPU time is the test process's own (os.wait4), also with --jobs > 1."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=copy_root, env=_env(copy_root), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        outcome = None
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - t0 > timeout:
                    os.killpg(proc.pid, 9)
                    _, status, usage = os.wait4(proc.pid, 0)
                    outcome = "timeout"
                    break
                time.sleep(0.05)
        except BaseException:
            os.killpg(proc.pid, 9)  # interrupted: the test run (its own session) ends with this script
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if outcome is None:
            outcome = "passed" if proc.returncode == 0 else "failed"
        out.seek(0)
        text = out.read().decode("utf-8", errors="replace")
    shutil.rmtree(os.path.join(copy_root, ".hypothesis"), ignore_errors=True)
    first = next((line.split(" ", 1)[1].split(" - ")[0] for line in text.splitlines()
                  if line.startswith(("FAILED ", "ERROR "))), None)
    return outcome, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, first


def run_module(module, mutants, jobs, classification, log, tests_from=None):
    files, tests = MODULES[module]
    tmp = tempfile.mkdtemp(prefix=f"mutation-{module}-")
    try:
        copies = []
        for j in range(jobs):
            dest = os.path.join(tmp, f"repo{j}")
            _copy_repo(dest, tests_from)
            copies.append(dest)
        probe = subprocess.run([sys.executable, "-c", "import looptheory, proofs_check; print(looptheory.__file__)"],
                               cwd=copies[0], env=_env(copies[0]), capture_output=True, text=True)
        if not probe.stdout.strip().startswith(copies[0]):
            raise RuntimeError(f"the copy is not the package imported: {probe.stdout}{probe.stderr}")
        outcome, wall, cpu, _ = run_tests(copies[0], tests, timeout=3600)
        if outcome != "passed":
            raise RuntimeError(f"{module}: the unmutated tests do not pass ({outcome}); fix them first")
        timeout = TIMEOUT_FACTOR * wall + TIMEOUT_SLACK
        log(f"{module}: clean run {wall:.1f} s wall, {cpu:.1f} CPU-s; timeout {timeout:.0f} s; "
            f"{len(mutants)} mutants, tests {' '.join(tests)}")
        results = [None] * len(mutants)

        def one(k, dest):
            m = mutants[k]
            target = os.path.join(dest, m.path)
            original = _read(target)
            try:
                with open(target, "w", encoding="utf-8") as fh:
                    fh.write(mutated_source(m))
                outcome, wall_m, cpu_m, first = run_tests(dest, tests, timeout)
            finally:
                with open(target, "w", encoding="utf-8") as fh:
                    fh.write(original)
            status = {"passed": "survived", "failed": "killed", "timeout": "killed (timeout)"}[outcome]
            results[k] = {"id": m.ident, "before": m.before, "after": m.after, "status": status,
                          "killed_by": first, "equivalent": classification.get(m.ident, (None, None))[1], "cpu": cpu_m}
            log(f"  {status:16s} {m.ident}  {m.before}  ->  {m.after}  ({cpu_m:.1f} CPU-s)"
                + (f"  [{first}]" if first else ""))

        if jobs == 1:
            for k in range(len(mutants)):
                one(k, copies[0])
        else:
            import queue
            import threading

            work = queue.Queue()
            for k in range(len(mutants)):
                work.put(k)

            def worker(dest):
                while True:
                    try:
                        k = work.get_nowait()
                    except queue.Empty:
                        return
                    one(k, dest)

            threads = [threading.Thread(target=worker, args=(d,)) for d in copies]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return {"module": module, "clean_wall": wall, "clean_cpu": cpu, "timeout": timeout, "mutants": results}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def summarise(res):
    ms = res["mutants"]
    killed = [m for m in ms if m["status"].startswith("killed")]
    timeouts = [m for m in ms if m["status"] == "killed (timeout)"]
    surv = [m for m in ms if m["status"] == "survived"]
    equiv = [m for m in surv if m["equivalent"]]
    wrongly_equiv = [m for m in killed if m["equivalent"]]
    live = len(ms) - len(equiv)
    rate = len(killed) / live if live else 1.0
    return {"module": res["module"], "mutants": len(ms), "killed": len(killed), "timeouts": len(timeouts),
            "survived": len(surv) - len(equiv), "equivalent": len(equiv), "rate": rate,
            "wrongly_equivalent": [m["id"] for m in wrongly_equiv],
            "survivors": [m for m in surv if not m["equivalent"]],
            "cpu": sum(m["cpu"] for m in ms)}


def table(summaries):
    rows = ["| module | mutants | killed (of which timeouts) | survived | equivalent | kill rate (non-equivalent) | mutant CPU-s |",
            "|---|---|---|---|---|---|---|"]
    for s in summaries:
        rows.append(f"| {s['module']} | {s['mutants']} | {s['killed']} ({s['timeouts']}) | {s['survived']} | "
                    f"{s['equivalent']} | {s['rate']:.0%} | {s['cpu']:.0f} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--module", action="append", choices=list(MODULES), help="module(s) to test (default: all, in turn)")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"mutants per module (default {DEFAULT_COUNT})")
    p.add_argument("--seed", type=int, default=14, help="sampling seed (default 14)")
    p.add_argument("--list", action="store_true", help="print the sampled mutants and exit without running them")
    p.add_argument("--all-sites", action="store_true", help="with --list: every site, not the sample")
    p.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    p.add_argument("--json", help="write the per-mutant results to this file")
    p.add_argument("--tests-from", metavar="DIR", help="run the tests/ folder of another checkout (e.g. an older "
                   "commit's, from git archive) against the same mutants")
    a = p.parse_args(argv)
    if a.count < 1:
        p.error("--count: expected a positive integer")
    if a.jobs < 1:
        p.error("--jobs: expected a positive integer")
    if a.tests_from and not os.path.isdir(os.path.join(a.tests_from, "tests")):
        p.error(f"--tests-from: {a.tests_from!r} has no tests/ folder")
    modules = a.module or list(MODULES)
    classification = load_classification()
    known = set()
    for mod in modules:
        allm = enumerate_mutants(mod)
        known |= {m.ident for m in allm}
        by_id = {m.ident: m for m in allm}
        for ident, (text, _) in classification.items():
            m = by_id.get(ident)
            if m is None and ident.split(":")[0] in MODULES[mod][0]:
                print(f"warning: {CLASSIFICATION}: {ident} ({text}) names no mutant of the current source "
                      f"(the code moved or changed: re-check it)", file=sys.stderr)
            if m is not None and text != f"{m.before} -> {m.after}":
                print(f"warning: {CLASSIFICATION}: {ident} now reads {m.before!r} -> {m.after!r}, "
                      f"classified as {text!r} (stale: re-check it)", file=sys.stderr)
    if a.list:
        for mod in modules:
            ms = enumerate_mutants(mod) if a.all_sites else sample(mod, a.count, a.seed)
            for m in ms:
                eq = "  [equivalent]" if m.ident in classification else ""
                print(f"{m.ident}  {m.before}  ->  {m.after}{eq}")
        return 0

    def log(msg):
        print(msg, flush=True)

    # a terminated run still removes its temporary copies (the finally of run_module)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    results, summaries = [], []
    for mod in modules:
        res = run_module(mod, sample(mod, a.count, a.seed), a.jobs, classification, log, a.tests_from)
        results.append(res)
        summaries.append(summarise(res))
        s = summaries[-1]
        log(f"{mod}: {s['killed']}/{s['mutants']} killed, {s['equivalent']} equivalent, rate {s['rate']:.0%}")
    print()
    print(table(summaries))
    for s in summaries:
        for m in s["survivors"]:
            print(f"survivor: {m['id']}  {m['before']}  ->  {m['after']}")
        for ident in s["wrongly_equivalent"]:
            print(f"classified equivalent but killed: {ident}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump({"seed": a.seed, "count": a.count, "results": results,
                       "summary": [{k: v for k, v in s.items() if k != "survivors"} for s in summaries]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
