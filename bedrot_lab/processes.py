"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes  # here, not in the child: an import after a fork can wait on a lock no thread will free
import signal

#: prctl(2)'s option for the signal a process gets when its parent dies
PR_SET_PDEATHSIG = 1


def end_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Have Linux send this process ``signum`` when its parent dies, even by SIGKILL
    (``PR_SET_PDEATHSIG``). Call it in the child (a ``preexec_fn``, or after a fork). False
    where it cannot be set (not Linux): there the parent's own stop still reaches the child."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum))
    except (OSError, AttributeError):
        return False
    return True
