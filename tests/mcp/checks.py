"""The tally both Python client tests keep: one line per check, then "N passed, M failed"."""

import sys

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def finish():
    """Prints the tally and exits non-zero if anything failed."""
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
