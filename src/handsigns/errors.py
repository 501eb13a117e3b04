"""User-facing errors: one clear line, a non-zero exit, no traceback.

Anything a user can cause (bad params, bad data, an unreachable source) raises :class:`UserError`.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""


def run_main(main: Callable[[], object]) -> NoReturn:
    """Run ``main`` and turn a :class:`UserError` into one ``error: ...`` line and exit status 2. Ends the
    process: for a program's entry point only."""
    try:
        result = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except BrokenPipeError:  # `handsigns predict ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except KeyboardInterrupt as exc:  # Ctrl-C; a stage may say where it stopped and how to go on
        print(f"error: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        sys.exit(130)
    finally:
        # The process ends here. Frozen, the objects torch and its compiler front end made escape the collections
        # the interpreter's shutdown would run over them: 0.5-1.5 s of each stage that loads torch (docs/speed.md).
        gc.freeze()
    sys.exit(result if isinstance(result, int) else 0)
