"""Entry point of the ``campusgps`` command.

Each command lives in ``campusgps/cli/<command>.py`` and exposes ``HELP`` (one line),
``DESCRIPTION`` (the --help text), ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import heavy libraries inside ``run`` so ``--help`` stays instant.

Exit status: 0 success; 2 bad arguments or unusable input (one clear line on stderr); 1 unexpected error
(one line naming the command, step and input, and the log file holding the traceback; see campusgps.logs).
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {  # command -> module under campusgps.cli
    "synth": "synth",
    "ingest": "ingest",
    "split": "split",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "compare": "compare",
    "audit": "audit",
    "index": "index",
    "serve": "serve",
    "demo": "demo",
}


def _load(name: str):
    return importlib.import_module(f"campusgps.cli.{COMMANDS[name]}")


def build_parser() -> argparse.ArgumentParser:
    from campusgps import __version__

    parser = argparse.ArgumentParser(
        prog="campusgps",
        description="Turn a folder of geotagged campus photos into a visual localizer, and use it: "
                    "given a new photo, answer latitude, longitude and a radius in metres.",
        epilog="Typical flow: synth (or your own photos) -> ingest -> split -> train -> evaluate -> serve. "
               "Run `campusgps demo` to see all of it on a simulated campus. `campusgps COMMAND --help` for details.",
    )
    parser.add_argument("--version", action="version", version=f"campusgps {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name)
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser




def main(argv: list[str] | None = None) -> int:
    from campusgps.errors import UserError

    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 with a usage line on bad arguments
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _plain_warnings(args.command)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"campusgps {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"campusgps {args.command}: interrupted; re-run the same command to continue", file=sys.stderr)
        return 130
    except Exception as e:  # anything else is our bug: one line here, the traceback in a log file
        from campusgps.logs import crash_line, log_dirs, write_crash_log

        log = write_crash_log(args.command, e, argv, log_dirs(getattr(args, "out", None), _dataset_arg(args)))
        print(crash_line(args.command, e, log), file=sys.stderr)
        return 1


def _plain_warnings(command: str) -> None:
    """Our own warnings (e.g. unreadable capture times) print as one plain line, not with source lines."""
    import warnings

    default = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None):
        if getattr(category, "__module__", "").startswith("campusgps"):
            return f"campusgps {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


def _dataset_arg(args) -> str | None:
    """The dataset folder a command works on, where its crash log may go (never a folder of photos)."""
    if getattr(args, "dataset", None):
        return args.dataset
    paths = getattr(args, "paths", None) or []
    return paths[-1] if paths and args.command in ("compare", "index") else None


if __name__ == "__main__":
    raise SystemExit(main())
