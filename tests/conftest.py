"""Shared test settings: quick scale on the CPU, and a throw-away claims ledger."""

import os

import pytest
import torch

os.environ.setdefault("KDLIB_SCALE", "quick")
os.environ.setdefault("KDLIB_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path, monkeypatch):
    """Claims checked in tests go to a temporary ledger, never the book's."""
    monkeypatch.setenv("KDLIB_LEDGER", str(tmp_path / "claims.json"))


@pytest.fixture(autouse=True, scope="session")
def _deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)
