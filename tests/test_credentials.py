"""Key and base URL: environment, then the nearest .env up to the project root (never above home, no ${...}
expansion), then a key entered in memory; a .env address with a key from elsewhere needs the host trusted."""
from __future__ import annotations

import pytest

from imagen4_jupyter.api import credentials as C


@pytest.fixture(autouse=True)
def _no_entered_key():
    C.forget_entered_key()
    C.forget_trusted_hosts()
    yield
    C.forget_entered_key()
    C.forget_trusted_hosts()


def test_the_environment_comes_first(tmp_path):
    (tmp_path / ".env").write_text("APIKLEY_API_KEY=from-dotenv\nAPIKLEY_BASE_URL=http://127.0.0.1:9\n")
    C.enter_key("typed")
    got = C.resolve(tmp_path, {"APIKLEY_API_KEY": "from-env"})
    assert (got.key, got.key_source) == ("from-env", "APIKLEY_API_KEY")
    assert (got.base_url, got.url_source) == ("http://127.0.0.1:9", f".env at {tmp_path / '.env'}")


def test_the_nearest_dotenv_upward_then_the_entered_key(tmp_path):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("")  # the project root: .env files are read up to here
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


def test_a_dotenv_above_the_project_root_is_not_read_and_is_named(tmp_path):
    project = tmp_path / "project"
    (project / "nb").mkdir(parents=True)
    (project / ".git").mkdir()
    (tmp_path / ".env").write_text("APIKLEY_BASE_URL=https://collector.example\nAPIKLEY_API_KEY=theirs-123456\n")
    got = C.resolve(project / "nb", {"APIKLEY_API_KEY": "mine-abcdefgh"})
    assert got.base_url is None and got.key_source == "APIKLEY_API_KEY"
    assert got.ignored == (str(tmp_path / ".env"),)
    (project / ".env").write_text("APIKLEY_BASE_URL=http://127.0.0.1:9\n")  # inside the project: read
    assert C.resolve(project / "nb", {}).base_url == "http://127.0.0.1:9"


def test_without_a_project_root_only_the_notebooks_folder_outside_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    nb = tmp_path / "elsewhere" / "nb"
    nb.mkdir(parents=True)
    (tmp_path / "elsewhere" / ".env").write_text("APIKLEY_API_KEY=up-one-123\n")
    assert not C.resolve(nb, {}).has_key and C.resolve(nb, {}).ignored
    inside = tmp_path / "home" / "work" / "nb"
    inside.mkdir(parents=True)
    (tmp_path / "home" / ".env").write_text("APIKLEY_API_KEY=at-home-123\n")  # home itself is the limit
    assert C.resolve(inside, {}).key == "at-home-123"


def test_dotenv_values_are_not_expanded(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".env").write_text("APIKLEY_BASE_URL=http://127.0.0.1:9/x/${APIKLEY_API_KEY}\n")
    got = C.resolve(tmp_path, {"APIKLEY_API_KEY": "secret-key-987654"})
    assert got.base_url == "http://127.0.0.1:9/x/${APIKLEY_API_KEY}"


def test_a_dotenv_address_with_a_key_from_elsewhere_needs_trust(tmp_path, monkeypatch):
    monkeypatch.delenv(C.ENV_TRUSTED, raising=False)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".env").write_text("APIKLEY_BASE_URL=https://collector.example/api\n")
    got = C.resolve(tmp_path, {"APIKLEY_API_KEY": "mine-abcdefgh"})
    reason = C.untrusted_reason(got, {})
    assert reason is not None and "\n" not in reason
    for part in ("collector.example", f".env at {tmp_path / '.env'}", "%imagen4 trust collector.example",
                 "APIKLEY_TRUSTED_HOSTS"):
        assert part in reason
    with pytest.raises(C.E.ConfigurationError):
        C.checked_target(got, {})
    assert C.untrusted_reason(got, {C.ENV_TRUSTED: "other.example, collector.example"}) is None
    C.trust_host("collector.example")
    assert C.untrusted_reason(got, {}) is None
    assert C.checked_target(got, {}) == ("mine-abcdefgh", "https://collector.example/api")


def test_key_and_address_from_one_dotenv_or_the_default_host_need_no_trust(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".env").write_text("APIKLEY_API_KEY=same-file-123\nAPIKLEY_BASE_URL=https://other.example\n")
    assert C.untrusted_reason(C.resolve(tmp_path, {}), {}) is None  # their key, their server
    (tmp_path / ".env").write_text("APIKLEY_BASE_URL=https://api.apikley.ru\n")
    assert C.untrusted_reason(C.resolve(tmp_path, {"APIKLEY_API_KEY": "k" * 12}), {}) is None
    # the environment's address is the user's own
    got = C.resolve(tmp_path, {"APIKLEY_API_KEY": "k" * 12, "APIKLEY_BASE_URL": "https://mine.example"})
    assert C.untrusted_reason(got, {}) is None


def test_a_port_out_of_range_is_a_configuration_error():
    for url in ("https://api.example.com:99999", "http://127.0.0.1:65536/x"):
        with pytest.raises(C.E.ConfigurationError, match="not a port"):
            C.check_base_url(url)


def test_trusted_hosts_compare_by_host_or_host_and_port(monkeypatch):
    monkeypatch.delenv(C.ENV_TRUSTED, raising=False)
    assert C.is_trusted("https://api.apikley.ru/x", {})  # the default host needs no trust
    assert not C.is_trusted("http://[::1]:8080", {})
    assert C.trust_host("[::1]:8080") == "::1:8080" and C.is_trusted("http://[::1]:8080/api", {})
    assert not C.is_trusted("http://[::1]:9090", {})  # another port of the same host
    assert C.trust_host("HTTPS://Mirror.Example/") == "mirror.example"
    assert C.is_trusted("https://mirror.example:8443", {})  # a host trusted without a port: any port
    with pytest.raises(C.E.ConfigurationError):
        C.trust_host("  ")
