"""No one else gets the key or a say, in an in-process shell against simulators on loopback: a .env above the
project root is not read (and the line says so), a .env address with a key from elsewhere is refused until
trusted, `${...}` is not expanded, the key never leaves but in the Authorization header (not in a prompt, a path
or a body), interpolation never reaches the environment, hostile text and a bad port are one-line errors with
nothing sent. The webhook key in a real kernel: tests/test_kernel_service.py."""
# ruff: noqa: F811 - `ip`, the shell fixture of test_magics, is imported and used as a parameter
from __future__ import annotations

import secrets

import pytest
from conftest import KEY
from test_magics import assert_short_error, ip, run  # noqa: F401

from imagen4_jupyter import GenerationRequest, Imagen4Client
from imagen4_jupyter.api import credentials as C
from imagen4_jupyter.api import errors as E
from imagen4_jupyter.simulator import Simulator


@pytest.fixture(autouse=True)
def _clean_trust(monkeypatch):
    monkeypatch.delenv(C.ENV_TRUSTED, raising=False)
    C.forget_trusted_hosts()
    C.forget_entered_key()
    yield
    C.forget_trusted_hosts()
    C.forget_entered_key()


@pytest.fixture
def other():
    """Another server on loopback that would happily take the key (it accepts the test key)."""
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.01), generation_time=(0.03, 0.05),
                   image_scale=0.0625) as s:
        yield s


@pytest.fixture
def project(tmp_path, monkeypatch):
    """tmp_path/outer/proj (a project: it holds .git) as the working directory; the address only from files."""
    proj = tmp_path / "outer" / "proj"
    (proj / ".git").mkdir(parents=True)
    monkeypatch.chdir(proj)
    monkeypatch.delenv("APIKLEY_BASE_URL")
    return proj


def created(sim) -> int:
    return sim.count("createTask")


def shown(r) -> str:
    """What a cell showed: its printed text and its outputs' plain text (`views.say` displays in rich mode)."""
    return r.text + "".join(o["data"].get("text/plain", "") for o in r.outputs)


# -- where the address comes from ----------------------------------------------------------------------------
def test_a_dotenv_above_the_project_root_is_not_used_and_is_named(ip, sim, project, monkeypatch):
    monkeypatch.setenv("APIKLEY_BASE_URL", sim.url)  # the user's own address
    parent = project.parent / ".env"
    parent.write_text("APIKLEY_BASE_URL=https://collector.example/x\nAPIKLEY_API_KEY=theirs-0123456789\n")
    info = run(ip, "%imagen4 info").cap.stdout
    flat = " ".join(info.split())  # one part a line when long (broken between words only)
    assert f"Apikley at {sim.url} (from APIKLEY_BASE_URL)" in flat and "collector.example" not in flat
    assert f"ignored {parent}: above the project root" in flat
    monkeypatch.delenv("APIKLEY_BASE_URL")  # even with no address of the user's own: the default, not theirs
    assert "Apikley at https://api.apikley.ru" in run(ip, "%imagen4 info").cap.stdout
    assert ip.imagen4.session.credentials().base_url is None


def test_a_dotenv_address_in_the_project_with_the_key_from_the_environment_is_refused_until_trusted(
        ip, sim, other, project):
    (project / ".env").write_text(f"APIKLEY_BASE_URL={other.url}\n")
    info = " ".join(run(ip, "%imagen4 info").cap.stdout.split())  # the line's words, however it was broken
    assert f"Apikley at {other.url} (from .env at {project / '.env'})" in " ".join(info.split())
    assert "not trusted yet: %imagen4 trust 127.0.0.1" in info
    n = created(sim)
    r = run(ip, "%%imagen4 --wait\na fox")
    assert_short_error(r, "127.0.0.1", f".env at {project / '.env'}", "APIKLEY_API_KEY",
                       "%imagen4 trust 127.0.0.1", "APIKLEY_TRUSTED_HOSTS")
    assert other.count() == 0 and created(sim) == n  # nothing sent anywhere
    said = shown(run(ip, "%imagen4 trust 127.0.0.1"))
    assert "127.0.0.1 is trusted in this kernel" in said and KEY not in said
    r = run(ip, "%%imagen4 --wait\na fox")
    assert r.result.error_in_exec is None, r.text
    assert created(other) == 1 and created(sim) == n


def test_the_trusted_hosts_variable_trusts_for_every_kernel(ip, other, project, monkeypatch):
    (project / ".env").write_text(f"APIKLEY_BASE_URL={other.url}\n")
    monkeypatch.setenv(C.ENV_TRUSTED, f"example.org, 127.0.0.1:{other.url.rsplit(':', 1)[1]}")
    r = run(ip, "%%imagen4 --wait\na fox")
    assert r.result.error_in_exec is None, r.text
    assert created(other) == 1


