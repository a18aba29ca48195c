"""`%%imagen4` and `%imagen4 <subcommand>` in an in-process IPython shell against the simulator.

Rich outputs are captured with IPython's capturing display publisher, so display ids, updates and
output metadata are checked exactly as a kernel would send them (the kernel tests do the real thing).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import FAST_RETRY, KEY
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from imagen4_jupyter.api.job import Job
from imagen4_jupyter.notebook import magics as M
from imagen4_jupyter.records import session as S


class Run:
    """What one or more cells produced: rich outputs, stdout, stderr, the last result."""

    def __init__(self, cap, result):
        self.cap, self.result = cap, result

    @property
    def outputs(self) -> list[dict]:
        return [{"data": o.data, "metadata": o.metadata, "transient": o.transient, "update": o.update}
                for o in self.cap.outputs]

    @property
    def text(self) -> str:
        return self.cap.stdout + self.cap.stderr

    def images(self) -> list[dict]:
        return [o for o in self.outputs if {"image/png", "image/jpeg"} & set(o["data"])]

    def display_ids(self, created: bool = True) -> list[str]:
        return [o["transient"]["display_id"] for o in self.outputs
                if o["transient"].get("display_id") and bool(o["update"]) != created]


def simulator_env(monkeypatch, sim, folder) -> None:
    """The working directory `folder`, the simulator's URL and key, and no notebook detected."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("APIKLEY_API_KEY", KEY)
    monkeypatch.setenv("APIKLEY_BASE_URL", sim.url)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


@pytest.fixture
def ip(sim, tmp_path, monkeypatch):
    """A shell with the extension loaded, history in tmp_path, fast polling, rich outputs."""
    simulator_env(monkeypatch, sim, tmp_path)
    shell = InteractiveShell.instance()
    shell.config.pop("Imagen4Magics", None)  # %config values of earlier tests
    with capture_output() as cap:
        magics = M.load(shell)
    shell.load_text = cap.stdout
    magics.poll_interval = 0.02
    magics.display_mode = "rich"
    magics.refresh_interval = 0
    magics.session.configure_client(retry=FAST_RETRY)
    shell.imagen4 = magics
    yield shell
    session = magics.session
    M.unload(shell)
    from imagen4_jupyter.notebook.subcommands import close_panels

    close_panels()
    session.close()
    S.set_session(None)
    for name in ("job", "season", "scene", "seed", "j", "k"):
        shell.user_ns.pop(name, None)
    del shell.imagen4
    shell.config.pop("Imagen4Magics", None)


def run(ip, *cells: str, settle=None) -> Run:
    """Run cells with outputs captured; `settle()` is called inside the capture (to wait for updates)."""
    with capture_output() as cap:
        result = None
        for code in cells:
            result = ip.run_cell(code)
        if settle is not None:
            settle()
    return Run(cap, result)


def creates(sim) -> list[dict]:
    return [json.loads(r.body) for r in sim.requests if r.endpoint == "createTask"]


def assert_short_error(r: Run, *needles: str):
    assert r.result.error_in_exec is not None or "UsageError" in r.text, r.text
    assert "Traceback" not in r.text and "most recent call" not in r.text, r.text
    assert len(r.text.strip().splitlines()) <= 2, r.text
    for needle in needles:
        assert needle in r.text, r.text


def assert_failed_with(r: Run, kind: str):
    """The cell raised the magic's one-line error, carrying the package's exception of that kind."""
    err = r.result.error_in_exec
    assert isinstance(err, M.CellError) and type(err.error).__name__ == kind, repr(err)
    assert err.__cause__ is err.error and str(err) == err.error.short()


# -- loading ----------------------------------------------------------------------------------------
def test_load_says_where_history_goes(ip, tmp_path):
    assert str(tmp_path / ".imagen4" / "history.jsonl") in ip.load_text
    assert "unfinished" not in ip.load_text
    assert ip.find_cell_magic("imagen4") is not None and ip.find_line_magic("imagen4") is not None


def test_load_reports_unfinished_tasks(sim, tmp_path, monkeypatch):
    simulator_env(monkeypatch, sim, tmp_path)
    hist = tmp_path / ".imagen4" / "history.jsonl"
    hist.parent.mkdir()
    lines = [{"v": 1, "time": 1.0, "event": "submitted", "task_id": f"task_x{i}",
              "request": {"prompt": "p", "num_images": 1, "aspect_ratio": "1:1"}} for i in range(2)]
    hist.write_text("".join(json.dumps(x) + "\n" for x in lines))
    shell = InteractiveShell.instance()
    with capture_output() as cap:
        M.load(shell)
    try:
        assert "2 unfinished task(s) — run %imagen4 resume" in cap.stdout
        assert sim.count() == 0  # loading sends nothing
    finally:
        M.unload(shell)
        S.set_session(None)


@pytest.mark.parametrize("traits", [{"poll_interval": 0.25, "timeout": 12.0},
                                    {"reuse": "never", "notebook": "other.ipynb", "history_folder": "hist"}])
def test_load_with_observed_traits_in_the_config(sim, tmp_path, monkeypatch, traits):
    """`c.Imagen4Magics.poll_interval = ...` in an IPython config file: the trait observers run while
    traitlets applies the config, before the rest of `__init__`; loading must not fail."""
    simulator_env(monkeypatch, sim, tmp_path)
    shell = InteractiveShell.instance()
    for name, value in traits.items():
        setattr(shell.config.Imagen4Magics, name, value)
    try:
        with capture_output():
            magics = M.load(shell)
        for name, value in traits.items():
            assert getattr(magics, name) == value
        session = magics.session
        if "poll_interval" in traits:
            schedule = session.client.schedule
            assert schedule.phases == ((float("inf"), 0.25),) and schedule.max_wait == 12
        else:  # one history per notebook in the configured folder
            assert session.reuse == "never" and session.history.path.resolve() == tmp_path / "hist" / "other.jsonl"
    finally:
        M.unload(shell)
        S.set_session(None)
        shell.config.pop("Imagen4Magics", None)


