"""The magic's first hour, in an in-process shell against the simulator: models (-m and the model trait), the
key resolved at each use (environment, a .env beside the notebook), %imagen4 simulator / --stop / info, and the
one line %load_ext prints. The same in real kernels: tests/test_kernel_service.py."""
# ruff: noqa: F811 - `ip`, the shell fixture of test_magics, is imported and used as a parameter
from __future__ import annotations

import json
import re

import pytest
from conftest import KEY
from secrets_guard import watch
from test_magics import assert_short_error, creates, ip, run  # noqa: F401

from imagen4_jupyter.api import credentials as C


@pytest.fixture(autouse=True)
def _no_typed_key():
    C.forget_entered_key()
    yield
    C.forget_entered_key()


def events(ip) -> list[dict]:
    return [json.loads(x) for x in ip.imagen4.session.history.path.read_text().splitlines()]


# -- models -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, body", [
    ("-m fast -s 42", {"model": "google/imagen4-fast",
                       "input": {"prompt": "a kite", "aspect_ratio": "16:9", "num_images": "1", "seed": 42}}),
    ("--model ultra -s 42", {"model": "google/imagen4-ultra",
                             "input": {"prompt": "a kite", "aspect_ratio": "1:1", "seed": "42"}}),
    ("-m google/imagen4-ultra -a 9:16", {"model": "google/imagen4-ultra",
                                         "input": {"prompt": "a kite", "aspect_ratio": "9:16"}}),
    ("-m standard -n 2", {"model": "google/imagen4",
                          "input": {"prompt": "a kite", "aspect_ratio": "1:1", "num_images": "2"}}),
    ("-m fast -a 1:1 -n 2", {"model": "google/imagen4-fast",
                             "input": {"prompt": "a kite", "aspect_ratio": "1:1", "num_images": "2"}}),
])
def test_model_flag_sends_that_models_exact_body(ip, sim, flags, body):
    r = run(ip, f"%%imagen4 --wait {flags}\na kite")
    assert r.result.error_in_exec is None, r.text
    assert creates(sim) == [body]
    images = r.images()
    assert len(images) == int(body["input"].get("num_images", "1"))
    for image in images:
        meta = image["metadata"]["imagen4"]
        assert meta["model"] == body["model"] and meta["request"]["model"] == body["model"]
        assert "simulated" not in meta  # the fixture's simulator stands for the real service here


def test_model_and_ratio_traits_are_defaults_a_flag_overrides(ip, sim):
    assert ip.imagen4.model == "standard" and ip.imagen4.aspect_ratio == ""
    run(ip, "%config Imagen4Magics.model = 'google/imagen4-fast'")
    assert ip.imagen4.model == "fast"  # full names are accepted and kept short
    run(ip, "%%imagen4 --wait\nfirst", "%%imagen4 --wait -m standard\nsecond")
    run(ip, "%config Imagen4Magics.aspect_ratio = '4:3'", "%%imagen4 --wait\nthird",
        "%%imagen4 --wait -a 3:4\nfourth")
    got = [(b["model"], b["input"]["aspect_ratio"]) for b in creates(sim)]
    assert got == [("google/imagen4-fast", "16:9"), ("google/imagen4", "1:1"), ("google/imagen4-fast", "4:3"),
                   ("google/imagen4-fast", "3:4")]
    run(ip, "%config Imagen4Magics.aspect_ratio = ''")
    assert ip.imagen4.aspect_ratio == ""


@pytest.mark.parametrize("setup, cell, needle", [
    ("", "%%imagen4 -m ultra -n 2\nx", "Imagen 4 Ultra (ultra) makes one image per task"),
    ("%config Imagen4Magics.num_images = 2", "%%imagen4 -m ultra\nx", "cannot make 2"),
    ("", "%%imagen4 -m fast -s blue\nx", "Imagen 4 Fast (fast) takes a whole-number seed"),
    ("%config Imagen4Magics.model = 'fast'", "%%imagen4 -s 1.5\nx", "takes a whole-number seed"),
    ("", "%%imagen4 -m mega\nx", "Unknown model 'mega'; use one of standard (google/imagen4)"),
])
def test_model_validation_is_one_line_and_sends_nothing(ip, sim, setup, cell, needle):
    if setup:
        assert run(ip, setup).result.error_in_exec is None
    r = run(ip, cell)
    assert_short_error(r, needle)
    assert len(r.text.strip().splitlines()) == 1 and sim.count() == 0


