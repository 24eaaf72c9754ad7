"""The offline default for synthetic data: mine real documented code (the standard library) into the formats
a teacher model would write, with no LLM at all.

- Exercises: a module-level function with a docstring becomes one exercise: its signature + docstring (after
  the imports it needs) is the `prompt`, the rest of its body the `completion`, and its doctests, turned into
  `assert` statements, the `tests`. Only self-contained functions qualify: every global name the function
  uses must be a builtin or one of the module's imports (which then head the prompt, as in HumanEval).
  The same splitter turns a teacher's reply into an exercise (`exercise_from_code`).
- Textbook sections: a module docstring with one of the module's documented functions as its example, and a
  class docstring with the class's code, as Markdown with ```python blocks.

`MineExercises` and `MineSections` are the datatrove blocks: a file document in, its candidates out (text =
what dedup and the diversity report compare, the record's columns as metadata); rejected units are counted
by reason in the block's stats (`rejected_<reason>`). The pipelines draw them in a seeded order
(`pipelines.synthetic.SeededKey`), so the same seed gives the same records for any number of tasks.
"""

from __future__ import annotations

import ast
import builtins
import doctest
import json
import symtable
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from .sources import record_id

Record = dict[str, Any]

BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__doc__"}
MIN_DOC_WORDS = 5
MIN_SECTION_DOC_WORDS = 15
MAX_CLASS_LINES = 80
MAX_EXAMPLE_LINES = 40


@dataclass
class Exercise:
    prompt: str
    completion: str
    tests: str
    entry_point: str


# --------------------------------------------------------------------------------------------------- exercises
def doctest_asserts(docstring: str, rename: dict[str, str] | None = None) -> str:
    """The doctest examples of `docstring` as plain statements: `assert repr(expr) == want` for an example
    with output, `try/except` for an expected exception, the statement itself otherwise.

    `rename` rewrites qualified calls (`shlex.quote(` -> `quote(`), since the exercise defines the function
    at top level. Like doctest, comparison is on the printed repr; ELLIPSIS-style wants are skipped.
    """
    lines = []
    for ex in doctest.DocTestParser().get_examples(docstring):
        source = ex.source.strip()
        for old, new in (rename or {}).items():
            source = source.replace(old, new)
        want = ex.want.rstrip("\n")
        if ex.exc_msg is not None:
            exc = want.splitlines()[-1].split(":")[0].strip()
            lines += ["try:", *_indent(source), f"except {exc}:", "    pass", "else:",
                      f"    raise AssertionError({f'expected {exc}'!r})"]
        elif not want:
            lines.append(source)
        elif "..." not in want and _is_expression(source) and _is_expression(want):
            # Only wants that read back as Python (reprs): printed output has no expression to compare.
            # unparse drops comments, which would otherwise swallow the closing parenthesis.
            lines.append(f"assert repr({ast.unparse(ast.parse(source, mode='eval'))}) == {want!r}")
    return "\n".join(lines)


def _indent(source: str) -> list[str]:
    return ["    " + line for line in source.splitlines()]


def _is_expression(source: str) -> bool:
    try:
        ast.parse(source, mode="eval")
    except SyntaxError:
        return False
    return True


def split_function(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, str] | None:
    """(signature + docstring, rest of the body) of a function with a docstring, from the file's lines."""
    doc = node.body[0] if node.body else None
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
        return None
    if len(node.body) < 2:
        return None
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    header = "\n".join(lines[start:doc.end_lineno])
    body = "\n".join(lines[doc.end_lineno:node.end_lineno])
    # A header that is not a whole statement (a docstring sharing its closing line with code) cannot be split.
    if not body.strip() or _trivial(node.body[1:]):
        return None
    return header + "\n", body.rstrip() + "\n"


def _trivial(body: list[ast.stmt]) -> bool:
    """`pass`, `...` or `raise NotImplementedError`: nothing to learn from the solution."""
    if len(body) != 1:
        return False
    stmt = body[0]
    return (isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
            or (isinstance(stmt, ast.Raise) and "NotImplementedError" in ast.unparse(stmt)))


def module_imports(tree: ast.Module, lines: list[str]) -> dict[str, str]:
    """Top-level names bound by the module's imports -> the import line that binds them (one name each)."""
    bound: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                stmt = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                bound[name] = stmt
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
            for alias in node.names:
                if alias.name != "*":
                    bound[alias.asname or alias.name] = (f"from {node.module} import {alias.name}"
                                                         + (f" as {alias.asname}" if alias.asname else ""))
    return bound


def function_globals(table: symtable.SymbolTable) -> set[str]:
    """Global names a function (and everything nested in it) reads: what it needs from its module."""
    names = {s.get_name() for s in table.get_symbols() if s.is_global() and s.is_referenced()}
    for child in table.get_children():
        names |= function_globals(child)
    return names