# -- generating -------------------------------------------------------------------------------------
def test_blocking_cell_sends_exact_request_and_embeds_images_with_metadata(ip, sim):
    r = run(ip, "%%imagen4 --wait -n 2 -a 16:9 -s 7\nA red fox in the snow\n")
    assert r.result.error_in_exec is None, r.text
    (body,) = creates(sim)
    assert body == {"model": "google/imagen4", "input": {"prompt": "A red fox in the snow", "aspect_ratio": "16:9",
                                                         "num_images": "2", "seed": "7"}}
    created = r.display_ids(created=True)
    assert len(created) == 3  # the card and one slot per image
    images = r.images()
    assert len(images) == 2
    for out in images:
        assert out["transient"]["display_id"] in created[1:]
        meta = out["metadata"]["imagen4"]
        assert meta["request"] == {"prompt": "A red fox in the snow", "negative_prompt": None, "aspect_ratio": "16:9",
                                   "num_images": 2, "seed": "7", "callback_url": None, "model": "google/imagen4"}
        assert meta["model"] == "google/imagen4" and meta["task_id"].startswith("task_")
        raw = Path(meta["path"]).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == meta["sha256"]
        assert meta["times"]["cost_time_ms"] is not None and meta["times"]["submitted"] > 0
        mime = "image/png" if "image/png" in out["data"] else "image/jpeg"
        assert base64.b64decode(out["data"][mime])[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb")
    card = [o for o in r.outputs if o["transient"].get("display_id") == created[0]][-1]
    assert "done" in card["data"]["text/plain"] and meta["task_id"] in card["data"]["text/html"]


def test_non_blocking_cell_returns_at_once_and_updates_its_own_display_ids(ip, sim):
    sim.generation_time = 0.6
    holder = {}

    def settle():
        holder["returned"] = time.monotonic()
        ip.user_ns["job"].wait(10)  # done: its cell's outputs are updated already (no other signal to wait on)

    t0 = time.monotonic()
    r = run(ip, "%%imagen4 --no-wait -o job -n 2\na slow lighthouse", settle=settle)
    assert holder["returned"] - t0 < 0.5
    created = r.display_ids(created=True)
    updated = r.display_ids(created=False)
    assert len(created) == 3 and set(updated) <= set(created) and set(created[1:]) <= set(updated)
    assert len(r.images()) == 2 and all(o["update"] for o in r.images())


def test_out_binds_job_immediately(ip, sim):
    sim.generation_time = 0.5
    r = run(ip, "%%imagen4 --no-wait -o job\na cat", "x = job.done()",
            settle=lambda: ip.user_ns["job"].wait(10))
    job = ip.user_ns["job"]
    assert isinstance(job, Job) and ip.user_ns["x"] is False  # bound before it finished
    assert job.task_id.startswith("task_") and len(job.images) == 1 and job.wait(0).images == job.images
    assert "imagen4-card" in job._repr_html_()
    assert r.result.error_in_exec is None


def test_interpolation_braces_and_split(ip, sim):
    ip.user_ns.update(season="winter", scene=type("Scene", (), {"light": "dusk"})(), seed=99)
    r = run(ip, '%%imagen4 --wait -s {seed} --negative "no {season}"\n'
                'a fox in {season} at {scene.light}, {{literal}}, JSON {"style": "soft", "n": [1, 2]} '
                'and nested {{"a": {{"b": 1}}}}, a lone { and } stay\n')
    assert r.result.error_in_exec is None, r.text
    (body,) = creates(sim)
    assert body["input"]["prompt"] == ('a fox in winter at dusk, {literal}, JSON {"style": "soft", "n": [1, 2]} '
                                       'and nested {"a": {"b": 1}}, a lone { and } stay')
    assert body["input"]["negative_prompt"] == "no winter" and body["input"]["seed"] == "99"

    run(ip, "%%imagen4 --wait\nthe prompt\n  ---  \nthe negative\nsecond line\n")
    body = creates(sim)[-1]
    assert body["input"]["prompt"] == "the prompt"
    assert body["input"]["negative_prompt"] == "the negative\nsecond line"


def test_defaults_come_from_traits(ip, sim, caplog):
    run(ip, "%config Imagen4Magics.aspect_ratio = '3:4'", "%config Imagen4Magics.num_images = 3",
        "%%imagen4 --wait\nthree tall ones")
    body = creates(sim)[-1]
    assert body["input"]["aspect_ratio"] == "3:4" and body["input"]["num_images"] == "3"
    run(ip, "%config Imagen4Magics.aspect_ratio = '2:1'")  # refused with a message; the old value stays
    assert ip.imagen4.aspect_ratio == "3:4" and "aspect_ratio '2:1' is not supported" in caplog.text


def test_schedule_traits_reach_the_client(ip):
    client = ip.imagen4.session.client
    run(ip, "%config Imagen4Magics.poll_interval = 0.25", "%config Imagen4Magics.timeout = 12")
    assert client.schedule.phases == ((float("inf"), 0.25),) and client.schedule.max_wait == 12
    run(ip, "%config Imagen4Magics.poll_interval = 0")
    learned = client.schedule  # learns durations; the provider's advice until it has seen three tasks
    assert learned.fallback.phases[0][1] > 1 and learned.max_wait == 12 and hasattr(learned, "learn")


def test_embed_modes(ip, sim):
    r = run(ip, "%%imagen4 --wait --embed full -s 1\nfull size")
    (out,) = r.images()
    meta = out["metadata"]["imagen4"]
    assert base64.b64decode(out["data"][meta["mime"]]) == Path(meta["path"]).read_bytes()
    assert meta["embed"] == "full"

    r = run(ip, "%%imagen4 --wait --embed none -s 2\nno pixels")
    assert not r.images()
    paths = [o for o in r.outputs if "text/markdown" in o["data"]]
    assert len(paths) == 1 and Path(paths[0]["metadata"]["imagen4"]["path"]).exists()
    assert paths[0]["metadata"]["imagen4"]["path"] in paths[0]["data"]["text/markdown"]

    run(ip, "%config Imagen4Magics.preview_size = 24")
    r = run(ip, "%%imagen4 --wait -s 3\nsmall preview")
    (out,) = r.images()
    assert "image/jpeg" in out["data"]
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(out["data"]["image/jpeg"]))) as im:
        assert max(im.size) <= 24
    assert out["metadata"]["imagen4"]["width"] == 64  # the file on disk keeps full resolution


