"""Command line: one subcommand per stage, plus `local` (the embedded runner), `demo` and `report`.

Each subcommand lives in its own module, which provides ``add_arguments(parser)``, ``main(args) -> int``,
``HELP`` (one line) and ``EXAMPLES`` (epilog text). Modules keep heavy imports inside functions so that
``ambientgen --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__, env
from .util import StageError, setup_logging

# subcommand -> module. Stage commands take INPUT_DIR OUTPUT_DIR, the /pfs/<input> -> /pfs/out contract.
COMMANDS: dict[str, str] = {
    "normalize": "ambientgen.stages.normalize",
    "mp3-to-wav": "ambientgen.stages.mp3_to_wav",
    "transcribe": "ambientgen.stages.transcribe",
    "make-dataset": "ambientgen.stages.make_dataset",
    "train": "ambientgen.stages.train",
    "train-base": "ambientgen.stages.train_base",
    "generate": "ambientgen.stages.generate",
    "evaluate-generation": "ambientgen.stages.evaluate_generation",
    "render": "ambientgen.stages.render",
    "train-transcriber": "ambientgen.stages.train_transcriber",
    "evaluate-transcriber": "ambientgen.stages.evaluate_transcriber",
    "report": "ambientgen.report.html",
    "sample-data": "ambientgen.sample_data",
    "local": "ambientgen.local.cli",
    "demo": "ambientgen.demo",
    "compose": "ambientgen.compose",
    "cluster": "ambientgen.cluster.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that subcommand's module is imported (faster start-up)."""
    parser = argparse.ArgumentParser(
        prog="ambientgen",
        description="Turn your own ambient/ASMR/sleep MP3s into new music in the same style.",
        epilog="Examples:\n  ambientgen demo\n  ambientgen normalize in/ out/\n  ambientgen local run\n"
        "  ambientgen STAGE --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.epilog += "\n\nAny option can also come from the environment: AMBIENTGEN_<COMMAND>_<OPTION>, e.g.\n" \
        "  AMBIENTGEN_TRAIN_MINUTES=5 ambientgen train data/ model/"
    parser.add_argument("--version", action="version", version=f"ambientgen {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (DEBUG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        if only is not None and name != only:
            continue
        mod = importlib.import_module(modname)  # a command that cannot be imported is a bug, never hidden
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog="Examples:\n" + mod.EXAMPLES.strip("\n"),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (DEBUG)")
        mod.add_arguments(p)
        apply_env_defaults(name, p)
        for action in p._actions:  # `ambientgen local run`: AMBIENTGEN_LOCAL_<OPTION>, AMBIENTGEN_LOCAL_RUN_<OPTION>
            if isinstance(action, argparse._SubParsersAction):
                for child_name, child in action.choices.items():
                    apply_env_defaults(name, child)
                    apply_env_defaults(f"{name}_{child_name}", child)
        p.set_defaults(_main=mod.main)
    return parser


def apply_env_defaults(command: str, parser: argparse.ArgumentParser) -> None:
    """Let AMBIENTGEN_<COMMAND>_<OPTION> environment variables set an option's default.

    An option given on the command line still wins. This is how a pipeline spec's ``transform.env`` (or the
    demo) tunes a stage without editing its command line.
    """
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "verbose"):
            continue
        raw = env.option_default(command, action.dest)
        if raw is None:
            continue
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse.BooleanOptionalAction):
            value: object = raw.strip().lower() in ("1", "true", "yes", "on")
        elif action.type is not None and callable(action.type):
            try:
                value = action.type(raw)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                parser.error(f"environment variable {env.option_var(command, action.dest)}={raw!r} is not a valid "
                             f"{action.option_strings[-1]} value ({exc})")
        else:
            value = raw
        action.default = value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        return int(args._main(args) or 0)
    except StageError as exc:
        print(f"ambientgen {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ambientgen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
