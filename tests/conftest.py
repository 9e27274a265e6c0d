"""Test-wide guards: everything runs offline, and any attempt to open a network connection fails the test."""
import os
import socket

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["DIFFUSERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail loudly if code under test tries to reach the network (weights must come from local files)."""

    def refuse(self, address, *args, **kwargs):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
            return real_connect(self, address, *args, **kwargs)
        raise AssertionError(f"test tried to open a network connection to {address!r}")

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def one_thread():
    """Real CPU runs measured against the memory estimator: one thread, so a busy machine's oversubscribed cores
    do not slow them down by orders of magnitude (and kernels pick the same paths every run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