def test_batch_model_flag_is_one_definition_with_the_cells(ip):
    from imagen4_jupyter.notebook.magics import CELL_FLAGS
    from imagen4_jupyter.notebook.subcommands import commands

    (cell,) = [a for a in CELL_FLAGS.actions if "--model" in a.option_strings]
    (batch,) = [a for a in commands()[1]["batch"].actions if "--model" in a.option_strings]
    assert cell.option_strings == batch.option_strings == ["-m", "--model"] and cell.metavar == batch.metavar


def test_batch_model_flag_reaches_every_item_and_is_validated_first(ip, sim):
    ip.user_ns["kites"] = ["red kite", "blue kite"]
    assert_short_error(run(ip, "%imagen4 batch kites -m ultra -n 2"), "makes one image per task")
    assert sim.count() == 0
    r = run(ip, "%imagen4 batch kites -m fast --wait")
    assert r.result.error_in_exec is None, r.text
    assert sorted((b["model"], b["input"]["aspect_ratio"]) for b in creates(sim)) == [
        ("google/imagen4-fast", "16:9")] * 2
    ip.user_ns.pop("kites")


# -- the key, resolved at each use -------------------------------------------------------------------------
def test_no_key_then_a_key_in_the_environment_works_on_the_next_cell(ip, sim, monkeypatch):
    monkeypatch.delenv("APIKLEY_API_KEY")
    r = run(ip, "%%imagen4 --wait\nno key yet")
    assert_short_error(r, "No API key", "APIKLEY_API_KEY", ".env", "%imagen4 key", "%imagen4 simulator")
    assert r.result.error_in_exec.error.__class__.__name__ == "ConfigurationError"
    assert sim.count() == 0
    info = run(ip, "%imagen4 info").cap.stdout
    assert "no key" in info
    before = ip.imagen4.session.client
    monkeypatch.setenv("APIKLEY_API_KEY", KEY)  # what os.environ[...] = ... in a cell does
    r = run(ip, "%%imagen4 --wait\nkey now")
    assert r.result.error_in_exec is None, r.text
    assert len(r.images()) == 1 and sim.count("createTask") == 1
    assert ip.imagen4.session.client is not before  # rebuilt for the new key, same session and history
    assert "key set (from APIKLEY_API_KEY)" in run(ip, "%imagen4 info").cap.stdout


def test_a_dotenv_beside_the_notebook_gives_the_key(ip, sim, monkeypatch, tmp_path):
    monkeypatch.delenv("APIKLEY_API_KEY")
    dotenv_key = watch("dotenv-only-key-7d21c9")
    sim.api_keys = (KEY, dotenv_key)
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"APIKLEY_API_KEY={dotenv_key}\n")
    try:
        r = run(ip, "%%imagen4 --wait -s 5\nfrom dotenv")
        assert r.result.error_in_exec is None, r.text
        info = run(ip, "%imagen4 info").cap.stdout
        assert f"key set (from .env at {dotenv})" in info and dotenv_key not in info + json.dumps(r.outputs)
        files = [p for p in ip.imagen4.session.history.folder.rglob("*") if p.is_file()]
        assert any(p.suffix == ".jsonl" for p in files)  # the history is among what is searched
        for path in files:
            assert dotenv_key.encode() not in path.read_bytes(), path
    finally:
        dotenv.unlink()  # the run's artifacts hold no key (tests/secrets_guard.py)


def test_a_changed_key_rebuilds_the_client_and_running_jobs_finish_on_the_old_one(ip, sim, monkeypatch):
    sim.generation_time = 0.6
    r = run(ip, "%%imagen4 --no-wait -o job\nslow one")
    assert r.result.error_in_exec is None, r.text
    old = ip.imagen4.session.client
    sim.api_keys = (KEY, "second-key-0123456789")
    monkeypatch.setenv("APIKLEY_API_KEY", "second-key-0123456789")
    assert ip.imagen4.session.client is old  # between two cells the credentials are not read again (no I/O)
    ip.imagen4.session.begin()  # what the next cell does first
    assert ip.imagen4.session.client is not old
    assert ip.user_ns["job"].wait(20).images  # followed to the end by the old client's poller
    assert sim.requests[-1].endpoint != "createTask"


