"""Compatibility path: ``rlm.core.types`` is ``rlm.base.types`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.types``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.core.types.…")`` all keep working.
"""

import sys

from rlm.base import types as _module
from rlm.base.types import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
