"""The pieces of ``benchmarks/run.py`` (rlmx vs rlms 0.1.3), one responsibility each.

- ``config``: paths, scenario lists and groups;
- ``venvs``: the rlms and rlmx interpreters (venvs under the cache dir, or none);
- ``runner``: the shared harness, one scenario run per subprocess, interleaving;
- ``targets``: the issue targets and physical floors, one ``Target`` per table row;
- ``table``: from aggregated samples to table rows (metrics, floors, pass/miss);
- ``report``: the header lines and the plain-text or Markdown table;
- ``cli``: argument parsing and ``main``.
"""
