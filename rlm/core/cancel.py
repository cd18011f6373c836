"""Compatibility path: ``rlm.core.cancel`` is ``rlm.base.cancel`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.cancel``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.core.cancel.…")`` all keep working.
"""

import sys

from rlm.base import cancel as _module
from rlm.base.cancel import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
