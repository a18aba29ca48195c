"""The magic in real kernels (jupyter_client and nbclient) against the simulator: issue 3's must-shows.

One kernel serves most of the module; the headless run and the kill/resume test start their own.
"""
from __future__ import annotations

import base64
import copy
import json
import time

import pytest
from conftest import KEY
from kernel_util import FAST_CONFIG, Kernel, image_outputs, kernel_env, make_notebook, run_notebook

from imagen4_jupyter.simulator import Simulator

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def ksim():
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.02), generation_time=(0.05, 0.1), image_scale=0.0625,
                   announce=False) as s:  # stands for the real service (no simulator header)
        yield s


@pytest.fixture
def fast(ksim):
    """Quick tasks by default; a test may slow them down and they are reset afterwards."""
    ksim.queue_time, ksim.generation_time = (0.0, 0.02), (0.05, 0.1)
    ksim.next_outcomes.clear()
    yield ksim
    ksim.queue_time, ksim.generation_time = (0.0, 0.02), (0.05, 0.1)


@pytest.fixture(scope="module")
def kdir(tmp_path_factory):
    return tmp_path_factory.mktemp("kernel")


@pytest.fixture(scope="module")
def kernel(ksim, kdir):
    (kdir / "work").mkdir()
    k = Kernel(kdir / "work", kernel_env(ksim.url, KEY, kdir / "ipython"))
    try:
        load = k.execute("%load_ext imagen4_jupyter")
        assert load.ok, load.text()
        assert str(kdir / "work" / ".imagen4" / "history.jsonl") in load.stdout
        assert k.execute(FAST_CONFIG).ok
        yield k
    finally:
        k.close()


def creates(sim) -> list[dict]:
    return [json.loads(r.body) for r in sim.requests if r.endpoint == "createTask"]


def short_error(ex, needle: str) -> None:
    assert not ex.ok, ex.text()
    text = ex.error_text
    assert needle in text, text
    assert "Traceback" not in text and "most recent call" not in text, text
    assert len(text.strip().splitlines()) <= 2, text


# -- interactive: non-blocking cells, updates by display id -------------------------------------------------
def test_interactive_cell_returns_at_once_and_images_update_its_display_ids(kernel, fast):
    fast.generation_time = 3.0
    first = kernel.execute("%%imagen4 -n 2 -o slow\na slow lighthouse at dusk")
    assert first.ok, first.text()
    assert first.seconds < 1.0, first.seconds
    created = first.display_ids()
    assert len(created) == 3  # status card + one slot per image
    card = first.displays()[0]["content"]["data"]
    assert "imagen4-card" in card["text/html"] and "not sent yet" in card["text/plain"]  # queued for the sender

    second = kernel.execute("print(40 + 2, slow.done())")
    assert second.ok and second.stdout.strip() == "42 False"  # the kernel was free while the task ran

    def images_arrived(_msgs):
        ups = [m for m in kernel.updates_for(created[1:]) if "image/png" in m["content"]["data"]]
        return ups if len(ups) == 2 else None

    updates = kernel.wait_for(images_arrived, timeout=30)
    second_done = max(m["_received"] for m in second.messages)
    task_id = kernel.execute("print(slow.task_id)").stdout.strip()
    for up in updates:
        assert up["_received"] > second_done  # after the second cell had finished
        meta = up["content"]["metadata"]["imagen4"]
        assert meta["task_id"] == task_id and meta["request"]["prompt"] == "a slow lighthouse at dusk"
        assert len(meta["sha256"]) == 64 and meta["model"] == "google/imagen4"
        assert base64.b64decode(up["content"]["data"]["image/png"]).startswith(b"\x89PNG")
    card_updates = kernel.updates_for(created[:1])
    assert any(task_id in m["content"]["data"]["text/plain"] for m in card_updates)  # attached once created
    assert any("generating" in m["content"]["data"]["text/plain"] for m in card_updates)
    assert "done" in card_updates[-1]["content"]["data"]["text/plain"]
    # the images never became new outputs of whichever cell ran later
    assert not [m for m in kernel.messages if m["msg_type"] == "display_data"
                and "image/png" in m["content"]["data"]]


