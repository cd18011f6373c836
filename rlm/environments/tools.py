"""Compatibility path: ``rlm.environments.tools`` is ``rlm.base.tools`` (the same module object).

Code inside ``rlm`` imports ``rlm.base.tools``; this path stays for code written against
``rlms`` and earlier rlmx releases, so that imports, ``isinstance`` checks, pickles and
``unittest.mock.patch("rlm.environments.tools.…")`` all keep working.
"""

import sys

from rlm.base import tools as _module
from rlm.base.tools import *  # noqa: F403  (what type checkers and readers see)

sys.modules[__name__] = _module
