"""The ``autorobust`` command. Argument parsing lives here only; the library gets typed objects.

Every user error (bad config, missing file, impossible shift, unknown name, and a command line
argparse refuses) is printed as one line on stderr with exit status 2; ``--debug`` shows the
traceback instead. Ctrl-C exits with 130 and leaves checkpoints and studies resumable, also when it
comes after the work is done, while the process ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from autorobust import __version__
from autorobust.errors import AutorobustError

if TYPE_CHECKING:
    from autorobust.search.common import SearchOutcome

__all__ = ["main"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

INTERRUPTED_MESSAGE = (
    "autorobust: interrupted; checkpoints and studies are kept: rerun the same command "
    "(with --resume for train) to continue"
)


class _UsageError(Exception):
    """A command line that argparse refuses, as one line that names what the user typed."""


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (no usage block) naming the argument; its
    sub-command parsers are of this class too (argparse creates them with the parent's type)."""

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        message = message.replace(" with argument ", " with ")
        raise _UsageError(f"{message} (see: {self.prog} --help)")


def _float_text(text: str) -> str:
    """A number as the user typed it: checked here, passed on as typed so that an error of the
    config names exactly that (``--budget 1``, not ``1.0``)."""
    try:
        float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    return text


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file, or the name of a bundled config (demo)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=3 (repeatable)",
    )
    parser.add_argument("--run-dir", help="run directory (overrides run_dir in the config)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="overrides device")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_threads_argument(parser)


def _add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        metavar="N",
        help="torch CPU threads: a number, or auto (the default: OMP_NUM_THREADS if set, else "
        "the cores divided among the autorobust processes training on this machine)",
    )


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config_arguments(parser)
    parser.add_argument("--storage", help="Optuna storage URL (default: SQLite in the run dir)")
    parser.add_argument("--study-name", help="study name; workers sharing it share the study")
    parser.add_argument("--n-trials", type=int, help="finished trials the study should reach")
    parser.add_argument("--timeout", type=_float_text, help="stop starting trials after SECONDS")
    parser.add_argument("--sampler", choices=["tpe", "random", "nsga2"], help="search strategy")
    parser.add_argument(
        "--no-retrain", action="store_true", help="skip retraining the best trial with full budget"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``autorobust`` command."""
    parser = _Parser(
        prog="autorobust",
        description="Design how an image classifier copes with imbalanced, noisy or unlabeled "
        "data.",
    )
    parser.add_argument("--version", action="version", version=f"autorobust {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one configuration")
    _add_config_arguments(train)
    existing = train.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a run already in the run directory (without it, or --resume, such a "
        "directory is refused)",
    )

    evaluate = commands.add_parser("evaluate", help="re-evaluate a run directory on its test split")
    evaluate.add_argument("run_dir", help="a run directory written by `autorobust train`")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"])

    predict = commands.add_parser(
        "predict",
        help="class probabilities of new images from a finished run, written to a CSV",
    )
    predict.add_argument("run_dir", help="a run directory written by `autorobust train`")
    predict.add_argument(
        "input", help="an image folder, a CSV of image paths, or an .npz of images"
    )
    predict.add_argument(
        "-o", "--output", default="predictions.csv", help="CSV to write (default: %(default)s)"
    )
    predict.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    predict.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    predict.add_argument(
        "--image-column", default="image", help="the CSV input's column of image paths"
    )
    predict.add_argument(
        "--no-calibration",
        action="store_true",
        help="the raw softmax instead of the temperature fitted on the meta set",
    )
    predict.add_argument(
        "--no-balance",
        action="store_true",
        help="for a cross-entropy-like loss, the posterior under the training labels' "
        "long-tailed prior instead of the balanced (uniform-prior) one",
    )
    predict.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    export = commands.add_parser(
        "export",
        help="a finished run as one ONNX or torch.export file: uint8 images in, calibrated "
        "class probabilities out",
    )
    export.add_argument("run_dir", help="a run directory written by `autorobust train`")
    export.add_argument("--format", required=True, metavar="onnx|pt2", help="onnx or pt2")
    export.add_argument(
        "-o", "--output", help="file to write (default: model.onnx or model.pt2); FILE.json beside"
    )
    export.add_argument(
        "--no-calibration",
        action="store_true",
        help="the raw softmax instead of the temperature fitted on the meta set",
    )
    export.add_argument(
        "--no-balance",
        action="store_true",
        help="for a cross-entropy-like loss, the posterior under the training labels' "
        "long-tailed prior instead of the balanced (uniform-prior) one",
    )

    search = commands.add_parser("search", help="search a design with Optuna")
    kinds = search.add_subparsers(dest="kind", required=True, metavar="KIND")
    # The registry's declarations import neither torch nor Optuna: `--help` stays quick.
    from autorobust.search.kinds import SEARCH_KINDS

    for name in SEARCH_KINDS.names():
        kind = SEARCH_KINDS.get(name)
        kind_parser = kinds.add_parser(name, help=kind.help)
        _add_search_arguments(kind_parser)
        for option in kind.options:
            kind_parser.add_argument(option.flag, choices=option.choices, help=option.help)

    design = commands.add_parser(
        "design",
        help="search a composed design (architecture, noise treatment, loss) under a compute "
        "budget, retrain it and write a report",
    )
    _add_config_arguments(design)
    design.add_argument("--storage", help="Optuna storage URL (default: SQLite in the run dir)")
    design.add_argument("--study-name", help="study name (default: design-<config name>)")
    design.add_argument(
        "--budget",
        type=_float_text,
        help="compute budget in trainings of the configured model on the whole pool "
        "(overrides design.budget; default 3)",
    )
    design.add_argument(
        "--no-retrain",
        action="store_true",
        help="stop after the first rung: no finalist continues to train.epochs, no test split",
    )

    commands.add_parser("datasets", help="list data sources and whether their files are present")

    demo = commands.add_parser("demo", help="a two-minute tour on the bundled digits data")
    demo.add_argument("--run-dir", default="runs/demo", help="where the demo writes its runs")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_threads_argument(demo)
    return parser


# Flags that set a config value: (attribute of the parsed arguments, the flag, the config key,
# whether the value is a string, quoted so that YAML keeps it one: a study named 123).
_CONFIG_FLAGS = (
    ("run_dir", "--run-dir", "run_dir", True),
    ("device", "--device", "device", True),
    ("threads", "--threads", "train.threads", False),
    ("storage", "--storage", "search.storage", True),
    ("study_name", "--study-name", "search.study_name", True),
    ("n_trials", "--n-trials", "search.n_trials", False),
    ("timeout", "--timeout", "search.timeout", False),
    ("sampler", "--sampler", "search.sampler", True),
    ("budget", "--budget", "design.budget", False),
)


def _load(args: argparse.Namespace):
    """The config of ``args``: the file, its ``--set`` overrides, then the flags; an invalid
    value a flag set is blamed on the flag as typed (``--threads abc``)."""
    from autorobust.config import load_config

    overrides = list(args.overrides)
    labels: dict[str, str] = {}
    if args.no_progress:
        overrides.append("train.progress=false")
    for attribute, flag, key, is_text in _CONFIG_FLAGS:
        value = getattr(args, attribute, None)
        if value is None:
            continue
        item = f"{key}={json.dumps(value) if is_text else value}"
        overrides.append(item)
        labels[item] = f"{flag} {shlex.quote(str(value))}"
    config = load_config(args.config, overrides, labels=labels)
    from autorobust.train.threads import apply_threads

    apply_threads(config.train.threads)  # before any work; every training run applies it again
    return config


def _format(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def _print_test_summary(label: str, metrics: dict[str, Any]) -> None:
    test = metrics["test"]
    fields = [
        ("test accuracy", "accuracy"),
        ("balanced", "balanced_accuracy"),
        ("worst-class", "worst_class_accuracy"),
        ("macro-F1", "macro_f1"),
    ]
    print(f"{label}: " + "  ".join(f"{name} {_format(test[key])}%" for name, key in fields))


def _command_train(args: argparse.Namespace) -> int:
    from autorobust.experiment import train_run

    config = _load(args)
    result = train_run(config, resume=args.resume, overwrite=args.overwrite)
    _print_test_summary(config.loss.name, result.metrics)
    print(f"wrote {result.run_dir / 'metrics.json'}")
    return 0


def _command_evaluate(args: argparse.Namespace) -> int:
    from autorobust.experiment import evaluate_run

    metrics = evaluate_run(args.run_dir, device=args.device)
    _print_test_summary(str(args.run_dir), metrics)
    print(f"wrote {Path(args.run_dir) / 'metrics.json'}")
    return 0


def _command_predict(args: argparse.Namespace) -> int:
    from autorobust.inference import predict_files

    written = predict_files(
        args.run_dir,
        args.input,
        args.output,
        device=args.device,
        calibrated=not args.no_calibration,
        balanced=not args.no_balance,
        batch_size=args.batch_size,
        image_column=args.image_column,
        progress=not args.no_progress,
    )
    print(f"wrote {written}")
    return 0


def _command_export(args: argparse.Namespace) -> int:
    from autorobust.export import export_model

    written = export_model(
        args.run_dir,
        args.format,
        args.output,
        calibrated=not args.no_calibration,
        balanced=not args.no_balance,
    )
    print(f"wrote {written} and {written}.json")
    return 0


def _command_search(args: argparse.Namespace) -> int:
    """``autorobust search KIND``: the kind's ``run_search`` from the registry (imported here, not
    at start-up, so that ``autorobust --help`` does not load torch), with the kind's options."""
    from autorobust.experiment import check_config
    from autorobust.search.kinds import SEARCH_KINDS

    kind = SEARCH_KINDS.get(args.kind)  # argparse allows only the registered kinds
    config = _load(args)
    check_config(config)  # unknown names are refused before a study or folder is created
    outcome: SearchOutcome = kind.run(
        config,
        default_study_name=f"{args.kind}-{Path(args.config).stem}",
        retrain=not args.no_retrain,
        **{option.keyword: getattr(args, option.keyword) for option in kind.options},
    )
    best = outcome.best
    print(f"best trial #{best['number']}: {best['params']} (value {best['value']:.4g})")
    if outcome.retrained is not None:
        _print_test_summary("retrained best", outcome.retrained.metrics)
    print(f"wrote {outcome.run_dir}")
    return 0