def test_reuse_policy_and_force(ip, sim):
    first = run(ip, "%%imagen4 --wait -s 5\nreusable")
    again = run(ip, "%%imagen4 --wait -s 5\nreusable")
    assert sim.count("createTask") == 1
    assert "Reused 1 image of task" in again.outputs[0]["data"]["text/plain"]
    assert [o["data"] for o in again.images()] == [o["data"] for o in first.images()]
    assert again.images()[0]["metadata"]["imagen4"]["reused"] is True
    run(ip, "%%imagen4 --wait -s 5 --force\nreusable")
    assert sim.count("createTask") == 2
    run(ip, "%%imagen4 --wait\nunseeded", "%%imagen4 --wait\nunseeded")
    assert sim.count("createTask") == 4  # policy 'seeded': no reuse without a seed
    run(ip, "%config Imagen4Magics.reuse = 'always'", "%%imagen4 --wait\nunseeded")
    assert sim.count("createTask") == 4
    run(ip, "%config Imagen4Magics.reuse = 'never'", "%%imagen4 --wait -s 5\nreusable")
    assert sim.count("createTask") == 5


@pytest.mark.parametrize("cell, needle", [
    ("%%imagen4 -n 7\nx", "from 1 to 4"),
    ("%%imagen4 -n many\nx", "whole number"),
    ("%%imagen4 -a 2:1\nx", "Aspect ratio '2:1'"),
    ("%%imagen4 --embed huge\nx", "invalid choice"),
    ("%%imagen4 -x\nx", "unrecognized arguments: -x"),
    ("%%imagen4 --wait --no-wait\nx", "either --wait or --no-wait"),
    ("%%imagen4 -o 1abc\nx", "variable name"),
    ("%%imagen4\n   \n", "prompt is empty"),
    ("%%imagen4 --callback-url ftp://h/x\nx", "http(s) URL"),
    ("%%imagen4 -s " + "9" * 501 + "\nx", "limit is 500"),
    ("%%imagen4\na {nowhere} fox", "names no variable `nowhere`"),
    ("%%imagen4 -s {nowhere}\nx", "names no variable `nowhere`"),
    ("%%imagen4 --negative b\na\n---\nc", "not both"),
    ("%%imagen4\n" + "x" * 5001, "limit is 5000"),
])
def test_bad_input_is_a_short_error_and_sends_nothing(ip, sim, cell, needle):
    r = run(ip, cell)
    assert_short_error(r, needle)
    assert sim.count("createTask") == 0 and not r.outputs


def test_failure_turns_the_card_into_an_error_line(ip, sim):
    sim.next_outcomes.append({"fail": ("500", "content filtered")})
    r = run(ip, "%%imagen4 --no-wait -o job\nforbidden", settle=lambda: ip.user_ns["job"].exception(10))
    job = ip.user_ns["job"]
    card_id = r.display_ids(created=True)[0]
    last = [o for o in r.outputs if o["transient"].get("display_id") == card_id][-1]
    assert last["update"] and "content filtered" in last["data"]["text/plain"]
    assert job.task_id in last["data"]["text/plain"] and "Generation failed" in last["data"]["text/html"]
    assert not r.images()

    sim.next_outcomes.append({"fail": ("500", "filtered again")})
    r = run(ip, "%%imagen4 --wait\nforbidden too")
    assert_failed_with(r, "GenerationFailedError")
    assert "Traceback" not in r.text and "filtered again" in r.text


def test_text_mode_blocking_failure_prints_the_error_once(ip, sim):
    ip.imagen4.display_mode = "text"
    sim.next_outcomes.append({"fail": ("500", "filtered in a terminal")})
    r = run(ip, "%%imagen4 --wait\nforbidden")
    assert_failed_with(r, "GenerationFailedError")
    assert r.text.count("filtered in a terminal") == 1, r.text
    assert "Traceback" not in r.text

    sim.next_outcomes.append({"fail": ("500", "filtered, not waited for")})  # nobody raises it: printed
    r = run(ip, "%%imagen4 --no-wait -o job\nforbidden too", settle=lambda: ip.user_ns["job"].exception(10))
    assert r.result.error_in_exec is None and r.cap.stderr.count("filtered, not waited for") == 1, r.text


def test_service_error_at_submit_is_short(ip, sim):
    sim.credits = 0
    r = run(ip, "%%imagen4 --wait\npoor")
    assert_short_error(r, "Not enough credits")
    assert_failed_with(r, "InsufficientCreditsError")


def test_missing_key_is_short_and_sends_nothing(ip, sim, monkeypatch):
    ip.imagen4.session.close()
    ip.imagen4._session = None
    monkeypatch.delenv("APIKLEY_API_KEY")
    r = run(ip, "%%imagen4 --wait\nno key")
    assert_short_error(r, "Configuration problem: No API key. Set APIKLEY_API_KEY", ".env", "%imagen4 key",
                       "%imagen4 simulator")
    assert sim.count() == 0


def test_text_mode_prints_status_and_paths(ip, sim):
    ip.imagen4.display_mode = "text"
    r = run(ip, "%%imagen4 -n 2\nterminal fox")  # no kernel: blocks by default
    assert not r.outputs
    paths = [line.split()[0] for line in r.cap.stdout.splitlines() if line.startswith("  .imagen4/images/")]
    assert len(paths) == 2 and all(Path(p).exists() for p in paths)  # relative to the working directory
    assert "done in" in r.cap.stdout


