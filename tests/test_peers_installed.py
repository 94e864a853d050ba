"""In CI the peer library must be present, so that the torchjd comparisons never skip silently."""

from __future__ import annotations

import importlib.util
import os

import pytest


@pytest.mark.skipif(not os.environ.get("CI"), reason="only enforced in CI (`make test` installs torchjd there)")
def test_torchjd_is_installed_in_ci() -> None:
    assert importlib.util.find_spec("torchjd") is not None, "pip install 'torchjd[full]==0.18.0' (the dev extra)"
