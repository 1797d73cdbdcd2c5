import os
from pathlib import Path

import pytest


@pytest.fixture
def data_root():
    """The shared real data (../shared/data), from MINICAPS_DATA; skip only when unset."""
    root = os.environ.get("MINICAPS_DATA")
    if not root:
        pytest.skip("MINICAPS_DATA is not set")
    return Path(root)