def test_text_mode_reused_cell_says_no_request_was_sent(ip, sim):
    ip.imagen4.display_mode = "text"
    first = run(ip, "%%imagen4 -s 7\nterminal owl")
    assert "done in" in first.cap.stdout
    r = run(ip, "%%imagen4 -s 7\nterminal owl")
    assert sim.count("createTask") == 1
    assert "Reused 1 image" in r.cap.stdout and "reused (no request sent, 0 credits); saved:" in r.cap.stdout, r.text
    assert "done in" not in r.cap.stdout, r.text
    assert [line for line in r.cap.stdout.splitlines() if line.startswith("  .imagen4/images/")]


def test_outputs_name_image_files_relative_to_the_notebook_folder(ip, sim, tmp_path, tmp_path_factory):
    (tmp_path / "sub").mkdir()
    run(ip, "%config Imagen4Magics.notebook = 'sub/study.ipynb'")
    r = run(ip, "%%imagen4 --wait -s 3\nrelative", "%%imagen4 --wait -s 4 --embed none\nrelative none",
            "%imagen4 history")
    (preview,) = r.images()
    (listed,) = [o for o in r.outputs if "text/markdown" in o["data"]]
    table = [o for o in r.outputs if "imagen4-history" in o["data"].get("text/html", "")][0]["data"]["text/plain"]
    saved = json.dumps(r.outputs)
    assert str(tmp_path) not in saved, [x for x in re.findall(r'"[^"]*', saved) if str(tmp_path) in x]
    for out in (preview, listed):
        path = out["metadata"]["imagen4"]["path"]
        assert path.startswith(".imagen4/images/") and (tmp_path / "sub" / path).is_file()
        assert path in out["data"]["text/plain"]
    assert table.count(" .imagen4/images/") == 2
    outside = tmp_path_factory.mktemp("elsewhere")  # a history outside the notebook's folder: absolute paths
    run(ip, f"%config Imagen4Magics.history_folder = {str(outside)!r}")
    (far,) = run(ip, "%%imagen4 --wait -s 5\nfar away").images()
    assert far["metadata"]["imagen4"]["path"].startswith(str(outside))


def test_help_lists_every_flag_and_subcommand(ip):
    doc = ip.find_cell_magic("imagen4").__doc__
    for flag in ("-n N, --num-images N", "-a RATIO, --aspect-ratio RATIO", "-s SEED, --seed SEED",
                 "--negative TEXT", "--callback-url URL", "--wait", "--no-wait", "--force", "-o NAME, --out NAME",
                 "--embed {preview,full,none}", "history [--limit N] [--search TEXT]", "show TASK_ID",
                 "status TASK_ID", "resume", "wait", "credits", "panel", "{{"):
        assert flag in doc, flag


def test_help_shows_real_default_values(ip):
    doc = " ".join(ip.find_cell_magic("imagen4").__doc__.split())
    assert "(default: 1; see Imagen4Magics.num_images)" in doc and "(default: standard; see Imagen4Magics.model)" in doc
    assert "(default: the model's own, 16:9 for fast and 1:1 for standard and ultra; see" in doc
    assert "(default: Imagen4Magics" not in doc
    from imagen4_jupyter.notebook.subcommands import commands

    table = commands()[1]
    helps = {o: a.help for c in table.values() for a in c.actions for o in a.option_strings}
    assert "(default: 20)" in helps["--limit"] and "(default: 4)" in helps["--concurrency"]
    assert "(default: 960," in helps["--timeout"]


def test_one_parser_dispatches_every_subcommand_through_its_handler(ip):
    from imagen4_jupyter.notebook.subcommands import SUBCOMMANDS, Subcommands, commands

    parser, table = commands()
    assert commands() is commands() and tuple(table) == SUBCOMMANDS  # built once
    for name in SUBCOMMANDS:
        words = {"show": ["task_1"], "status": ["task_1"], "batch": ["prompts"], "trust": ["example.org"]}.get(
            name, [])
        assert parser.parse_args([name, *words]).handler is getattr(Subcommands, name.replace("-", "_"))
    # the request flags of a cell and of a batch are the same definitions
    cell = set(M.CELL_FLAGS.option_strings())
    batch = set(table["batch"].options())
    assert {"-n", "-a", "-s", "--negative", "--wait", "--no-wait", "--force", "-o"} <= cell & batch


@pytest.mark.parametrize("line, needle", [
    ("%%imagen4 --seeds 3\nx", "unrecognized arguments: --seeds 3; did you mean --seed?"),
    ("%%imagen4 --negatve=blur\nx", "did you mean --negative?"),
    ("%imagen4 histroy", "Unknown subcommand 'histroy' (did you mean history?)"),
    ("%imagen4 cerdits", "did you mean credits?"),
    ("%imagen4 history --limt 3", "unrecognized arguments: --limt 3; did you mean --limit?"),
    ("%imagen4 batch prompts_ok --concurency 2", "did you mean --concurrency?"),
    ("%imagen4 wait --timeuot 1", "did you mean --timeout?"),
])
def test_mistyped_flags_and_subcommands_say_did_you_mean(ip, sim, line, needle):
    ip.user_ns["prompts_ok"] = ["fine"]
    r = run(ip, line)
    assert_short_error(r, needle)
    assert len(r.text.strip().splitlines()) == 1 and sim.count() == 0
    ip.user_ns.pop("prompts_ok")


@pytest.mark.parametrize("trait, bad, says", [
    ("num_images", 7, "should not be greater than 4"),
    ("num_images", 0, "should not be less than 1"),
    ("preview_size", 8, "should not be less than 16"),
    ("poll_interval", -1.0, "should not be less than 0"),
    ("refresh_interval", -0.5, "should not be less than 0"),
    ("timeout", 0.0, "timeout must be a positive number"),
    ("aspect_ratio", "2:1", "aspect_ratio '2:1' is not supported; use one of 1:1, 16:9, 9:16, 3:4, 4:3 (or ''"),
    ("model", "mega", "model: Unknown model 'mega'; use one of standard (google/imagen4), fast"),
    ("wait", "sometimes", "wait 'sometimes' is not supported; use one of auto, always, never."),
    ("embed", "huge", "embed 'huge' is not supported"),
    ("reuse", "often", "reuse 'often' is not supported"),
    ("display_mode", "html", "display_mode 'html' is not supported"),
])
def test_traits_refuse_bad_values_and_keep_the_old_one(ip, trait, bad, says):
    from traitlets import TraitError

    before = getattr(ip.imagen4, trait)
    with pytest.raises(TraitError) as info:
        setattr(ip.imagen4, trait, bad)
    assert says in str(info.value)
    assert getattr(ip.imagen4, trait) == before


