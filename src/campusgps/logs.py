"""No traceback reaches a user: steps name what was being done, crashes go to a log file.

Commands wrap their stages in :func:`step`::

    with step("load dataset", input=args.dataset):
        ds = Dataset.open(args.dataset)

When an unexpected exception escapes, the innermost step (and its input) stays attached to it, and the CLI
(:mod:`campusgps.cli.main`) prints one line naming command, step and input, with the path of the log file
that :func:`write_crash_log` wrote (full traceback, command line, versions).
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

_STACK: list[tuple[str, str | None]] = []
_ATTR = "_campusgps_step"


@contextmanager
def step(name: str, input=None):
    """Mark a stage of a command; an exception raised inside remembers the innermost stage and its input."""
    _STACK.append((name, None if input is None else str(input)))
    try:
        yield
    except BaseException as e:
        if getattr(e, _ATTR, None) is None:
            try:
                setattr(e, _ATTR, _STACK[-1])
            except Exception:  # exceptions with __slots__ cannot carry it
                pass
        raise
    finally:
        _STACK.pop()


def step_of(exc: BaseException) -> tuple[str, str | None] | None:
    """(step, input) where ``exc`` was raised, if it was raised inside a :func:`step`."""
    return getattr(exc, _ATTR, None)


def _writable_dir(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def log_dirs(out=None, dataset=None) -> list[Path]:
    """Where a crash log may go, best first: ``OUT/.logs`` (the folder of OUT when it is a file name),
    ``DATASET/.logs``, ``~/.cache/campusgps/logs``, the working directory."""
    cands: list[Path] = []
    if out:
        o = Path(out)
        cands.append(o / ".logs" if o.is_dir() or not o.suffix else o.parent / ".logs")
    if dataset and Path(dataset).is_dir():
        cands.append(Path(dataset) / ".logs")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cands += [cache / "campusgps" / "logs", Path.cwd()]
    return cands


def write_crash_log(command: str, exc: BaseException, argv: list[str] | None = None,
                    dirs: list[Path] | None = None) -> Path | None:
    """Write the full traceback and context of ``exc`` to the first writable folder of ``dirs``."""
    from campusgps import __version__

    where = step_of(exc)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    text = "\n".join([
        f"campusgps {__version__} {command}: internal error at {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"command line: {' '.join(['campusgps', *(argv if argv is not None else sys.argv[1:])])}",
        f"step: {where[0] if where else '-'}",
        f"input: {where[1] if where and where[1] else '-'}",
        f"python {platform.python_version()} on {platform.platform()}",
        "",
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    ])
    for d in dirs if dirs is not None else log_dirs():
        if not _writable_dir(d):
            continue
        path = d / f"campusgps-{command}-{stamp}-{os.getpid()}.log"
        try:
            path.write_text(text)
            return path.resolve()
        except OSError:
            continue
    return None


def crash_line(command: str, exc: BaseException, log: Path | None) -> str:
    """The one line a user sees for an unexpected error."""
    where = step_of(exc)
    msg = " ".join(str(exc).split()) or type(exc).__name__
    msg = msg if len(msg) <= 200 else msg[:197] + "..."
    place = f" while {where[0]}" if where else ""
    place += f" ({where[1]})" if where and where[1] else ""
    tail = f"; full traceback in {log}" if log else "; no log file could be written"
    return (f"campusgps {command}: internal error{place}: {type(exc).__name__}: {msg}{tail} "
            f"(please report it with that file)")


__all__ = ["step", "step_of", "write_crash_log", "crash_line", "log_dirs"]
