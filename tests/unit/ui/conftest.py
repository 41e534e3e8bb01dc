import pytest

pytest.importorskip("fastapi", reason="the dashboard needs fastapi (pip install 'lmdev[ui]')")
from fastapi.testclient import TestClient

from lmdev.ui.server import create_app
from tests.unit.ui.helpers import make_store

BASE = "http://127.0.0.1:6006"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    home = tmp_path_factory.mktemp("uistore") / ".lmdev"
    ids = make_store(home)
    return home, ids


@pytest.fixture
def client(prepared):
    home, _ = prepared
    app = create_app(home, doctor=lambda: {"summary": {"status": "ok"}, "findings": [], "facts": {}})
    with TestClient(app, base_url=BASE) as c:
        yield c


@pytest.fixture
def ids(prepared):
    return prepared[1]
