"""Compatibility path: ``rlm.sessions.checkpoint`` is ``rlm.base.checkpoint`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.checkpoint``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.sessions.checkpoint.…")`` all keep working.
"""

import sys

from rlm.base import checkpoint as _module
from rlm.base.checkpoint import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
