"""The `phi` command line: one entry point that wires the subcommands of every package.

Each subcommand lives in the module that does the work; that module defines
`add_arguments(parser)` and `main(args)`, and its docstring (first line = help, the rest = the
`--help` epilog with an example). This file only routes, so `phi --help` stays fast: modules are
imported when their command runs, or when their own `--help` is asked for.

    phi --help
    phi data filtered-code --help
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

# (group, command) -> module. group None = top-level command.
COMMANDS: dict[tuple[str | None, str], str] = {
    (None, "demo"): "recipes.demo",
    (None, "pretrain"): "recipes.pretrain",
    (None, "finetune"): "recipes.finetune",
    (None, "reproduce"): "recipes.reproduce",
    (None, "convert"): "modeling_phi.convert",
    (None, "push"): "recipes.push",
    ("data", "filtered-code"): "datasets_builders.pipelines.filtered_code",
    ("data", "textbook"): "datasets_builders.textbook",
    ("data", "exercises"): "datasets_builders.exercises",
    ("data", "decontaminate"): "datasets_builders.decontaminate",
    ("data", "tokenizer"): "datasets_builders.tokenizer",
    ("data", "pack"): "datasets_builders.packing",
    ("data", "benchmarks"): "evaluation.data",
    ("eval", "run"): "evaluation.runner",   # also `phi eval --tasks ...` (see main)
    ("eval", "humaneval"): "evaluation.code_eval",
    ("eval", "mbpp"): "evaluation.code_eval",
    ("eval", "humanevalplus"): "evaluation.code_eval",
    ("eval", "mbppplus"): "evaluation.code_eval",
    ("eval", "gsm8k"): "evaluation.code_eval",
    ("eval", "squad"): "evaluation.code_eval",
    ("eval", "commonsense"): "evaluation.multiple_choice",
}
# Exceptions that mean "bad input or environment": the code raising them writes a message that names
# the file / field / URL and what to do, so the CLI prints it as one line instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ConnectionError, TimeoutError)
GROUPS = {"data": "build datasets (Hub layout)", "eval": "evaluate a model"}


def _available(module: str) -> bool:
    """Whether `package.module` exists, without importing the package (that would load torch)."""
    package, _, name = module.partition(".")
    spec = importlib.util.find_spec(package)
    rel = name.replace(".", "/") + ".py"
    return spec is not None and any((Path(p) / rel).is_file() for p in spec.submodule_search_locations or [])


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phi", description="phi-1 / phi-1.5 reproduction: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {g: sub.add_parser(g, help=h).add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
              for g, h in GROUPS.items()}
    # Only the command being run (or asked about) is imported; the rest get a one-line help.
    wanted = [a for a in argv if not a.startswith("-")][:2]
    for (group, name), module in COMMANDS.items():
        if not _available(module):
            continue
        target = sub if group is None else groups[group]
        path = [name] if group is None else [group, name]
        if wanted[: len(path)] == path:
            mod = importlib.import_module(module)
            doc = (mod.__doc__ or "").strip()
            first, _, rest = doc.partition("\n")
            p = target.add_parser(name, help=first, description=first, epilog=rest.strip() or None,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
            p.set_defaults(_main=mod.main, _command=name, _actions=p._actions)
            mod.add_arguments(p)
            _spelling_aliases(p)
        else:
            target.add_parser(name, help=f"(see `phi {' '.join(path)} --help`)")
    return parser


def _spelling_aliases(parser: argparse.ArgumentParser) -> None:
    """Underscores are the canonical flag style; the dashed spelling of every flag is accepted too (and back)."""
    parser.allow_abbrev = False  # a typo is an error, never a silently completed other flag
    for action in list(parser._actions):
        for option in [o for o in action.option_strings if o.startswith("--")]:
            canonical = "--" + option[2:].replace("-", "_")
            for alias in (canonical, "--" + option[2:].replace("_", "-")):
                if alias not in parser._option_string_actions:
                    parser._option_string_actions[alias] = action
                    action.option_strings.append(alias)
        # show the underscore spelling first in --help
        action.option_strings.sort(key=lambda o: (not o.startswith("--"), "-" in o[2:]))


def main(argv: list[str] | None = None) -> None:
    # Set before torch loads: spin-waiting OpenMP threads starve the sandbox / server subprocesses we start.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"] and len(argv) > 1 and argv[1].startswith("--") and argv[1] not in ("-h", "--help"):
        argv = ["eval", "run", *argv[1:]]   # `phi eval --tasks humaneval,piqa ...`: the registry runner
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # one line, with the closest flag of the command
        import difflib

        options = [o for a in getattr(args, "_actions", []) for o in a.option_strings]
        hints = [f"{u} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(u.split("=")[0], options, 1))
                 else u for u in unknown]
        sys.exit(f"phi {args._command}: error: unrecognized argument(s) {' '.join(hints)}")
    exit_on_user_errors(f"phi {args._command}", lambda: args._main(args))


def exit_on_user_errors(prog: str, fn: Callable[[], object]) -> None:
    """Run `fn`; bad input is reported as one line `prog: error: ...` (PHI_DEBUG=1 shows the traceback)."""
    try:
        fn()
    except KeyboardInterrupt:
        sys.exit(130)
    except USER_ERRORS as err:
        if os.environ.get("PHI_DEBUG"):
            raise
        sys.exit(f"{prog}: error: {err}")


if __name__ == "__main__":
    main()
