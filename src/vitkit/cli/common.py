"""The command line's one vocabulary: each shared flag is defined once here and added by every sub-command that
takes it, so ``--model`` / ``--data`` / ``--out`` / ``--batch-size`` / ``--precision`` / ``--num-workers`` /
``--image-size`` / ``--preprocess`` / ``--no-progress`` / ``--json`` mean the same everywhere
(tests/cli/test_cli_vocabulary.py checks it on every ``--help``).

Nothing here imports torch: ``vitkit --help`` builds every sub-command's parser, and must stay fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..errors import UserError, did_you_mean
from ..image_size import as_hw

# Copies of vitkit.perf.PRECISIONS and vitkit.data.preprocess.PREPROCESSINGS: argparse needs the choices when the
# parser is built, and importing those modules imports torch (seconds). tests/cli/test_cli_vocabulary.py fails
# when they differ from the library's.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PREPROCESSINGS = ("vit_jax", "big_vision", "big_vision_precise", "pil")

MODEL_HELP = ("weights: a file or folder of any supported format (vitkit .safetensors, official .npz, timm, "
              "Hugging Face), a run folder or its checkpoints/step_N.pt, an http(s) URL, hf-hub:ORG/NAME[@REV], or "
              "a catalogue name (`vitkit models --pretrained`)")
DATA_HELP = ("data spec: digits (scikit-learn's, bundled), a named data set downloaded once (e.g. cifar10, pets; "
             "`vitkit data list` names them all), folder:PATH (one sub-folder "
             "per class), wds:PATTERN (WebDataset shards, e.g. wds:data/train-{000000..000009}.tar), mnist:PATH, "
             "cifar:PATH, imagenet:PATH[?labels=real], hf:PATH (a Hugging Face save_to_disk folder or parquet files)")

log = logging.getLogger("vitkit")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and example epilogs as written; ``(default: X)`` after every option whose help does not
    already state its default (None and False defaults say nothing and are left out)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, "", argparse.SUPPRESS) or not action.option_strings:
            return text
        if isinstance(action.default, (list, tuple)):
            return text + " (default: " + ",".join(str(v) for v in action.default) + ")"
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a misspelled option or choice. Sub-parsers are of this class too
    (``add_subparsers`` uses the parent's class)."""

    _seen: list[str] = []

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        self._seen = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        m = re.match(r"unrecognized arguments: (\S+)", message)
        if m and m.group(1).startswith("-"):
            message += did_you_mean(m.group(1).split("=")[0], self._option_names())
        elif message.startswith("the following arguments are required"):
            # A misspelled required option shows up as "required"; name the misspelling too.
            known = self._option_names()
            for word in self._seen:
                flag = word.split("=")[0]
                if flag.startswith("--") and flag not in known and did_you_mean(flag, known):
                    message += f"; unknown option {flag}{did_you_mean(flag, known)}"
        m = re.match(r"argument (\S+): invalid choice: '([^']*)'", message)
        if m:
            action = next((a for a in self._actions if m.group(1) in (a.metavar, *a.option_strings, a.dest)), None)
            if action is not None and action.choices:
                message += did_you_mean(m.group(2), [str(c) for c in action.choices])
        # One line, as every other user error (argparse's own error() prints the whole usage first).
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` shows the options)\n")

    def _option_names(self) -> list[str]:
        return [o for a in self._actions if a.help != argparse.SUPPRESS for o in a.option_strings]


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                examples: Sequence[str]) -> argparse.ArgumentParser:
    """A sub-command's parser: help text, examples at the end of ``--help``, ``--quiet``/``--verbose``."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    description = re.sub(r"``([^`]*)``", r"\1", description)  # reStructuredText literals read as plain text
    p = sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=HelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    g.add_argument("-v", "--verbose", action="store_true", help="also debug messages on stderr")
    return p


def examples(parser: argparse.ArgumentParser) -> list[str]:
    """The example command lines at the end of a sub-command's ``--help`` (as :func:`add_command` wrote them)."""
    text = parser.epilog or ""
    return [line.strip() for line in text.split("examples:", 1)[-1].splitlines() if line.strip()]


def setup_logging(args: argparse.Namespace) -> None:
    """The ``vitkit`` logger to stderr: INFO by default, WARNING with --quiet, DEBUG with --verbose. Messages
    are plain lines (each names its command, ``vitkit train: ...``), readable in a terminal and in a log file."""
    level = logging.WARNING if getattr(args, "quiet", False) else (
        logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    log.setLevel(level)
    log.propagate = False
    for h in list(log.handlers):
        if getattr(h, "_vitkit", False):
            log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)  # resolved now: pytest's capsys swaps sys.stderr per test
    handler.setFormatter(logging.Formatter("%(message)s"))  # each message carries its "vitkit CMD:" prefix
    handler._vitkit = True  # type: ignore[attr-defined]
    log.addHandler(handler)


# -- the shared flags -----------------------------------------------------------------------------------------


def add_model(p: argparse.ArgumentParser, *, required: bool = True, default: str | None = None,
              extra: str = "") -> None:
    p.add_argument("--model", required=required, default=default, metavar="SOURCE", help=MODEL_HELP + extra)


def add_data(p: argparse.ArgumentParser, *, required: bool = True, extra: str = "") -> None:
    p.add_argument("--data", required=required, metavar="SPEC", help=DATA_HELP + extra)


def add_out(p: argparse.ArgumentParser, *, what: str, required: bool = False, default: str | None = None) -> None:
    p.add_argument("--out", required=required, default=default, metavar="PATH", help=f"output: {what}")


