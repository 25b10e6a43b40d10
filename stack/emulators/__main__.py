"""``python3 -m stack.emulators``: does this machine have what the local stack needs? (exit status 1 if not)

Standard library only: ``make run``, ``make test`` and ``.ci/run`` run it with the system Python before
installing anything, so a machine without Java or the emulator binaries fails at once, saying what is missing.
"""

import sys

from stack.emulators.prereqs import check_machine

problems = check_machine()
if problems:
    print("supportflow: this machine lacks prerequisites of the local stack:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    sys.exit(1)
