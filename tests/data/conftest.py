from __future__ import annotations

from pathlib import Path

import pytest
from data_notebooks import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> tuple[Path, Path, dict[str, Path]]:
    """Real notebooks (see notebooks.py): (notebook folder, data folder, name -> path)."""
    return build_corpus(tmp_path_factory.mktemp("nbcorpus"))
