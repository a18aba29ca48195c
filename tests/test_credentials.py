"""Key and base URL: environment, then the nearest .env upward, then a key entered in memory."""
from __future__ import annotations

import pytest

from imagen4_jupyter.api import credentials as C


@pytest.fixture(autouse=True)
def _no_entered_key():
    C.forget_entered_key()
    yield
    C.forget_entered_key()


def test_the_environment_comes_first(tmp_path):
    (tmp_path / ".env").write_text("APIKLEY_API_KEY=from-dotenv\nAPIKLEY_BASE_URL=http://127.0.0.1:9\n")
    C.enter_key("typed")
    got = C.resolve(tmp_path, {"APIKLEY_API_KEY": "from-env"})
    assert (got.key, got.key_source) == ("from-env", "APIKLEY_API_KEY")
    assert (got.base_url, got.url_source) == ("http://127.0.0.1:9", f".env at {tmp_path / '.env'}")


def test_the_nearest_dotenv_upward_then_the_entered_key(tmp_path):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / ".env").write_text("APIKLEY_API_KEY=outer\n")
    assert C.resolve(deep, {}).key == "outer"
    (tmp_path / "a" / ".env").write_text("# nearer, but no key in it\nOTHER=1\n")
    C.enter_key("typed-key")
    got = C.resolve(deep, {})
    assert (got.key, got.key_source) == ("typed-key", "%imagen4 key")
    C.forget_entered_key()
    assert not C.resolve(deep, {}).has_key


def test_the_key_never_shows(tmp_path):
    C.enter_key("sk-secret-123456")
    got = C.resolve(tmp_path, {})
    assert "sk-secret" not in repr(got) and "sk-secret" not in got.describe_key()
    assert got.describe_key() == "key set (from %imagen4 key)"
    assert C.resolve(None, {"APIKLEY_API_KEY": "  "}).key == "sk-secret-123456"  # blank env is no key


def test_the_no_key_message_names_every_way():
    for way in ("APIKLEY_API_KEY", ".env", "%imagen4 key", "%imagen4 simulator"):
        assert way in C.NO_KEY_HELP
