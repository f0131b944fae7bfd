"""Entry point: builds the typer app and turns errors into one line and an exit code.

Exit codes: 0 success, 1 an internal error (a bug: rerun with --debug), 2 bad input or usage,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM; 129 for SIGHUP). ``--debug`` (tracebacks and native logs;
the exit code stays the same), ``-q/--quiet`` and ``-v/--verbose`` work anywhere on the command line.
"""
from __future__ import annotations

import os
import re
import signal
import sys
import traceback

import typer

from edgeq import __version__
from edgeq import termination
from edgeq.errors import EdgeqError

# Library errors name arguments in backticks (`calib=DATA`); on the command line they are flags.
FLAGS = {"calib": "--calib", "eval_data": "--eval", "val_data": "--eval", "train_data": "--train",
         "mode": "--mode", "out": "--out", "out_dir": "--out-dir", "metric": "--metric", "layout": "--layout",
         "resize": "--resize", "max_drop": "--max-drop", "io": "--io", "ptq": "--ptq", "fallback": "--fallback",
         "reference": "--reference", "calib_samples": "--calib-samples", "eval_samples": "--eval-samples",
         "targets": "--target", "reports": "--reports", "threads": "--threads", "inputs": "--inputs"}
GLOBAL_FLAGS = {"--debug", "-q", "--quiet", "-v", "--verbose"}


def as_flags(message: str) -> str:
    """``give `calib=DATA``` -> ``give --calib DATA``: a library message in command-line words."""
    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        return FLAGS.get(name, name) + (f" {value}" if value else "")
    return re.sub(r"`([a-z_]+)(?:=([^`]*))?`", flag, message)


def _version(value: bool) -> None:
    if value:
        print(f"edgeq {__version__}")
        raise typer.Exit(0)


app = typer.Typer(
    name="edgeq", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True,
    help="Float models to small, fast, still-accurate TFLite models, measured on the device.\n\n"
         "Start with: edgeq convert model.keras --mode int8 --calib calib.npz --eval eval.npz",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print edgeq's version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and TensorFlow's own log."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars, warnings or notes on stderr; "
                                                            "errors still print."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Progress bars on stderr even when it is not "
                                                                "a terminal (logs, CI)."),
) -> None:
    """(--debug, -q and -v are handled in main(), before typer sees the arguments: they work anywhere.)"""


def _register() -> None:
    # Each command lives in its own module; importing it adds it to ``app``.
    from edgeq.cli import commands  # noqa: F401


def _interrupted() -> int:
    # TensorFlow's graph-building generators, cut short by the signal, print "Exception ignored in ...
    # Nesting violated" tracebacks when garbage-collected at exit: the run is over, keep its report one line
    sys.unraisablehook = lambda _unraisable: None
    signum = termination.received()
    if signum is not None:
        print(f"edgeq: terminated by {signal.Signals(signum).name}; no output was written", file=sys.stderr)
        return 128 + signum
    print("edgeq: interrupted; no output was written", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this in-process)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        os.environ["EDGEQ_DEBUG"] = "1"
    try:
        with termination.handled():
            return _main(argv, debug)
    finally:
        if debug:
            os.environ.pop("EDGEQ_DEBUG", None)


def _main(argv: list[str], debug: bool) -> int:
    from edgeq.cli import output

    output.configure(quiet=bool({"-q", "--quiet"} & set(argv)), verbose=bool({"-v", "--verbose"} & set(argv)))
    argv = [a for a in argv if a not in GLOBAL_FLAGS]
    _register()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="edgeq", standalone_mode=False)
        code = result if isinstance(result, int) else 0  # typer returns Exit codes in this mode
        if code == 0:
            output.deprecation_warnings()
        # 130: typer turned Ctrl-C (or a termination signal) into Exit(130). A signal whose raise was swallowed
        # (in a finalizer, or by a callback's caller) let the command finish; its writers committed nothing.
        if code == 130 or termination.received() is not None:
            return _interrupted()
        return code
    except EdgeqError as exc:
        if termination.received() is not None:  # it landed in a callback (the converter's calibration), came back wrapped
            return _interrupted()
        if debug:
            traceback.print_exc()
        print(f"edgeq: error: {as_flags(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:  # an optional dependency that no check caught earlier: still one line
        if debug or not exc.name:
            raise
        from edgeq.extras import missing_message

        print(f"edgeq: error: {missing_message(exc.name)}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors (typer's own click)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message(), file=sys.stderr)  # the command's --help text
            return 2
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "edgeq"
        message = exc.format_message().replace("\n", " ")
        print(f"{where}: error: {message}; see '{where} --help'", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except (KeyboardInterrupt, typer.Abort):
        return _interrupted()
    except Exception as exc:  # a bug in edgeq, not the user's fault
        if termination.received() is not None:  # TensorFlow (e.g. Keras' export tracing) turned our Terminated into its own error
            return _interrupted()
        if debug:
            traceback.print_exc()
        print(f"edgeq: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(rerun with --debug for the traceback and please report it)", file=sys.stderr)
        return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
