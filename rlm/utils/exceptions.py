"""Compatibility path: ``rlm.utils.exceptions`` is ``rlm.base.errors`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.errors``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.utils.exceptions.…")`` all keep working.
"""

import sys

from rlm.base import errors as _module
from rlm.base.errors import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
