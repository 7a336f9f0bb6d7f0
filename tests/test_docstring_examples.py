"""The Examples sections of mirflow's docstrings run (numpydoc, doctest): an example that no
longer does what it shows fails here.

Run module by module with the standard library's :mod:`doctest` rather than pytest's
``--doctest-modules``, which would import every file under ``tests/`` as well, including
``mirflow_test_plugins.py``, whose extractors must only be registered where a test asks for them.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pkgutil

import pytest

import mirflow

MODULES = sorted(m.name for m in pkgutil.walk_packages(mirflow.__path__, "mirflow.")
                 if not m.name.endswith("__main__"))


def test_the_examples_are_found():
    """The walk reaches the modules whose examples it must run (a broken walk would pass every test)."""
    assert {"mirflow.extractors._octave", "mirflow.catalog.layout", "mirflow.pipeline.config"} <= set(MODULES)
    examples = sum(len(t.examples) for name in MODULES
                   for t in doctest.DocTestFinder().find(importlib.import_module(name)))
    assert examples >= 50


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = io.StringIO()
    for test in doctest.DocTestFinder().find(module):
        runner.run(test, out=out.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, out.getvalue()
