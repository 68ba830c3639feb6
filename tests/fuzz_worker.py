"""Runs fuzz cases through ``pydamon.cli.main.main`` in this process, under a memory limit and a
per-case time limit, and prints one JSON line per case that went wrong (used by
tests/test_fuzz_inputs.py; run alone: ``python tests/fuzz_worker.py CASES.json``).

A case goes wrong if ``main`` lets an exception out (other than argparse's SystemExit), prints
a traceback, runs past the time limit, or runs out of the memory limit (``MemoryError``).
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import signal
import sys
import traceback

#: Address space a case may add to the worker's (numpy's and the interpreter's own mappings
#: are there already): a count trusted from a file asks for far more.
MEMORY_HEADROOM = 1 << 30


class CaseTimeout(BaseException):
    """A case ran past its time limit (a hang)."""


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _on_alarm(_signum: int, _frame: object) -> None:
    raise CaseTimeout()


def run_case(argv: list[str], time_limit: float) -> tuple[int | None, str | None]:
    """(exit code, what went wrong running ``argv`` or None)."""
    from pydamon.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    rc: int | None = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    except CaseTimeout:
        return None, f"hang: still running after {time_limit} s"
    except MemoryError:
        return None, "memory: over the limit\n" + traceback.format_exc(limit=-6)
    except BaseException:
        return None, "exception:\n" + traceback.format_exc(limit=-6)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if "Traceback" in err.getvalue():
        return rc, "traceback printed:\n" + err.getvalue()[-2000:]
    return rc, None


def main_worker(cases_path: str) -> int:
    with open(cases_path) as f:
        spec = json.load(f)
    import numpy  # noqa: F401  (imported before the limit: its mappings are not the cases')

    import pydamon.cli.main  # noqa: F401

    limit = _vm_size() + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _on_alarm)
    exit_codes: dict[str, int] = {}
    for case in spec["cases"]:
        rc, problem = run_case(case["argv"], spec["time_limit"])
        exit_codes[str(rc)] = exit_codes.get(str(rc), 0) + 1
        if problem is not None:
            print(json.dumps({**case, "problem": problem}), flush=True)
    print(json.dumps({"exit_codes": exit_codes}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main_worker(sys.argv[1]))