def signature_names(node: ast.FunctionDef) -> set[str]:
    """Names read by a function's defaults and annotations: they are evaluated in the module's scope."""
    args = node.args
    parts: list[ast.AST] = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
    parts += [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg)
              if a is not None and a.annotation is not None]
    if node.returns is not None:
        parts.append(node.returns)
    return {n.id for part in parts for n in ast.walk(part) if isinstance(n, ast.Name)}


def mine_exercises(files: Iterable[Record]) -> tuple[list[Record], Counter[str]]:
    """Every self-contained, documented module-level function of `files` as an exercise candidate (unverified)."""
    candidates: list[Record] = []
    rejected: Counter[str] = Counter()
    for file in files:
        try:
            tree = ast.parse(file["text"])
            tables = {t.get_name(): t for t in symtable.symtable(file["text"], file["path"], "exec").get_children()
                      if t.get_type() == "function"}
        except (SyntaxError, ValueError):
            rejected["file_not_parseable"] += 1
            continue
        lines = file["text"].splitlines()
        imports = module_imports(tree, lines)
        module = file["path"].removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            reason, record = _exercise_candidate(node, lines, imports, tables.get(node.name), module, file)
            if record is None:
                rejected[reason] += 1
            else:
                candidates.append(record)
    return candidates, rejected


def _exercise_candidate(node: ast.FunctionDef, lines: list[str], imports: dict[str, str],
                        table: symtable.SymbolTable | None, module: str, file: Record) -> tuple[str, Record | None]:
    docstring = ast.get_docstring(node)
    if not docstring:
        return "no_docstring", None
    if len(docstring.split()) < MIN_DOC_WORDS:
        return "docstring_too_short", None
    if node.decorator_list:
        return "decorated", None  # decorators run at module level and need the module's globals
    if table is None:
        return "redefined_name", None  # two top-level defs share the name: symtable keeps one scope
    needed = (function_globals(table) | signature_names(node)) - BUILTINS
    missing = sorted(needed - imports.keys())
    if missing:
        return "not_self_contained", None
    split = split_function(lines, node)
    if split is None:
        return "no_body", None
    header, body = split
    import_lines = "".join(f"{imports[name]}\n" for name in sorted(needed))
    prompt = (import_lines + "\n\n" if import_lines else "") + header
    tests = doctest_asserts(docstring, rename={f"{module.split('.')[-1]}.{node.name}(": f"{node.name}("})
    return "", {
        "id": record_id(file["source"], file["path"], node.name),
        "prompt": prompt, "completion": body, "tests": tests, "entry_point": node.name,
        "source": file["source"], "path": file["path"], "license": file["license"], "symbol": f"{module}.{node.name}",
        "lineno": node.lineno, "generator": "mined", "generation_prompt": "", "generation_system": "",
        "constraints": json.dumps({"module": module, "has_doctests": bool(tests)}, sort_keys=True),
    }


def exercise_from_code(code: str, function_name: str | None = None,
                       require_tests: bool = True) -> tuple[Exercise | None, str]:
    """Split code that defines a documented function followed by tests into an Exercise, or (None, reason).

    The prompt is everything up to the end of the function's docstring (imports, helpers, signature,
    docstring); the completion the rest of the body; the tests every top-level statement after it
    (`require_tests=False`: a solution whose tests come from elsewhere; its own asserts are dropped).
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None, "not_code"
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not functions:
        return None, "no_function"
    node = next((f for f in functions if f.name == function_name), None) if function_name else functions[0]
    if node is None:
        return None, "wrong_function_name"
    if not ast.get_docstring(node):
        return None, "no_docstring"
    lines = code.splitlines()
    split = split_function(lines, node)
    if split is None:
        return None, "no_body"
    header, body = split
    start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
    prompt = "\n".join(lines[:start]) + ("\n" if start else "") + header
    after = [n for n in tree.body if n.lineno > node.end_lineno]
    tests = "\n".join(lines[after[0].lineno - 1:]).strip() + "\n" if after else ""
    if not require_tests:
        return Exercise(prompt.lstrip("\n"), body, "", node.name), ""
    if not any(isinstance(n, ast.Assert) for stmt in after for n in ast.walk(stmt)):
        return None, "no_tests"
    return Exercise(prompt.lstrip("\n"), body, tests, node.name), ""


def assert_statements(code: str) -> list[str]:
    """The top-level statements of `code` that assert something, each one test (source text)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    return [ast.get_source_segment(code, stmt) for stmt in tree.body
            if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))
            and any(isinstance(n, ast.Assert) for n in ast.walk(stmt))]


