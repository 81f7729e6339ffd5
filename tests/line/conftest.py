"""Fixtures shared by the line tests."""

import pytest

from fovea.line.emulator import EmulatorServer


@pytest.fixture
def server():
    """A firmware emulator behind a TCP port (`socket://` URL in server.url), closed after the test."""
    srv = EmulatorServer()
    yield srv
    srv.close()
