"""Hypothesis settings of the property suite, and the count of generated cases.

Profiles (choose with $STRATALAB_HYPOTHESIS_PROFILE, default ``ci``):

- ``ci``: ``max_examples`` = $STRATALAB_PROPERTY_EXAMPLES (default 100), no deadline (the device
  is shared; timing is not a property), derandomized (the same cases every run, so CI cannot flake),
  no example database (nothing written into the checkout),
  failures print a ``@reproduce_failure`` blob. About 30 s on 2 cores.
- ``long``: the same with 20x the examples unless $STRATALAB_PROPERTY_EXAMPLES is set; for a
  longer search, e.g. ``STRATALAB_PROPERTY_EXAMPLES=2000 pytest tests/property``.

Each test takes a share of ``max_examples`` (``_support.examples``): cheap array properties the
full budget, CLI / file / clustering properties a fraction. At the end of the run the number of
generated cases is printed: ``hypothesis cases: N``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.property._support import CASES

_base = dict(
    deadline=None,
    derandomize=True,  # the same cases on every run: CI is reproducible (a new search: change the examples count)
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_n = os.environ.get("STRATALAB_PROPERTY_EXAMPLES")
settings.register_profile("ci", max_examples=int(_n) if _n else 100, **_base)
settings.register_profile("long", max_examples=int(_n) if _n else 2000, **_base)
settings.load_profile(os.environ.get("STRATALAB_HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest hook signature
    total = sum(CASES.values())
    if total:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(CASES.items()))
        terminalreporter.write_line(f"hypothesis cases: {total} ({parts})")