def _command_design(args: argparse.Namespace) -> int:
    from autorobust.design.pipeline import run_design
    from autorobust.experiment import check_config
    from autorobust.methods.csnas.darts.genotype import check_genotype_files

    config = _load(args)
    check_config(config)  # unknown names are refused before a study or folder is created
    # Every genotype file is parsed and validated before the probe trains or a file is written.
    check_genotype_files(config.design.architectures)
    outcome = run_design(
        config,
        default_study_name=f"design-{Path(args.config).stem}",
        retrain=not args.no_retrain,
    )
    print(f"chosen design: {outcome.chosen['name']}")
    if outcome.final and outcome.final != outcome.chosen["name"]:
        # The finalists' ensemble, "ensemble(a; b)", was kept instead.
        print(f"kept the finalists' ensemble: {outcome.final}")
    if outcome.retrained is not None:
        _print_test_summary("design", outcome.retrained.metrics)
        print(f"the design's model: {outcome.retrained.run_dir} (autorobust predict / export)")
    print(f"wrote {outcome.report}")
    return 0


def _command_datasets(args: argparse.Namespace) -> int:
    from autorobust.data.sources import describe_sources

    rows = describe_sources()
    width = max(len(name) for name, *_ in rows)
    for name, description, present, missing in rows:
        print(f"{name:<{width}}  {'ready' if present else 'missing':<7}  {description}")
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            print(f"{'':<{width}}  {'':<7}  expects {missing[0]}{more}")
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    from autorobust.demo import run_demo

    run_demo(Path(args.run_dir), progress=not args.no_progress, threads=args.threads)
    return 0


