"""Compatibility path: ``rlm.utils.parsing`` is ``rlm.core.parsing`` (the same module object).

Code inside ``rlm`` imports ``rlm.core.parsing``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.utils.parsing.…")`` all keep working.
"""

import sys

from rlm.core import parsing as _module
from rlm.core.parsing import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
