"""What the tests that start a pytest process and interrupt it share.

:func:`interruptible` (a ``preexec_fn``) gives the child SIGINT's default action: a shell runs
a background job (``cmd &``, and so a CI script started that way) with SIGINT ignored, every
child inherits that, and Python then installs no KeyboardInterrupt handler, so a test's Ctrl-C
would never arrive.
"""

from __future__ import annotations

import signal


def interruptible() -> None:
    """In the child: SIGINT as a terminal sends it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