def test_wait_timeout_is_a_short_error_and_the_task_goes_on(ip, sim):
    sim.generation_time = 1.0
    r = run(ip, "%%imagen4 --no-wait -o job\nslow", "%imagen4 wait --timeout 0.1")
    assert_short_error(r, "1 task(s) still running after 0.1 s")
    assert type(r.result.error_in_exec.error).__name__ == "Imagen4TimeoutError"
    ip.user_ns["job"].wait(10)
    r = run(ip, "%imagen4 wait")
    assert "Nothing pending" in r.outputs[0]["data"]["text/plain"]


def test_headless_detection_follows_allow_stdin(ip):
    magics = ip.imagen4
    assert magics.headless() is True  # no kernel at all (a terminal)

    class FakeKernel:
        def __init__(self, allow):
            self.allow = allow

        def get_parent(self, channel=None):
            return {"header": {"msg_type": "execute_request"}, "content": {"allow_stdin": self.allow}}

    try:
        ip.kernel = FakeKernel(False)
        assert magics.headless() and magics.blocking() and not magics.blocking("never")
        ip.kernel = FakeKernel(True)
        assert not magics.headless() and not magics.blocking() and magics.blocking("always")
        magics.wait = "always"
        assert magics.blocking()
    finally:
        del ip.kernel
        magics.wait = "auto"


# -- subcommands --------------------------------------------------------------------------------------
def test_history_table_escapes_and_filters(ip, sim):
    run(ip, "%%imagen4 --wait -s 1\n<script>alert(1)</script> fox", "%%imagen4 --wait -s 2\nquiet owl")
    r = run(ip, "%imagen4 history")
    html = r.outputs[0]["data"]["text/html"]
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "quiet owl" in html and html.count("<img ") == 2 and "seed 2" in html
    r = run(ip, "%imagen4 history --search OWL --limit 5")
    html = r.outputs[0]["data"]["text/html"]
    assert "quiet owl" in html and "script" not in html
    r = run(ip, "%imagen4 history --limit 1")
    assert r.outputs[0]["data"]["text/html"].count("<tr>") == 2  # header + one row
    assert_short_error(run(ip, "%imagen4 history --limit x"), "invalid int value")


def test_show_of_a_task_whose_files_were_deleted_downloads_them_again(ip, sim):
    run(ip, "%%imagen4 --wait -s 41 -o job\nkept in the history")
    job = ip.user_ns["job"]
    path, digest = job.images[0].path, job.images[0].sha256
    Path(path).unlink()  # a cleaned-up images folder
    creates, checks = sim.count("createTask"), sim.count("recordInfo")
    r = run(ip, f"%imagen4 show {job.task_id}")
    said = " ".join(o["data"].get("text/plain", "") for o in r.outputs)
    assert "downloading them again (no new task)" in said, said
    assert len(r.images()) == 1 and r.images()[0]["metadata"]["imagen4"]["task_id"] == job.task_id
    assert sim.count("createTask") == creates and sim.count("recordInfo") > checks  # followed, not re-made
    assert Path(path).is_file() and hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert ip.imagen4.session.history.images_on_disk(ip.imagen4.session.history.get(job.task_id))


def test_show_status_credits(ip, sim):
    run(ip, "%%imagen4 --wait -s 4 -o job\nshown again")
    tid = ip.user_ns["job"].task_id
    r = run(ip, f"%imagen4 show {tid}")
    assert len(r.images()) == 1 and r.images()[0]["metadata"]["imagen4"]["task_id"] == tid
    assert_short_error(run(ip, "%imagen4 show task_nope"), "No task task_nope")
    before = sim.count("recordInfo")
    r = run(ip, f"%imagen4 status {tid}")
    assert sim.count("recordInfo") == before + 1
    assert "state: success" in r.outputs[0]["data"]["text/plain"]
    assert_short_error(run(ip, "%imagen4 status ../../etc"), "not a valid task id")
    assert_short_error(run(ip, "%imagen4 status"), "required: TASK_ID")
    assert sim.count("recordInfo") == before + 1
    r = run(ip, "%imagen4 status task_unknown_1")
    assert_short_error(r, "Not found")
    r = run(ip, "%imagen4 credits")
    left = sim.credits
    assert f"Remaining credits: {left:,.0f}" in r.outputs[0]["data"]["text/plain"]
    events = [json.loads(x) for x in ip.imagen4.session.history.path.read_text().splitlines()]
    assert {"event": "credits", "credits": left}.items() <= events[-1].items()


def test_wait_and_resume(ip, sim):
    sim.generation_time = 0.3
    r = run(ip, "%%imagen4 --no-wait -o j\none", "%%imagen4 --no-wait -o k\ntwo", "%imagen4 wait")
    assert ip.user_ns["j"].done() and ip.user_ns["k"].done()
    assert "2 task(s) finished: 2 succeeded" in r.outputs[-1]["data"]["text/plain"]
    assert len(r.images()) == 2  # both cells' slots were filled before `wait` returned
    assert "Nothing pending" in run(ip, "%imagen4 wait").outputs[0]["data"]["text/plain"]

    # A task submitted by "another kernel" that never finished following it: resume picks it up.
    from imagen4_jupyter import GenerationRequest

    hist = ip.imagen4.session.history
    req = GenerationRequest.create("left behind")
    tid = ip.imagen4.session.client.create_task(req)
    hist.append({"event": "submitted", "task_id": tid, "request": req.to_dict(), "request_key": req.key()})
    n = sim.count("createTask")
    r = run(ip, "%imagen4 resume --wait")
    assert "Resuming 1 unfinished task(s)" in r.outputs[0]["data"]["text/plain"]
    assert len(r.images()) == 1 and r.images()[0]["metadata"]["imagen4"]["task_id"] == tid
    assert sim.count("createTask") == n and hist.get(tid).state == "success"
    assert "Nothing to resume" in run(ip, "%imagen4 resume").outputs[0]["data"]["text/plain"]


