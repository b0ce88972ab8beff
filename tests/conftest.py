"""Shared fixtures: lazily built test videos and the ``cuda`` marker."""

from __future__ import annotations

import pytest

from assets import AssetStore


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> AssetStore:
    """Test files by name (see ``tests/assets.py``), built on first access."""
    return AssetStore(tmp_path_factory.mktemp("assets"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``cuda`` when torch sees no CUDA device."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in cuda_items:
        item.add_marker(skip)