def check_out(path: str, *, folder: bool, flag: str = "--out", suffix: str = "") -> None:
    """Refuse an output path that cannot be written, before any work is done (an evaluation that runs for an hour
    and then cannot write its report): a file where a folder is wanted or the other way round, a path under a file,
    a folder without write permission. The write itself may still fail (a full disk); this catches the mistakes."""
    p = Path(path)
    if p.is_dir() and not folder:
        raise UserError(f"{flag} {path} is a folder; give the name of the file to write (e.g. {p / 'model'}{suffix})")
    if p.exists() and folder and not p.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; choose a new or existing folder for {flag}")
    if p.exists():
        if not os.access(p, os.W_OK | (os.X_OK if folder else 0)):
            raise UserError(f"{flag} {path} is not writable (permission denied); choose another {flag}")
        return
    base = p.absolute().parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, so nothing can be created under it; choose another "
                        f"{flag}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot create it in {base} (permission denied); choose another {flag}")


def add_batch_size(p: argparse.ArgumentParser, *, default: int | None, extra: str = "") -> None:
    p.add_argument("--batch-size", type=positive_int, default=default, metavar="N", help="images per batch" + extra)


def add_precision(p: argparse.ArgumentParser, *, default: str | None = "auto", extra: str = "") -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help="arithmetic: auto (bf16 autocast where the device runs it fast, else fp32), fp32, bf16 or "
                        "fp16 autocast; records state the one that ran" + extra)


def add_device(p: argparse.ArgumentParser, *, default: str | None = "cpu") -> None:
    p.add_argument("--device", default=default, help="torch device: cpu, cuda, cuda:N")


def add_num_workers(p: argparse.ArgumentParser, *, default: int | None = None) -> None:
    p.add_argument("--num-workers", type=non_negative_int, default=default, metavar="N",
                   help="data-loading worker processes; 0 loads in the main process (default: automatic)")


def add_image_size(p: argparse.ArgumentParser, *, default: int | None = None, extra: str = "") -> None:
    text = "input resolution in pixels: R (R x R) or HxW" + extra
    if default is None:
        text += "; position embeddings are resampled to it (default: the model's own)"
    p.add_argument("--image-size", type=image_size, default=default, metavar="R|HxW", help=text)


def image_size(text: str) -> int | tuple[int, int]:
    """argparse type of --image-size: ``R`` (a square, kept as one int) or ``HxW`` (a pair)."""
    parts = re.split(r"[x,]", text.strip().lower())
    try:
        if len(parts) == 1:
            return positive_int(parts[0])
        if len(parts) == 2:
            h, w = (positive_int(v) for v in parts)
            return h if h == w else (h, w)
    except argparse.ArgumentTypeError:
        pass
    raise argparse.ArgumentTypeError(f"expected R or HxW in positive pixels (e.g. 384 or 384x256), got {text!r}")


def size_label(size: int | tuple[int, int]) -> str:
    """``224`` or ``384x256``: an --image-size value as it is written on the command line and in file names."""
    h, w = as_hw(size, "--image-size")
    return str(h) if h == w else f"{h}x{w}"


def add_preprocess(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preprocess", choices=PREPROCESSINGS, default=None, metavar="NAME",
                   help="evaluation preprocessing: vit_jax (the official TF decode with the fast IDCT + resize), "
                        "big_vision (the same decode, resize cast to uint8), big_vision_precise (accurate IDCT), pil "
                        "(Pillow decode). Default: vit_jax for checkpoints normalised to [-1, 1] (mean = std = 0.5, "
                        "as the official ones), pil otherwise")


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (also off when stderr is not a terminal): log a line every log_every "
                        "steps (training) or every 10%% instead")


def add_json(p: argparse.ArgumentParser, *, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout instead of text")


def add_split(p: argparse.ArgumentParser, *, default: str = "test") -> None:
    p.add_argument("--split", default=default, help="split of a data spec: train, validation or test")


def add_limit(p: argparse.ArgumentParser, *, extra: str = "") -> None:
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help=f"only the first N examples{extra or ' of the data'}, exactly N (default: all)")


def _int_at_least(text: str, low: int, expected: str, below: str) -> int:
    """argparse type body: an integer >= ``low`` (a wrong value is an argument error naming the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{below}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1, "a positive integer", "must be positive")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0", "must be >= 0")


def hidden_alias(p: argparse.ArgumentParser, *flags: str, dest: str, **kw: Any) -> None:
    """An old spelling kept working (not shown in ``--help``); the value lands in ``dest``."""
    p.add_argument(*flags, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kw)


def resolve_device_precision(device: str, precision: str) -> tuple[Any, str]:
    """(torch.device, the precision that will run) for --device/--precision: ``auto`` resolved once here by
    vitkit.perf.resolve_precision, so that records state what ran, not "auto"."""
    import torch

    from ..errors import UserError
    from ..perf import resolve_precision

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"--device {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available in this torch build/machine")
    return dev, resolve_precision(precision, dev)


def load_command_model(args: argparse.Namespace, *, no_head: str | None = None) -> tuple[Any, Any, str]:
    """(model in eval mode, resampled to --image-size; device; precision that will run) for a command's
    --model/--image-size/--device/--precision. ``no_head``: how the error for a model without a classification
    head ends (None: such a model is fine, as for few-shot features)."""
    from ..evaluate.model import load_for_inference

    device, precision = resolve_device_precision(args.device, args.precision)
    model = load_for_inference(args.model, args.image_size)
    fixed = getattr(model, "fixed_precision", None)  # an ONNX graph runs in the precision it was exported in
    if fixed is not None:
        if args.precision not in ("auto", fixed):
            raise UserError(f"{args.model}: runs in {fixed} (an exported graph); drop --precision {args.precision}")
        precision = fixed
    if no_head is not None and model.config.num_classes < 1:
        raise UserError(f"{args.model}: the model has no classification head{no_head}")
    return model, device, precision