def program(record: Record) -> str:
    """The program that verifies an exercise: prompt + completion, then its tests."""
    tests = record["tests"].strip()
    return record["prompt"] + record["completion"] + ("\n\n" + tests + "\n" if tests else "")


# ---------------------------------------------------------------------------------------------------- textbook
def mine_sections(files: Iterable[Record]) -> tuple[list[Record], Counter[str]]:
    """Module and class docstrings with their code, as Markdown textbook sections."""
    sections: list[Record] = []
    rejected: Counter[str] = Counter()
    for file in files:
        try:
            tree = ast.parse(file["text"])
        except SyntaxError:
            rejected["file_not_parseable"] += 1
            continue
        lines = file["text"].splitlines()
        module = file["path"].removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        units = [(tree, f"The `{module}` module", "module")]
        units += [(n, f"The `{module}.{n.name}` class", "class") for n in tree.body if isinstance(n, ast.ClassDef)]
        for node, title, kind in units:
            doc = ast.get_docstring(node)
            if not doc or len(doc.split()) < MIN_SECTION_DOC_WORDS:
                rejected[f"{kind}_docstring_too_short"] += 1
                continue
            code = _module_example(tree, lines) if kind == "module" else _class_code(node, lines)
            if not code:
                rejected[f"{kind}_without_code"] += 1
                continue
            name = module if kind == "module" else f"{module}.{node.name}"
            sections.append({
                "id": record_id(file["source"], file["path"], name), "text": _section(title, doc, code),
                "source": file["source"], "path": file["path"], "license": file["license"], "symbol": name,
                "generator": "mined", "generation_prompt": "", "generation_system": "",
                "constraints": json.dumps({"module": module, "kind": kind}, sort_keys=True),
            })
    return sections, rejected


def _section(title: str, doc: str, code: str) -> str:
    return f"# {title}\n\n{doc.strip()}\n\n```python\n{code.rstrip()}\n```\n"


def _module_example(tree: ast.Module, lines: list[str]) -> str:
    """The first public documented function of the module that is short enough to read as an example."""
    for node in tree.body:
        if (isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and ast.get_docstring(node)
                and node.end_lineno - node.lineno < MAX_EXAMPLE_LINES):
            return "\n".join(lines[node.lineno - 1:node.end_lineno])
    return ""


def _class_code(node: ast.ClassDef, lines: list[str]) -> str:
    """The class without its docstring (it is the section's prose); long classes as a skeleton of
    method signatures with their docstrings' first lines."""
    doc = node.body[0]
    rest = node.body[1:]
    if not rest:
        return ""
    header = "\n".join(lines[node.lineno - 1:doc.lineno - 1])
    if node.end_lineno - node.lineno <= MAX_CLASS_LINES:
        return header + "\n" + "\n".join(lines[rest[0].lineno - 1:node.end_lineno])
    skeleton = [header]
    for item in rest:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and not item.name.startswith("_"):
            indent = " " * item.col_offset
            signature = "\n".join(lines[item.lineno - 1:item.body[0].lineno - 1])
            summary = (ast.get_docstring(item) or "").strip().split("\n")[0]
            body = f'{indent}    """{summary}"""\n{indent}    ...' if summary else f"{indent}    ..."
            skeleton += [signature, body, ""]
    return "\n".join(skeleton) if len(skeleton) > 1 else ""


class _Mine(PipelineStep):
    type = "⛏️ - MINE"

    def mine(self, files: list[Record]) -> tuple[list[Record], Any]:
        raise NotImplementedError

    def text(self, record: Record) -> str:
        raise NotImplementedError

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            file = {"id": doc.id, "text": doc.text, **doc.metadata}
            candidates, rejected = self.mine([file])
            self.stat_update("files")
            for reason, n in rejected.items():
                self.stat_update(f"rejected_{reason}", value=n)
            for record in candidates:
                self.stat_update("candidates")
                self.count(record)
                record = dict(record)
                yield Document(text=self.text(record), id=record.pop("id"), metadata=record)

    def count(self, record: Record) -> None:
        pass


class MineExercises(_Mine):
    """A Python file -> its self-contained documented functions as exercise candidates (text = prompt +
    completion); `with_doctests` counts those with tests."""

    name = "mine exercises"

    def mine(self, files: list[Record]) -> tuple[list[Record], Any]:
        return mine_exercises(files)

    def text(self, record: Record) -> str:
        return record["prompt"] + record["completion"]

    def count(self, record: Record) -> None:
        if record["tests"]:
            self.stat_update("with_doctests")


class MineSections(_Mine):
    """A Python file -> its module / class docstrings with code, as textbook sections (`text`)."""

    name = "mine sections"

    def mine(self, files: list[Record]) -> tuple[list[Record], Any]:
        return mine_sections(files)

    def text(self, record: Record) -> str:
        return record.pop("text")
