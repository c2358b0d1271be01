"""One-line error reporting shared by the `mofa` sub-commands: bad input never ends in a traceback."""
from __future__ import annotations

import sys

from mofa_tk.errors import MofaError


def one_line(msg) -> str:
    """The message with all whitespace runs (newlines included) collapsed to single spaces."""
    return " ".join(str(msg).split())


def run_reporting_errors(run, *expected) -> int:
    """Call `run()` and return its exit status; on an expected error print ``error: <one line>`` to stderr and
    return 2.

    Expected errors: the exception types in `expected` (a command's own "bad input" type), mofa_tk's
    `MofaError`s (bad model files, bad arguments, no face found, ...) and OSErrors (missing file, permission
    denied, a folder where a file was expected), which are reported with the file name they concern.
    """
    try:
        return run()
    except (MofaError, *expected) as exc:
        return _error(exc)
    except FileNotFoundError as exc:
        what = exc.filename if exc.filename else ""
        msg = exc.strerror if exc.strerror else str(exc)
        return _error(f"{msg}" + (f": {what}" if what and str(what) not in str(msg) else ""))
    except PermissionError as exc:
        return _error(f"permission denied: {exc.filename or exc}")
    except OSError as exc:
        return _error(f"{exc.filename or ''} {exc.strerror or exc}".strip())


def _error(msg) -> int:
    print(f"error: {one_line(msg)}", file=sys.stderr)
    return 2
