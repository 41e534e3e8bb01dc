"""A request to the dashboard with a wrong token is an audit entry."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")


def test_a_wrong_dashboard_token_is_audited(tmp_path):
    from fastapi.testclient import TestClient

    from lmdev.secure import audit
    from lmdev.ui.server import create_app

    home = tmp_path / "store"
    home.mkdir()
    app = create_app(home, token="right-token", doctor=lambda: {})
    with TestClient(app, base_url="http://127.0.0.1:8080") as client:
        assert client.get("/api/runs").status_code == 401                        # no token: not an attack
        assert client.get("/api/runs?token=wrong-guess").status_code == 401
    events = [e for e in audit.entries(home) if e["event"] == "dashboard-token-failure"]
    assert len(events) == 1 and events[0]["path"] == "/api/runs"
    assert audit.verify(home).ok
