"""Compatibility path: ``rlm.core.comms_utils`` is ``rlm.base.wire`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.wire``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.core.comms_utils.…")`` all keep working.
"""

import sys

from rlm.base import wire as _module
from rlm.base.wire import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
