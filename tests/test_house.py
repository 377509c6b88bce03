"""House rules on the size of the code: modules of arctic_rts/ up to 700 lines, function bodies
up to 80 lines of code (docstring, comments and blank lines not counted); and no shell, no code
run from strings and no pickle loaded anywhere in the package (the README's Security section).

A long function is a composition of named steps waiting to be written down (DESIGN.md, after
stackstac's ``stack()``); a long module holds more than one stage. ``bench/`` is not checked.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "arctic_rts"
MAX_MODULE_LINES = 700
MAX_FUNCTION_CODE_LINES = 80

MODULES = sorted(PACKAGE.rglob("*.py"))


def code_lines(source: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body that hold code: not its docstring, comments or blank lines."""
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    first, last = body[0].lineno, max(n.end_lineno or n.lineno for n in body)
    lines: set[int] = set()
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    for tok in tokens:
        if tok.type in skip:
            continue
        for line in range(tok.start[0], tok.end[0] + 1):
            if first <= line <= last:
                lines.add(line)
    return len(lines)


def long_functions(path: Path) -> list[str]:
    """``name (N lines)`` for every function or method of ``path`` over the limit."""
    source = path.read_text()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = code_lines(source, node)
            if n > MAX_FUNCTION_CODE_LINES:
                found.append(f"{node.name} ({n} lines)")
    return found


def test_code_lines_skip_docstring_comments_and_blanks() -> None:
    source = (
        'def f():\n    """Doc.\n\n    More."""\n    # why\n\n'
        "    x = (\n        1\n    )\n    return x\n"
    )
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    assert code_lines(source, node) == 4


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.name} has {n} lines; split it (limit {MAX_MODULE_LINES})"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_function_size(path: Path) -> None:
    long = long_functions(path)
    assert not long, (
        f"{path.name}: {', '.join(long)} over {MAX_FUNCTION_CODE_LINES} lines of code; "
        "split into named steps"
    )


#: Calls that would break the README's Security section: a shell built from strings, code run
#: from strings, or a pickle loaded (torch.load unpickles unless weights_only; none is needed).
_FORBIDDEN_CALLS = {
    "os.system", "os.popen", "pickle.load", "pickle.loads", "torch.load", "marshal.loads",
    "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "eval", "exec",
    "pandas.read_pickle", "pd.read_pickle", "joblib.load", "numpy.load", "np.load",
}  # fmt: skip


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_shell_no_code_from_strings_and_no_pickle(path: Path) -> None:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in _FORBIDDEN_CALLS:
            found.append(f"{name} (line {node.lineno})")
        shell = [k for k in node.keywords if k.arg == "shell"]
        if shell and not (isinstance(shell[0].value, ast.Constant) and not shell[0].value.value):
            found.append(f"{name}(shell=...) (line {node.lineno})")
    assert not found, f"{path.name}: {', '.join(found)}"