COMMANDS = {
    "train": _command_train,
    "evaluate": _command_evaluate,
    "predict": _command_predict,
    "export": _command_export,
    "search": _command_search,
    "design": _command_design,
    "datasets": _command_datasets,
    "demo": _command_demo,
}


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` with any line breaks folded: an error is one line on stderr."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Without ``argv`` (the ``autorobust`` command itself), the process ends here once the command
    is done (:func:`_end_process`): a Ctrl-C while it ends exits 130 with the usual line instead
    of a traceback or a silent death by signal in the interpreter's shutdown.
    """
    try:
        status = _main(argv)
    except KeyboardInterrupt:  # while parsing, or after the command returned
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        status = EXIT_INTERRUPTED
    if argv is None:
        _end_process(status)
    return status


def _end_process(status: int) -> NoReturn:
    """Flush the output and end the process with ``status`` now.

    Python's shutdown after the work (torch's libraries unloading) takes about a second, during
    which the interpreter has already put SIGINT back to the default, so a Ctrl-C then killed the
    process silently (status -2) or printed "Exception ignored ... KeyboardInterrupt". Nothing of
    the run is left to write (every file was written atomically), so the shutdown is skipped; a
    Ctrl-C before the end exits 130 with the usual line.
    """

    def interrupted(signum: int, frame: object) -> None:
        _flush()
        os.write(2, (INTERRUPTED_MESSAGE + "\n").encode())
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, interrupted)
    logging.shutdown()
    _flush()
    os._exit(status)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, RuntimeError):  # closed pipe, busy stream
            stream.flush()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"autorobust: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return COMMANDS[args.command](args)
    except AutorobustError as exc:
        if args.debug:
            raise
        print(f"autorobust: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # unwritable run directory, full disk, ...: the message names the path
        if args.debug:
            raise
        print(f"autorobust: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