def test_unknown_and_empty_subcommands(ip, sim):
    assert_short_error(run(ip, "%imagen4 frobnicate"), "Unknown subcommand 'frobnicate'")
    assert_short_error(run(ip, "%imagen4"), "%%imagen4")
    assert_short_error(run(ip, "%imagen4 credits now"), "no arguments")
    assert sim.count() == 0


def test_panel_subcommand_is_lazy(ip):
    import sys

    r = run(ip, "%imagen4 panel")
    try:
        import imagen4_jupyter.notebook.panel  # noqa: F401
    except ModuleNotFoundError:
        assert "panel is not available" in r.text or "panel is not available" in str(r.outputs)
    else:
        assert r.result.error_in_exec is None, r.text
        assert any("application/vnd.jupyter.widget-view+json" in o["data"] for o in r.outputs)
        assert "ipywidgets" in sys.modules


def test_panel_again_closes_the_previous_panel(ip):
    session = ip.imagen4.session

    def panels():
        return [fn.__self__ for fn in session._listeners if type(getattr(fn, "__self__", None)).__name__ == "Panel"]

    run(ip, "%imagen4 panel")
    (first,) = panels()
    r = run(ip, "%imagen4 panel")
    assert r.result.error_in_exec is None, r.text
    (second,) = panels()  # only the newest listens to the session
    assert second is not first and first._closed and not second._closed
    assert first.comm is None and second.comm is not None  # the old widgets are closed too
    assert_short_error(run(ip, "%imagen4 panel wide"), "no arguments")
    assert panels() == [second]
    from imagen4_jupyter.notebook.subcommands import close_panels

    close_panels()
    assert panels() == [] and second._closed


def test_key_never_stored_or_shown(ip, sim):
    r = run(ip, "%%imagen4 --wait -s 8 -o job\nsecret-free", "%imagen4 history", "%imagen4 credits",
            f"%imagen4 status {'task_nope'}")
    everything = json.dumps(r.outputs) + r.text
    assert KEY not in everything
    files = [p for p in Path(ip.imagen4.session.history.folder).rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.suffix == ".png" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


def test_history_folder_and_notebook_traits(ip, sim, tmp_path):
    target = tmp_path / "elsewhere"
    r = run(ip, f"%config Imagen4Magics.history_folder = {str(target)!r}")
    assert str(target / "history.jsonl") in r.text
    run(ip, "%config Imagen4Magics.notebook = 'story.ipynb'", "%%imagen4 --wait -s 1\nrelocated")
    assert (target / "story.jsonl").exists()
    assert any(p.suffix == ".png" for p in (target / "images").iterdir())


def test_track_credits_records_balance_around_a_task(ip, sim):
    ip.imagen4.track_credits = True
    run(ip, "%%imagen4 --wait -o job -n 2\ncosts")
    tid = ip.user_ns["job"].task_id
    done = threading.Event()
    for _ in range(50):
        entry = ip.imagen4.session.history.get(tid)
        if entry.credits_after is not None:
            done.set()
            break
        time.sleep(0.02)
    assert done.is_set()
    assert entry.credits_before - entry.credits_after == pytest.approx(2 * 4.0)


def test_loading_is_quick_and_imports_no_widgets(tmp_path):
    """`%load_ext` in a fresh process: no ipywidgets, no Pillow, no network; well under a second."""
    import os
    import subprocess
    import sys

    code = ("import sys, time\n"
            "from IPython.core.interactiveshell import InteractiveShell\n"
            "ip = InteractiveShell.instance()\n"
            "t = time.perf_counter(); ip.run_line_magic('load_ext', 'imagen4_jupyter')\n"
            "print('ms', (time.perf_counter() - t) * 1000, 'ipywidgets' in sys.modules, 'PIL' in sys.modules)\n"
            "import imagen4_jupyter; print('from', imagen4_jupyter.__file__)\n")
    env = dict(os.environ, APIKLEY_BASE_URL="http://127.0.0.1:9", APIKLEY_API_KEY=KEY,
               PYTHONPATH=str(Path(M.__file__).resolve().parents[2]))  # this checkout, not an installed copy
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("ms ")][0].split()
    assert float(line[1]) < 1000 and line[2:] == ["False", "False"], out.stdout
    assert f"from {Path(M.__file__).resolve().parents[1] / '__init__.py'}" in out.stdout
    # one part a line when they do not fit 100 characters together, broken at word boundaries only
    assert "imagen4: Apikley at http://127.0.0.1:9 (from APIKLEY_BASE_URL; a simulator or not: not asked yet)\n" \
        "  key set (from APIKLEY_API_KEY)\n" \
        f"  history: {tmp_path.resolve() / '.imagen4' / 'history.jsonl'}" in out.stdout, out.stdout
    said = out.stdout.split("\nms ")[0].splitlines()
    assert all(len(ln) <= 100 or " " not in ln.strip() for ln in said), said
    assert KEY not in out.stdout


