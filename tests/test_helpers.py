"""tests/helpers.py's rule: what is missing skips a test locally and fails it under CI."""
from __future__ import annotations

import pytest

from tests.helpers import missing, needs


def test_missing_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no weights"):
        missing("no weights")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI nothing may be missing: no weights"):
        missing("no weights")


def test_needs_runs_the_test_under_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert needs("no file").args == (True,) and needs(None).args == (False,)
    monkeypatch.setenv("CI", "1")
    assert needs("no file").args == (False,)  # not skipped: it fails on what is missing