def test_every_flag_in_a_kernel(kernel, fast, kdir):
    n = len(creates(fast))
    ex = kernel.execute('%%imagen4 --wait -n 2 -a 9:16 -s 21 --negative "no text" '
                        '--callback-url http://127.0.0.1:9/hook -o flagged --embed full\na paper crane')
    assert ex.ok, ex.text()
    body = creates(fast)[n]
    assert body == {"model": "google/imagen4", "callBackUrl": "http://127.0.0.1:9/hook",
                    "input": {"prompt": "a paper crane", "negative_prompt": "no text", "aspect_ratio": "9:16",
                              "num_images": "2", "seed": "21"}}
    shown = [m for m in kernel.updates_for(ex.display_ids()) if "image/png" in m["content"]["data"]]
    assert len(shown) == 2
    for m in shown:  # --embed full: the original file's bytes
        meta = m["content"]["metadata"]["imagen4"]
        assert meta["path"].startswith(".imagen4/images/")  # relative to the notebook's folder (here: the cwd)
        assert base64.b64decode(m["content"]["data"]["image/png"]) == (kdir / "work" / meta["path"]).read_bytes()
        assert meta["embed"] == "full"
    out = kernel.execute("print(flagged.task_id, len(flagged.images), flagged.wait().task_id == flagged.task_id)")
    assert out.stdout.split()[1:] == ["2", "True"]

    again = kernel.execute("%%imagen4 --wait -n 2 -a 9:16 -s 21 --negative 'no text' --force\na paper crane")
    assert again.ok and len(creates(fast)) == n + 2  # --force: a new task despite the stored result
    none = kernel.execute("%%imagen4 --wait --embed none -s 22\npaths only")
    md = [m for m in kernel.updates_for(none.display_ids()) if "text/markdown" in m["content"]["data"]]
    assert len(md) == 1 and ".png" in md[0]["content"]["data"]["text/markdown"]
    nowait = kernel.execute("%%imagen4 --no-wait -o later\nnot waiting")
    assert nowait.ok and kernel.execute("later.wait(20); print(later.status)").stdout.strip() == "success"


def test_interpolation_and_split_in_a_kernel(kernel, fast):
    assert kernel.execute("subject = 'owl'; mood = 'calm'").ok
    ex = kernel.execute('%%imagen4 --wait\nan {subject} says {"hoot": [1, 2]} and {{subject}}\n---\n{mood} blur')
    assert ex.ok, ex.text()
    body = creates(fast)[-1]["input"]
    assert body["prompt"] == 'an owl says {"hoot": [1, 2]} and {subject}'
    assert body["negative_prompt"] == "calm blur"


@pytest.mark.parametrize("cell, needle", [
    ("%%imagen4 -n 9\nx", "from 1 to 4"),
    ("%%imagen4 -a 21:9\nx", "Aspect ratio '21:9'"),
    ("%%imagen4 --embed huge\nx", "invalid choice"),
    ("%%imagen4 --bogus\nx", "unrecognized arguments: --bogus"),
    ("%%imagen4\n{missing_name} fox", "names no variable `missing_name`"),
    ("%%imagen4 -o 'not a name'\nx", "variable name"),
    ("%imagen4 frobnicate", "Unknown subcommand"),
    ("%imagen4 status ../etc/passwd", "not a valid task id"),
])
def test_bad_input_in_a_kernel_is_short_and_sends_nothing(kernel, fast, cell, needle):
    before = fast.count("createTask"), fast.count("recordInfo")
    short_error(kernel.execute(cell), needle)
    assert (fast.count("createTask"), fast.count("recordInfo")) == before


def test_every_subcommand_in_a_kernel(kernel, fast):
    ex = kernel.execute("%%imagen4 --wait -s 31 -o sub\na <b>bold</b> heron")
    assert ex.ok
    tid = kernel.execute("print(sub.task_id)").stdout.strip()

    hist = kernel.execute("%imagen4 history --search heron --limit 3")
    html = hist.displays()[0]["content"]["data"]["text/html"]
    assert tid in html and "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold" not in html and "<img " in html

    show = kernel.execute(f"%imagen4 show {tid}")
    imgs = [m for m in show.displays() if "image/png" in m["content"]["data"]]
    assert len(imgs) == 1 and imgs[0]["content"]["metadata"]["imagen4"]["task_id"] == tid

    before = fast.count("recordInfo")
    status = kernel.execute(f"%imagen4 status {tid}")
    assert "state: success" in status.text() and fast.count("recordInfo") == before + 1

    credits = kernel.execute("%imagen4 credits")
    assert f"Remaining credits: {fast.credits:,.0f}" in credits.text()

    assert "Nothing pending" in kernel.execute("%imagen4 wait").text()
    assert "Nothing to resume" in kernel.execute("%imagen4 resume").text()

    panel = kernel.execute("%imagen4 panel")
    assert panel.ok, panel.text()
    assert any("application/vnd.jupyter.widget-view+json" in m["content"]["data"] for m in panel.displays()) \
        or "panel is not available" in panel.text()

    help_ = kernel.execute("%%imagen4?")
    assert help_.ok
    page = json.dumps(help_.reply["content"].get("payload", [])) + help_.text()
    for flag in ("--num-images", "--aspect-ratio", "--seed", "--negative", "--callback-url", "--no-wait",
                 "--force", "--out", "--embed", "history [--limit N]"):
        assert flag in page, flag