def test_a_dollar_brace_in_a_dotenv_is_not_expanded_and_the_key_is_in_no_path(ip, other, project, monkeypatch):
    monkeypatch.setenv(C.ENV_TRUSTED, "127.0.0.1")
    (project / ".env").write_text(f"APIKLEY_BASE_URL={other.url}/x/${{APIKLEY_API_KEY}}\n")
    info = run(ip, "%imagen4 info").cap.stdout
    assert "/x/${APIKLEY_API_KEY}" in info and KEY not in info
    run(ip, "%%imagen4 --wait\na fox")  # fails (no API there), but what was sent is what matters
    assert other.requests, "the request should have reached the address as written"
    for req in other.requests:
        assert KEY not in req.path + str(req.query) + (req.body or b"").decode()
        assert "APIKLEY_API_KEY" in req.path  # the placeholder as written, not the key
        assert req.headers.get("Authorization") == f"Bearer {KEY}"


def test_a_key_written_into_the_address_is_refused_before_sending(ip, sim, other, project, monkeypatch):
    monkeypatch.setenv(C.ENV_TRUSTED, "127.0.0.1")
    dotenv = project / ".env"
    dotenv.write_text(f"APIKLEY_BASE_URL={other.url}/x/{KEY}\n")
    try:
        assert KEY not in run(ip, "%imagen4 info").cap.stdout  # shown as <key>
        r = run(ip, "%%imagen4 --wait\na fox")
        assert_short_error(r, "contains your API key")
        assert other.count() == 0
    finally:
        dotenv.unlink()  # the run's artifacts hold no key (tests/test_zz_secrets.py)


def test_the_client_never_puts_its_key_in_a_path_or_body(sim):
    key = "fresh-key-" + secrets.token_hex(8)  # a key this process has not seen before
    sim.api_keys = (*sim.api_keys, key)
    with Imagen4Client(api_key=key, base_url=f"{sim.url}/p/{key}", limits=None) as client:
        n = sim.count()
        with pytest.raises(E.ConfigurationError, match="only ever goes in the Authorization header"):
            client.credits()
        assert sim.count() == n
    with Imagen4Client(api_key=key, base_url=sim.url) as client:
        with pytest.raises(E.InvalidRequestError, match="prompt contains your API or webhook key"):
            client.submit(f"a fox named {key}")
        with pytest.raises(E.ConfigurationError):  # the body's check, below the request's own
            client.fresh_link(f"https://files.example/{key}.png")
        assert sim.count() == n


# -- interpolation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placeholder", ["{os.environ}", "{os.environ['APIKLEY_API_KEY']}", "{environ}",
                                         "{env_copy}", "{holder.key}"])
def test_interpolation_never_reaches_the_environment_or_the_key(ip, sim, placeholder):
    import os
    import types

    ip.user_ns.update(os=os, environ=os.environ, env_copy=dict(os.environ),
                      holder=types.SimpleNamespace(key=os.environ["APIKLEY_API_KEY"]))
    n = created(sim)
    try:
        r = run(ip, f"%%imagen4 --wait\na portrait of {placeholder}")
        assert_short_error(r, placeholder, "reaches into the environment or your keys")
        assert KEY not in r.text
    finally:
        for name in ("os", "environ", "env_copy", "holder"):
            ip.user_ns.pop(name, None)
    assert created(sim) == n
    history = ip.imagen4.session.history.path
    assert not history.exists() or KEY not in history.read_text()


def test_a_key_typed_into_the_prompt_is_refused(ip, sim):
    n = created(sim)
    r = run(ip, f"%%imagen4 --wait\nmy key is {KEY}")
    assert_short_error(r, "prompt contains your API or webhook key")
    assert KEY not in r.text and created(sim) == n


# -- hostile text -----------------------------------------------------------------------------------------------
def test_a_lone_surrogate_is_one_line_naming_the_field_and_nothing_is_sent(ip, sim):
    ip.user_ns["odd"] = "a fox \ud800 in snow"
    n = created(sim)
    try:
        r = run(ip, "%%imagen4 --wait\n{odd}")
        assert_short_error(r, "prompt", "cannot be sent")
        r = run(ip, "%%imagen4 --wait\na fox\n---\n{odd}")
        assert_short_error(r, "negative prompt", "cannot be sent")
    finally:
        ip.user_ns.pop("odd", None)
    assert created(sim) == n
    for field, kwargs in (("prompt", {"prompt": "\udcff"}), ("seed", {"prompt": "ok", "seed": "\ud83d"})):
        with pytest.raises(E.InvalidRequestError, match=f"The {field} contains a character that cannot be sent"):
            GenerationRequest.create(**kwargs)


def test_a_port_out_of_range_is_a_configuration_error_not_a_retry(ip, sim, monkeypatch):
    with pytest.raises(E.ConfigurationError, match="not a port"):
        Imagen4Client(api_key=KEY, base_url="http://127.0.0.1:99999")
    monkeypatch.setenv("APIKLEY_BASE_URL", "http://127.0.0.1:99999")
    r = run(ip, "%%imagen4 --wait\na fox")
    assert_short_error(r, "Configuration problem", "99999", "not a port")
    assert "retried" not in r.text