def test_outcome_unknown_is_not_resent_and_says_so(ip, sim):
    sim.inject("createTask", times=1, drop_after=True)
    r = run(ip, "%%imagen4 --wait -s 3\nmaybe billed")
    assert_short_error(r, "Outcome unknown", "NOT resent")
    assert sim.count("createTask") == 1  # sent once, never again
    events = [json.loads(x) for x in ip.imagen4.session.history.path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["queued", "sending", "outcome_unknown"]  # written ahead, then its end
    assert len({e["local_id"] for e in events}) == 1 and events[0]["request"]["prompt"] == "maybe billed"
    assert ip.imagen4.session.history.waiting() == []  # ended: resume has nothing to report again
    table = run(ip, "%imagen4 history").outputs[0]["data"]["text/html"]
    assert "maybe billed" in table and "outcome unknown" in table


@pytest.mark.parametrize("how", ["JPY_SESSION_NAME", "VS Code"])
def test_history_goes_beside_the_detected_notebook(sim, tmp_path, monkeypatch, how):
    simulator_env(monkeypatch, sim, tmp_path)
    nb = tmp_path / "sub" / "story.ipynb"
    nb.parent.mkdir()
    nb.write_text("{}")
    shell = InteractiveShell.instance()
    shell.config.pop("Imagen4Magics", None)
    if how == "JPY_SESSION_NAME":
        monkeypatch.setenv("JPY_SESSION_NAME", str(nb))
    else:
        shell.user_ns["__vsc_ipynb_file__"] = str(nb)
    try:
        with capture_output() as cap:
            M.load(shell)
        said = " ".join(cap.stdout.split())  # the line breaks at word boundaries where it passes 100 characters
        assert f"{tmp_path / 'sub' / '.imagen4' / 'story.jsonl'} (notebook found through {how})" in said
    finally:
        shell.user_ns.pop("__vsc_ipynb_file__", None)
        M.unload(shell)
        S.set_session(None)


def test_session_made_before_load_ext_finds_the_vs_code_notebook_and_is_kept(sim, tmp_path, monkeypatch):
    """Panel() or generate_many before %load_ext create the session with get_session(): it reads the running
    shell's namespace (VS Code's __vsc_ipynb_file__), and %load_ext then uses that same session."""
    simulator_env(monkeypatch, sim, tmp_path)
    nb = tmp_path / "sub" / "early.ipynb"
    nb.parent.mkdir()
    nb.write_text("{}")
    shell = InteractiveShell.instance()
    shell.config.pop("Imagen4Magics", None)
    shell.user_ns["__vsc_ipynb_file__"] = str(nb)
    S.set_session(None)
    try:
        session = S.get_session()
        assert session.found_by == "VS Code"
        assert session.history.path == tmp_path / "sub" / ".imagen4" / "early.jsonl"
        with capture_output():
            magics = M.load(shell)
        assert magics.session is session and S.get_session() is session
        from imagen4_jupyter.research.batch import default_session

        assert default_session() is session
    finally:
        shell.user_ns.pop("__vsc_ipynb_file__", None)
        M.unload(shell)
        S.set_session(None)


# -- %imagen4 batch and history --export ----------------------------------------------------------------
class Frame:
    """A DataFrame's interface for a column source: df['col'] and df.col."""

    def __init__(self, data: dict):
        self.data, self.columns = data, list(data)

    def __getitem__(self, key):
        return self.data[key]

    def __getattr__(self, name):
        if name in ("data", "columns") or name not in self.data:
            raise AttributeError(name)
        return self.data[name]


def sent(sim) -> dict[str, dict]:
    return {b["input"]["prompt"]: b["input"] for b in creates(sim)}


def test_batch_from_a_list_variable_with_options_then_reused(ip, sim):
    ip.user_ns["prompts"] = ["a fox", "a {kind}", "an owl"]
    ip.user_ns["kind"] = "hare"
    r = run(ip, '%imagen4 batch prompts -n 2 -a 16:9 -s {kind} --negative "blurry, text" -c 2 -o res')
    assert r.result.error_in_exec is None, r.text
    res = ip.user_ns["res"]
    assert type(res).__name__ == "BatchResult" and res.ok and len(res) == 3
    body = sent(sim)
    assert set(body) == {"a fox", "a {kind}", "an owl"}  # items are prompts as given, not templates
    assert all(b["num_images"] == "2" and b["aspect_ratio"] == "16:9" and b["seed"] == "hare"
               and b["negative_prompt"] == "blurry, text" for b in body.values())
    assert res.stats["max_in_flight"] <= 2
    table = [o for o in r.outputs if "imagen4 batch</b>" in o["data"].get("text/html", "")]
    assert len(table) == 1 and "3 success" in table[0]["data"]["text/plain"]
    events = [json.loads(x) for x in ip.imagen4.session.history.path.read_text().splitlines()]
    assert sum(e["event"] == "submitted" and e["source"] == "batch" for e in events) == 3
    again = run(ip, '%imagen4 batch prompts -n 2 -a 16:9 -s hare --negative "blurry, text" -o res2')
    assert again.result.error_in_exec is None and len(creates(sim)) == 3  # seeded: all reused
    assert [i.origin for i in ip.user_ns["res2"]] == ["reused"] * 3
    run(ip, '%imagen4 batch prompts -n 2 -a 16:9 -s hare --negative "blurry, text" --force')
    assert len(creates(sim)) == 6


def test_batch_from_a_csv_file(ip, sim, tmp_path):
    (tmp_path / "my prompts.csv").write_text(
        "\ufeffprompt,seed,aspect_ratio,notes\n"
        "first,1,3:4,ignored\n"
        "\"second, with a comma\",,,\n"
        ",,,\n"  # an empty row is skipped
        "third,3,,x\n", encoding="utf-8")
    r = run(ip, "%imagen4 batch 'my prompts.csv' -a 9:16 -s 50 -o res")
    assert r.result.error_in_exec is None, r.text
    body = sent(sim)
    assert list(body) == ["first", "second, with a comma", "third"] or set(body) == {
        "first", "second, with a comma", "third"}
    assert (body["first"]["seed"], body["first"]["aspect_ratio"]) == ("1", "3:4")
    assert (body["second, with a comma"]["seed"], body["second, with a comma"]["aspect_ratio"]) == ("50", "9:16")
    assert body["third"]["aspect_ratio"] == "9:16" and ip.user_ns["res"].ok
    (tmp_path / "p.csv").write_text("prompt,num_images\nfour,4\n")
    run(ip, "%imagen4 batch p.csv")
    assert sent(sim)["four"]["num_images"] == "4"


@pytest.mark.parametrize("source", ["df['prompt']", 'df["prompt"]', "df.prompt"])
def test_batch_from_a_dataframe_column(ip, sim, source):
    ip.user_ns["df"] = Frame({"prompt": ["p one", "p two"], "other": [1, 2]})
    r = run(ip, f"%imagen4 batch {source} -s 1 -o res")
    assert r.result.error_in_exec is None, r.text
    assert set(sent(sim)) == {"p one", "p two"} and ip.user_ns["res"].ok
    ip.user_ns.pop("df")


@pytest.mark.parametrize("line, needle", [
    ("%imagen4 batch", "needs a source"),
    ("%imagen4 batch -n 2", "needs a source"),
    ("%imagen4 batch nothing_here", "No variable named 'nothing_here'"),
    ("%imagen4 batch missing.csv", "No file missing.csv"),
    ("%imagen4 batch noprompt.csv", "no 'prompt' column (columns: text, seed)"),
    ("%imagen4 batch empty.csv", "has no rows"),
    ("%imagen4 batch df['nope']", "df has no column or key 'nope' (columns: prompt)"),
    ("%imagen4 batch df.nope", "df has no attribute 'nope'"),
    ("%imagen4 batch df.__class__", "private attribute"),
    ("%imagen4 batch df[0:2]", "one literal subscript"),
    ("%imagen4 batch __import__('os').system('touch pwned')", "is not a list variable"),
    ("%imagen4 batch prompts_ok+prompts_ok", "is not a list variable"),
    ("%imagen4 batch prompts_ok + prompts_ok", "unrecognized arguments: + prompts_ok"),
    ("%imagen4 batch one_prompt", "takes a list of prompts"),
    ("%imagen4 batch prompts_ok -a 2:1", "Item 0 ('fine')"),
    ("%imagen4 batch prompts_bad", "Item 1"),
    ("%imagen4 batch prompts_ok -c 0", "concurrency must be 1 or more"),
    ("%imagen4 batch prompts_ok -c x", "invalid int value"),
    ("%imagen4 batch prompts_ok --wait --no-wait", "either --wait or --no-wait"),
    ("%imagen4 batch prompts_ok -o 1x", "Python variable name"),
    ("%imagen4 batch prompts_ok -s {undefined}", "names no variable `undefined`"),
    ("%imagen4 batch prompts_ok --frobnicate", "unrecognized arguments"),
])
def test_batch_bad_sources_and_options_are_short_errors_and_send_nothing(ip, sim, tmp_path, line, needle):
    (tmp_path / "noprompt.csv").write_text("text,seed\nx,1\n")
    (tmp_path / "empty.csv").write_text("prompt,seed\n")
    ip.user_ns.update(df=Frame({"prompt": ["x"]}), prompts_ok=["fine"], prompts_bad=["fine", ""],
                      one_prompt="just one")
    r = run(ip, line)
    assert_short_error(r, needle)
    assert sim.count() == 0 and not (tmp_path / "pwned").exists()
    for name in ("df", "prompts_ok", "prompts_bad", "one_prompt"):
        ip.user_ns.pop(name)


def test_batch_no_wait_returns_at_once_and_the_table_replaces_its_placeholder(ip, sim):
    sim.next_outcomes.extend([{"generation_time": 0.6}] * 2)
    ip.user_ns["prompts"] = ["slow one", "slow two"]
    with capture_output() as cap:
        t0 = time.monotonic()
        result = ip.run_cell("%imagen4 batch prompts --no-wait -o res")
        elapsed = time.monotonic() - t0
        res = ip.user_ns["res"]  # bound at once
        running = not all(i.done for i in res)
        again = ip.run_cell("%imagen4 batch prompts --no-wait")  # the same batch while it is being sent
        res.wait(15)
        for t in threading.enumerate():
            if t.name == "imagen4-batch-table":
                t.join(5)
    r = Run(cap, result)
    assert elapsed < 0.5 and running and result.error_in_exec is None, r.text
    assert again.error_in_exec is not None and "still being submitted" in r.text, r.text
    placeholder = [o for o in r.outputs if "table appears here" in o["data"].get("text/plain", "")]
    assert len(placeholder) == 1
    did = placeholder[0]["transient"]["display_id"]
    updates = [o for o in r.outputs if o["update"] and o["transient"].get("display_id") == did]
    assert updates and "imagen4 batch</b>" in updates[-1]["data"]["text/html"] and res.ok
    assert len(creates(sim)) == 2
    r = run(ip, "%imagen4 batch prompts -o res")  # the same batch again: its finished tasks, no new ones
    assert len(creates(sim)) == 2 and [i.origin for i in ip.user_ns["res"]] == ["reused", "reused"]
    ip.user_ns.pop("prompts")


def test_batch_text_mode_prints_rows(ip, sim):
    ip.imagen4.display_mode = "text"
    ip.user_ns["prompts"] = ["text one"]
    r = run(ip, "%imagen4 batch prompts")
    assert "[imagen4] batch: 1 items: 1 success" in r.text and "0  success  task_" in r.text, r.text
    ip.user_ns.pop("prompts")


def test_history_export_csv_and_json(ip, sim, tmp_path):
    import csv

    run(ip, "%%imagen4 --wait -s 1\nexported, one", "%%imagen4 --wait -s 2\nexported two")
    r = run(ip, "%imagen4 history --export out/tasks.csv")
    path = tmp_path / "out" / "tasks.csv"
    assert r.result.error_in_exec is None and f"Exported 2 task(s) to {path}" in r.text + str(r.outputs)
    rows = list(csv.DictReader(path.open()))
    assert [row["prompt"] for row in rows] == ["exported, one", "exported two"]
    assert rows[0]["image_paths"].startswith("../.imagen4/")  # relative to the exported file
    r = run(ip, "%imagen4 history --export tasks.json")
    assert "Exported 2 task(s)" in str(r.outputs) and len(json.loads((tmp_path / "tasks.json").read_text())) == 2
    assert_short_error(run(ip, "%imagen4 history --export tasks.txt"), ".csv or a .json file")
    assert_short_error(run(ip, "%imagen4 history --export t.csv --search fox"), "whole history")
    assert not (tmp_path / "t.csv").exists()
