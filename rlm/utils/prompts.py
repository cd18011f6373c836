"""Compatibility path: ``rlm.utils.prompts`` is ``rlm.core.prompts`` (the same module object).

Code inside ``rlm`` imports ``rlm.core.prompts``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.utils.prompts.…")`` all keep working.
"""

import sys

from rlm.core import prompts as _module
from rlm.core.prompts import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