# -- the one line ------------------------------------------------------------------------------------------
def test_load_and_info_say_service_key_source_and_history_in_one_line(ip, sim, tmp_path):
    """The service, the key's source and the history: one line when it fits 100 characters, else one part a line,
    broken only between words (a long temporary path does not fit)."""
    text = ip.load_text.strip().split("\n[imagen4]")[0]
    flat = " ".join(text.split())  # the line as words, however it was broken
    unknown = "; a simulator or not: not asked yet"  # %load_ext asks the service nothing
    assert flat.startswith(f"imagen4: Apikley at {sim.url} (from APIKLEY_BASE_URL{unknown})"), flat
    assert "key set (from APIKLEY_API_KEY)" in flat and KEY not in ip.load_text
    assert f"history: {tmp_path / '.imagen4' / 'history.jsonl'}" in flat
    assert all(len(line) <= 100 or " " not in line.strip() for line in text.splitlines())
    info = run(ip, "%imagen4 info").cap.stdout.strip()
    assert " ".join(info.split()) == flat.replace(unknown, "")  # info asked: not a simulator


def test_dash_dash_help_prints_the_help(ip, sim):
    r = run(ip, "%imagen4 --help")
    assert r.result.error_in_exec is None
    for word in ("-m MODEL, --model MODEL", "key", "simulator [--stop]", "info", "%imagen4 key"):
        assert word in r.cap.stdout, word


# -- %imagen4 simulator ------------------------------------------------------------------------------------
def test_simulator_marks_everything_simulated_and_stop_goes_back(ip, sim, monkeypatch):
    monkeypatch.delenv("APIKLEY_API_KEY")  # no account at all
    try:
        r = run(ip, "%imagen4 simulator")
        said = r.outputs[0]["data"]["text/plain"]
        assert "Simulator started" in said and "the simulator at http://127.0.0.1:" in said
        assert "key set (from %imagen4 simulator)" in said
        info = run(ip, "%imagen4 info").cap.stdout
        assert "simulated" in info and sim.url not in info
        r = run(ip, "%%imagen4 --wait -s 3 -m fast\npaper fox")
        assert r.result.error_in_exec is None, r.text
        (image,) = r.images()
        assert image["metadata"]["imagen4"]["simulated"] is True
        assert image["metadata"]["imagen4"]["model"] == "google/imagen4-fast"
        cards = [o for o in r.outputs if "imagen4-card" in o["data"].get("text/html", "")]
        assert cards and all("simulated" in c["data"]["text/plain"] and "imagen4-simulated" in c["data"]["text/html"]
                             for c in cards)
        (submitted,) = [e for e in events(ip) if e["event"] == "submitted"]
        assert submitted["simulated"] is True
        assert sim.count() == 0  # nothing went to the "real" service
        again = run(ip, "%%imagen4 --wait -s 3 -m fast\npaper fox")  # reused on the simulator: still simulated
        assert "Reused" in json.dumps(again.outputs) and again.images()[0]["metadata"]["imagen4"]["simulated"]
        everything = json.dumps(r.outputs) + json.dumps(again.outputs) + r.text + said + info
        assert not re.search(r"sim-[A-Za-z0-9_-]{20,}", everything)  # its key is never shown
    finally:
        stopped = run(ip, "%imagen4 simulator --stop")
    text = json.dumps(stopped.outputs)
    assert "Simulator stopped" in text and "no key" in text
    assert not ip.imagen4.session.simulated
    monkeypatch.setenv("APIKLEY_API_KEY", KEY)
    real = run(ip, "%%imagen4 --wait -s 3 -m fast\npaper fox")  # simulated images never stand in for real ones
    assert real.result.error_in_exec is None, real.text
    assert sim.count("createTask") == 1 and "Reused" not in json.dumps(real.outputs)
    assert "simulated" not in json.dumps(real.outputs)  # neither card nor metadata
    assert "simulated" not in [e for e in events(ip) if e["event"] == "submitted"][-1]
    assert "Apikley at" in run(ip, "%imagen4 info").cap.stdout


def test_stop_without_a_simulator_says_so(ip, sim):
    r = run(ip, "%imagen4 simulator --stop")
    assert "No simulator is running" in r.outputs[0]["data"]["text/plain"]
