"""Compatibility path: ``rlm.core.events`` is ``rlm.base.events`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.events``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.core.events.…")`` all keep working.
"""

import sys

from rlm.base import events as _module
from rlm.base.events import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
