import socket

import pytest


def test_network_connections_are_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(AssertionError, match="network connection"):
        s.connect(("93.184.216.34", 80))
    s.close()
