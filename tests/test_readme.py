"""The README's Python API snippets run as written (doctests, from the repository root)."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run_as_written(monkeypatch):
    if not README.is_file():
        pytest.skip(f"{README} is absent (an installed package without its repository)")
    monkeypatch.chdir(README.parent)  # the snippets read examples/predictions.csv
    text = README.read_text()
    assert text.count(">>> ") > 20, "the README lost its Python API section"
    parser = doctest.DocTestParser()
    test = parser.get_doctest(text, {}, "README.md", str(README), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda s: failures.append(s))
    assert runner.failures == 0, "".join(failures)


failures: list[str] = []
os.environ.setdefault("PYTHONHASHSEED", "0")
