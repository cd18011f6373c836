"""``python -m rlm``: the ``rlm`` command line."""

from rlm.cli import main

raise SystemExit(main())
