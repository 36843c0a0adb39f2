"""``vitkit`` command line: one sub-command per module in this package.

Each command module defines ``register(subparsers)``, which adds its parser (through
:func:`vitkit.cli.common.add_command`, with the shared flags of :mod:`vitkit.cli.common`) and sets ``func``.
Neither this module nor ``register`` imports torch, so ``vitkit --help``/``--version`` answer at once; the
commands import what they need when they run.

Exit codes: 0 done; 2 a problem the user can fix (one line ``vitkit CMD: error: ...``: :data:`USER_ERRORS`,
argument errors); 1 an internal error (a short traceback and a request to report it); 3 training diverged;
130/143 stopped by SIGINT/SIGTERM; 141 stdout closed early (``| head``), quietly, as a tool stopped by SIGPIPE.
``VITKIT_DEBUG=1`` re-raises any error with its full traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import select
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError
from .common import Parser, setup_logging

__all__ = ["COMMANDS", "USER_ERRORS", "UserError", "build_parser", "main", "write_report"]

# Order shown in --help; each is the module vitkit.cli.NAME, with a register(subparsers).
COMMANDS = ("models", "download", "data", "demo", "convert", "train", "eval", "fewshot", "analyze", "predict",
            "export", "bench")

REPORT_URL = "https://github.com/vitkit/vitkit/issues"

# Optional dependency (top-level module) -> the extra of pyproject.toml that installs it. A command that needs
# one that is not installed is a one-line user error naming the extra, not an internal error.
OPTIONAL_MODULES = {"tensorboard": "train", "sklearn": "train", "matplotlib": "analysis", "onnx": "export",
                    "onnxruntime": "export", "onnxscript": "export", "fsspec": "remote", "s3fs": "remote",
                    "gcsfs": "remote", "datasets": "hf", "mlflow": "mlflow", "wandb": "wandb",
                    "scipy": "data"}


def _checkpoint_error() -> type[BaseException]:
    # checkpoints.errors imports nothing heavy; imported here so that this module stays free of the package tree
    from ..checkpoints.errors import CheckpointError

    return CheckpointError


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors reported as the user's to fix (one line, exit 2). A bare ValueError/KeyError/TypeError is not among
    them: raised from deep inside vitkit it is a bug, and shows as one."""
    return (UserError, _checkpoint_error(), FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            PermissionError)


USER_ERRORS = ("UserError", "CheckpointError", "FileNotFoundError", "FileExistsError", "IsADirectoryError",
               "NotADirectoryError", "PermissionError")


def write_report(out_dir: str, name: str, result: dict, *, quiet: bool = False) -> Path:
    """Write ``result`` as ``OUT_DIR/NAME`` (JSON) and say so on stderr (stdout may be carrying --json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(result, indent=1))
    if not quiet:
        print(f"wrote {out / name}", file=sys.stderr)
    return out / name


def build_parser() -> Parser:
    from .. import __version__

    parser = Parser(prog="vitkit", description="Vision Transformer toolkit: the model and pipeline of Dosovitskiy "
                    "et al. (2020). `vitkit COMMAND --help` shows each command's options and examples.")
    parser.add_argument("--version", action="version", version=f"vitkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}
    for name in COMMANDS:
        importlib.import_module(f"vitkit.cli.{name}").register(sub)
        commands[name] = sub.choices[name]
    parser.set_defaults(_commands=commands)
    return parser


def _parse(parser: Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, except that an unknown option is reported by the sub-command's parser, which knows that
    command's options for its "did you mean"."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        target = args._commands.get(getattr(args, "command", None) or "", parser)
        target.error(f"unrecognized arguments: {' '.join(extra)}")
    del args._commands  # parsing's own table; commands that record their options (bench's JSON) must not see it
    return args


def _report_internal(command: str, e: BaseException) -> None:
    frames = traceback.extract_tb(e.__traceback__)[-4:]
    print("Traceback (most recent call last, innermost 4 frames):", file=sys.stderr)
    print("".join(traceback.format_list(frames)).rstrip(), file=sys.stderr)
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    print(f"vitkit {command}: internal error: this is a bug in vitkit, not a problem with your input. Please "
          f"report it at {REPORT_URL} with the command line and the lines above (VITKIT_DEBUG=1 shows the full "
          "traceback).", file=sys.stderr)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on its write end)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an in-memory stream: no pipe to break
        return False
    if not hasattr(select, "poll"):
        return True  # no poll (Windows): a broken pipe during a command is most likely stdout's
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def main(argv: Sequence[str] | None = None) -> int:
    from ..progress import disable_bars

    try:
        return _main(argv)
    finally:
        # --no-progress is one command's: a caller that runs commands in-process (tests, notebooks) gets the
        # process default (bars on a terminal) back for the next one
        disable_bars(False)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args)
    if getattr(args, "no_progress", False):
        from ..progress import disable_bars

        disable_bars()  # --no-progress: log lines instead of bars (the commands' progress=True stays)
    from ..perf.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # 5-13% on CPU training steps; VITKIT_TUNE_MALLOC=0 opts out
    from .stop import report, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, where a closed pipe's error could no longer be caught
        return code
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (stop.Stopped): one line, what was kept; 130 / 143
        return report(args, e)
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit codes
        if isinstance(e, BrokenPipeError) and _stdout_closed():  # not a socket's: the reader of our output left
            # `vitkit ... | head`: the reader has what it wanted. End quietly as Unix tools do (killed by SIGPIPE:
            # 128 + 13), with stdout pointed at /dev/null so that the interpreter's last flush has nowhere to fail.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
        if os.environ.get("VITKIT_DEBUG"):
            raise
        missing = (e.name or "").split(".")[0] if isinstance(e, ModuleNotFoundError) else ""
        if missing in OPTIONAL_MODULES:
            print(f"vitkit {args.command}: error: this needs the optional package {missing!r}, which is not "
                  f"installed: pip install 'vitkit[{OPTIONAL_MODULES[missing]}]'", file=sys.stderr)
            return 2
        if isinstance(e, user_errors()):
            print(f"vitkit {args.command}: error: {e}", file=sys.stderr)
            return 2
        _report_internal(args.command, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