def test_batch_in_a_kernel_no_wait_updates_its_own_cell_and_headless_style_blocks(kernel, fast, kdir):
    fast.generation_time = 0.8
    assert kernel.execute("batch_prompts = ['k one', 'k two', 'k three']").ok
    first = kernel.execute("%imagen4 batch batch_prompts -c 2 --no-wait -o kb")
    assert first.ok and first.seconds < 1, first.text()
    other = kernel.execute("print('meanwhile', len(kb))")  # the kernel is free
    assert other.stdout.strip() == "meanwhile 3"
    ids = first.display_ids()  # the progress line and the table's placeholder
    assert len(ids) == 2

    def table(msgs):
        return [m for m in msgs if m["msg_type"] == "update_display_data"
                and m["content"]["transient"]["display_id"] == ids[1]
                and "imagen4 batch</b>" in m["content"]["data"].get("text/html", "")]

    kernel.wait_for(table, timeout=30)
    assert "3 success" in table(kernel.updates_for(ids))[-1]["content"]["data"]["text/plain"]
    # no new output lands in the other cell; an update sent while it ran may carry its parent header (ipykernel
    # 7 gives a thread's messages the current parent), but it names the batch's display id, which the
    # front-end finds wherever it is
    assert not [m for m in other.messages if m["msg_type"] == "display_data"]
    assert all(m["content"]["transient"]["display_id"] in ids for m in other.messages
               if m["msg_type"] == "update_display_data")
    (kdir / "work" / "kb.csv").write_text("prompt,seed\nfrom csv,5\n")
    before = fast.count("createTask")
    blocked = kernel.execute("%imagen4 batch kb.csv --wait")
    html = [m["content"]["data"].get("text/html", "") for m in blocked.displays()]
    assert blocked.ok and any("imagen4 batch</b>" in h and "1 success" in h for h in html), blocked.text()
    assert fast.count("createTask") == before + 1
    export = kernel.execute("%imagen4 history --export kb-history.json")
    assert "Exported" in export.text() and (kdir / "work" / "kb-history.json").is_file()


def test_wait_subcommand_blocks_for_pending_tasks(kernel, fast):
    fast.generation_time = 0.8
    a = kernel.execute("%%imagen4 --no-wait\nfirst pending")
    b = kernel.execute("%%imagen4 --no-wait\nsecond pending")
    assert a.seconds < 1 and b.seconds < 1
    w = kernel.execute("%imagen4 wait")
    assert "2 task(s) finished: 2 succeeded" in w.text()
    for ex in (a, b):
        assert [m for m in kernel.updates_for(ex.display_ids()) if "image/png" in m["content"]["data"]]


def test_service_failure_turns_card_into_error(kernel, fast):
    fast.next_outcomes.append({"fail": ("500", "prompt was filtered")})
    ex = kernel.execute("%%imagen4 -o bad\nsomething filtered")
    assert ex.ok
    card_id = ex.display_ids()[0]

    def failed(_msgs):
        ups = kernel.updates_for([card_id])
        return ups and "prompt was filtered" in ups[-1]["content"]["data"]["text/plain"]

    kernel.wait_for(failed, timeout=20)
    last = kernel.updates_for([card_id])[-1]["content"]["data"]
    tid = kernel.execute("print(bad.task_id)").stdout.strip()
    assert tid in last["text/plain"] and "Generation failed" in last["text/html"]


def test_key_absent_from_history_and_outputs(kernel, kdir):
    ex = kernel.execute("%%imagen4 --wait -s 31\na key-free heron")  # a history and an image, whatever ran before
    assert ex.ok, ex.text()
    files = [p for p in (kdir / "work").rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files) and any(p.suffix == ".png" for p in files)  # history, images
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in json.dumps([{k: v for k, v in m.items() if k != "buffers"} for m in kernel.messages],
                                 default=str)


