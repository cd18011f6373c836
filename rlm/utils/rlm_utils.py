"""Compatibility path: ``rlm.utils.rlm_utils`` is ``rlm.base.redact`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.redact``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.utils.rlm_utils.…")`` all keep working.
"""

import sys

from rlm.base import redact as _module
from rlm.base.redact import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
