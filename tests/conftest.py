import os
from pathlib import Path

import pytest

from minimind.families.classic import CLASSIC

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ASSETS = SHARED / "minimind-assets"

needs_assets = pytest.mark.skipif(not ASSETS.is_dir(), reason="../shared/minimind-assets is absent")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True, scope="session")
def private_token_cache(tmp_path_factory):
    """Token caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["MINIMIND_CACHE"] = str(tmp_path_factory.mktemp("token-cache"))


@pytest.fixture(scope="session")
def minimind_tokenizer():
    if not ASSETS.is_dir():
        pytest.skip("../shared/minimind-assets is absent")
    from minimind.tokenizer import load_tokenizer

    return load_tokenizer(ASSETS / "tokenizer")


@pytest.fixture(scope="session")
def shipped_tokenizer():
    from minimind.tokenizer import load_tokenizer

    return load_tokenizer(CLASSIC.tokenizer_dir)
