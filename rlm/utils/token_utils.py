"""Compatibility path: ``rlm.utils.token_utils`` is ``rlm.clients.tokens`` (the same module object).

Code inside ``rlm`` imports ``rlm.clients.tokens``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.utils.token_utils.…")`` all keep working.
"""

import sys

from rlm.clients import tokens as _module
from rlm.clients.tokens import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
