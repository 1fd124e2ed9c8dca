"""The suite's own habits: tests import helpers.py, not conftest."""

import re

from helpers import TESTS


def test_no_test_imports_conftest():
    """Helpers live in helpers.py; conftest.py holds fixtures, which pytest hands to tests by name."""
    importing = [p.name for p in TESTS.glob("*.py") if re.search(r"^\s*(from|import) conftest\b", p.read_text(), re.M)]
    assert importing == [], f"{importing} import conftest: import from helpers instead"