# -- headless: nbclient -------------------------------------------------------------------------------------
def test_headless_notebook_blocks_and_rerun_reuses_byte_identical_images(ksim, fast, tmp_path):
    cwd = tmp_path / "nb"
    cwd.mkdir()
    env = kernel_env(ksim.url, KEY, tmp_path / "ipython")
    cells = [
        "%load_ext imagen4_jupyter",
        FAST_CONFIG,
        "season = 'spring'",
        "%%imagen4 -n 2 -s 11 -a 16:9\nA lighthouse in {season}, JSON {\"style\": \"ink\"}",
        "%%imagen4 -s 12 --embed full\na red door\n---\nno people",
        "from imagen4_jupyter import get_session; print('pending', len(get_session().pending()))",
        "%%imagen4 --no-wait -s 13\na late bloom",
        "%imagen4 wait",
    ]
    original = make_notebook(cells)
    fast.generation_time = (0.3, 0.5)
    n0 = ksim.count("createTask")
    first = run_notebook(copy.deepcopy(original), cwd, env)
    assert ksim.count("createTask") == n0 + 3
    imgs = [image_outputs(c.outputs) for c in first.cells]
    assert [len(x) for x in imgs[3:7]] == [2, 1, 0, 1]  # the --no-wait cell got its image while `wait` ran
    assert first.cells[5].outputs[0]["text"] == "pending 0\n"  # the cells above blocked until done
    for out in imgs[3] + imgs[4]:
        meta = out["metadata"]["imagen4"]
        assert meta["task_id"].startswith("task_") and meta["model"] == "google/imagen4"
        assert len(meta["sha256"]) == 64 and meta["times"]["cost_time_ms"] is not None
    assert imgs[3][0]["metadata"]["imagen4"]["request"]["prompt"] == 'A lighthouse in spring, JSON {"style": "ink"}'
    assert imgs[4][0]["metadata"]["imagen4"]["request"]["negative_prompt"] == "no people"

    second = run_notebook(copy.deepcopy(original), cwd, env)
    assert ksim.count("createTask") == n0 + 3  # every generating cell is seeded: all reused
    again = [image_outputs(c.outputs) for c in second.cells]

    def pixels(outs):
        return [base64.b64decode(o["data"].get("image/png") or o["data"]["image/jpeg"]) for o in outs]

    for i in (3, 4, 6):
        assert pixels(again[i]) == pixels(imgs[i]) and pixels(again[i])
    assert "Reused" in json.dumps(second.cells[3].outputs)
    saved = json.dumps(first) + json.dumps(second)
    assert KEY not in saved
    files = [p for p in cwd.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files)  # the history is among what is searched
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


# -- kill the kernel with tasks in flight, resume in a new one --------------------------------------------------
def test_kill_with_five_in_flight_then_resume_finishes_them(ksim, fast, tmp_path):
    cwd = tmp_path / "k"
    cwd.mkdir()
    env = kernel_env(ksim.url, KEY, tmp_path / "ipython")
    fast.queue_time, fast.generation_time = 0.5, 3.0
    k = Kernel(cwd, env)
    try:
        assert k.execute("%load_ext imagen4_jupyter").ok and k.execute(FAST_CONFIG).ok
        for i in range(5):
            ex = k.execute(f"%%imagen4 --no-wait -s {i}\nin flight number {i}")
            assert ex.ok and ex.seconds < 1
    finally:
        k.kill()
    n = ksim.count("createTask")
    assert n >= 5
    history = (cwd / ".imagen4" / "history.jsonl").read_text().splitlines()
    submitted = [json.loads(x)["task_id"] for x in history if json.loads(x)["event"] == "submitted"]
    assert len(submitted) == 5
    assert not any(json.loads(x)["event"] == "succeeded" for x in history)

    k2 = Kernel(cwd, env)
    try:
        load = k2.execute("%load_ext imagen4_jupyter")
        assert "5 unfinished task(s) — run %imagen4 resume" in load.stdout
        assert k2.execute(FAST_CONFIG).ok
        t0 = time.monotonic()
        resume = k2.execute("%imagen4 resume")
        assert resume.ok and "Resuming 5 unfinished task(s)" in resume.text()
        assert resume.seconds < 2
        wait = k2.execute("%imagen4 wait")
        assert "5 task(s) finished: 5 succeeded" in wait.text(), wait.text()
        assert time.monotonic() - t0 < 30
        images = [m for m in k2.updates_for(resume.display_ids()) if "image/png" in m["content"]["data"]]
        assert sorted(m["content"]["metadata"]["imagen4"]["task_id"] for m in images) == sorted(submitted)
    finally:
        k2.close()
    assert ksim.count("createTask") == n  # resuming created nothing
    events = [json.loads(x) for x in (cwd / ".imagen4" / "history.jsonl").read_text().splitlines()]
    assert sorted(e["task_id"] for e in events if e["event"] == "succeeded") == sorted(submitted)
