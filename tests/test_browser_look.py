"""What a person sees, measured in a real browser (JupyterLab 4, headless Debian chromium), in the light and dark
themes at 1400 px and at 800 px with the file browser open: the history table, a batch table and the panel
(controls, task list, gallery with 16:9 and 9:16 images) keep their key columns in view, never scroll sideways,
show images whole; a card whose kernel restarted, or whose page reloaded, stops turning and says what to run.
Screenshots land in test-artifacts/ (`look-<theme>-<width>.png`, `look-card-*.png`).
"""
from __future__ import annotations

import os
import time

import pytest
from conftest import KEY
from lab_util import (
    LabServer,
    artifacts_on_failure,
    browser,
    browser_marks,
    lab_on_simulator,
    run_cell_done,
    set_theme,
    shot,
    truncated_labels,
    wait_lab_kernel_idle,
    watch_console,
)

from imagen4_jupyter.api.cards import LIVE_SECONDS
from imagen4_jupyter.simulator import Simulator

pytestmark = browser_marks(420)

PROMPT = ("a grey heron at dawn over a misty lake, long exposure, golden light on the reeds, a wooden jetty in "
          "the foreground and hills fading into the haze behind")
CELLS = [
    "%load_ext imagen4_jupyter\n%config Imagen4Magics.poll_interval = 0.05",
    "%imagen4 panel",
    f"%%imagen4 --wait -a 16:9 -s 21\n{PROMPT}",
    f"%%imagen4 --wait -a 9:16 -s 22\n{PROMPT}, tall",
    "%imagen4 history --limit 5",
    "from imagen4_jupyter import generate_many\n"
    f"generate_many([{PROMPT!r} + ' one', {PROMPT!r} + ' two'], aspect_ratio='16:9', seed=3, progress=False)",
]

# Whether each key column's cells (by header name) are inside the visible area: the window, and the clip box of
# every ancestor whose overflow-x is not visible. Returns the ones that are not, and each scroller's overflow.
KEY_COLUMNS_JS = """([sel, keys]) => {
  const out = {hidden: [], scrolls: [], rows: 0};
  const clipOf = (el) => {
    let left = 0, right = window.innerWidth;
    for (let n = el.parentElement; n; n = n.parentElement) {
      const cs = getComputedStyle(n);
      if (cs.overflowX !== 'visible') {
        const r = n.getBoundingClientRect();
        left = Math.max(left, r.left); right = Math.min(right, r.right);
      }
    }
    return [left, right];
  };
  for (const table of document.querySelectorAll(sel)) {
    const heads = Array.from(table.querySelectorAll('thead th')).map(th => th.textContent.trim());
    for (let n = table.parentElement; n && !n.classList.contains('jp-Cell'); n = n.parentElement)
      if (n.scrollWidth > n.clientWidth + 1 && getComputedStyle(n).overflowX !== 'hidden')
        out.scrolls.push(n.className + ' ' + n.scrollWidth + '>' + n.clientWidth);
    for (const tr of table.querySelectorAll('tbody tr')) {
      out.rows += 1;
      keys.forEach(k => {
        const td = tr.children[heads.indexOf(k)];
        if (!td) { out.hidden.push(k + ': no column'); return; }
        const r = td.getBoundingClientRect(), [left, right] = clipOf(td);
        if (r.width < 20 || r.left < left - 1 || r.right > right + 1)
          out.hidden.push(k + ' ' + [r.left, r.right, left, right].map(Math.round).join(','));
      });
    }
  }
  return out;
}"""

# Task ids: never broken over two lines, their end always in view, the whole id in the title and the text
TASK_IDS_JS = """(sel) => Array.from(document.querySelectorAll(sel + ' .imagen4-tid')).map(t => {
  const range = document.createRange();
  range.selectNodeContents(t.lastChild);  // the id's end: a text node after the head that gives way
  const tail = range.getBoundingClientRect(), box = t.getBoundingClientRect();
  const cell = t.closest('td, .imagen4-task-line') || t.parentElement;
  const c = cell.getBoundingClientRect();
  return {title: t.title, text: t.textContent, inner: t.innerText, height: box.height,
          lines: new Set(Array.from(t.getClientRects()).map(r => Math.round(r.top))).size,
          tailIn: tail.width > 0 && tail.right <= c.right + 1, headWidth: t.firstElementChild.clientWidth,
          cut: t.firstElementChild.scrollWidth > t.firstElementChild.clientWidth};
})"""

# Images shown whole: each <img>'s box has the ratio of its pixels, or object-fit contain draws it whole inside
IMAGES_JS = """(sel) => Array.from(document.querySelectorAll(sel)).filter(i => i.naturalWidth).map(i => {
  const fit = getComputedStyle(i).objectFit;
  return {natural: i.naturalWidth / i.naturalHeight, shown: i.clientWidth / i.clientHeight, fit,
          whole: fit === 'contain' || fit === 'scale-down' ||
                 Math.abs(i.clientWidth / i.clientHeight - i.naturalWidth / i.naturalHeight) < 0.04 *
                 (i.naturalWidth / i.naturalHeight)};
})"""

# The dates of the history table: each on one line
DATES_JS = """() => Array.from(document.querySelectorAll('.imagen4-history .imagen4-when'))
  .map(s => ({text: s.textContent, height: s.getBoundingClientRect().height,
              lines: new Set(Array.from(s.getClientRects()).map(r => Math.round(r.top))).size}))"""

# Animations still running inside outputs (a card that turns)
RUNNING_JS = """() => document.getAnimations().filter(a => a.playState === 'running' && a.effect && a.effect.target
  && a.effect.target.closest && a.effect.target.closest('.jp-OutputArea-output')).length"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_on_simulator(tmp_path_factory.mktemp("lab-look"), KEY, queue_time=(0.1, 0.2), generation_time=(0.3, 0.5),
                          image_scale=0.25) as server:
        yield server


def _cell(page, i):
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def _run(page, i):
    run_cell_done(page, i, timeout=90_000)


def _file_browser(page, shown: bool) -> None:
    visible = page.evaluate("() => { const f = document.querySelector('#filebrowser');"
                            " return !!f && f.getBoundingClientRect().width > 0; }")
    if visible != shown:
        page.locator(".jp-SideBar [data-id='filebrowser']").first.click()
        time.sleep(0.6)


def test_tables_panel_and_gallery_fit_in_light_and_dark_at_1400_and_800_with_the_file_browser(lab):
    lab.write_notebook("look.ipynb", CELLS)
    with browser() as chromium:
        context = chromium.new_context(viewport={"width": 1400, "height": 2400})
        page = context.new_page()
        page.set_default_timeout(30_000)
        console = watch_console(page)
        with artifacts_on_failure(page, "look", console):
            page.goto(lab.url(f"/lab/workspaces/l{os.getpid()}/tree/look.ipynb"))
            wait_lab_kernel_idle(page)
            page.keyboard.press("Escape")
            for i in range(len(CELLS)):
                _run(page, i)
            _cell(page, 4).locator(".imagen4-history").wait_for()
            _cell(page, 5).locator(".imagen4-batch-table").wait_for()
            page.wait_for_function("() => document.querySelectorAll('.imagen4-gallery img.imagen4-thumb').length >= 2"
                                   " && Array.from(document.querySelectorAll('.imagen4-gallery img'))"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
            # every card names its model, the standard one too
            assert "standard · 16:9 · 1 image · seed 21" in _cell(page, 2).locator(".imagen4-card").inner_text()
            # the panel: ultra's image counts look disabled and say why; a click changes nothing
            panel = page.locator(".imagen4-panel")
            panel.locator(".imagen4-model button", has_text="ultra").click()
            page.wait_for_function("() => !!document.querySelector('.imagen4-num.imagen4-max-1')")
            two = panel.locator(".imagen4-num button", has_text="2")
            assert float(two.evaluate("b => getComputedStyle(b).opacity")) < 0.6
            assert "ultra makes at most 1 image" in two.get_attribute("title")
            two.click()
            time.sleep(0.5)
            assert panel.locator(".imagen4-num button.mod-active").inner_text().strip() == "1"
            assert "imagen4-error" not in panel.locator(".imagen4-reason").inner_html()  # a hint, not an error
            panel.locator(".imagen4-model button", has_text="standard").click()
            # the panel's textareas: their right border inside the panel
            for sel in (".imagen4-prompt", ".imagen4-negative"):
                box = panel.locator(f"{sel} textarea").bounding_box()
                outer = panel.bounding_box()
                assert box["x"] + box["width"] <= outer["x"] + outer["width"] + 0.5, (sel, box, outer)

            results = {}
            for theme in ("JupyterLab Light", "JupyterLab Dark"):
                if theme != "JupyterLab Light":
                    set_theme(page, theme)
                for width, files in ((1400, False), (800, True)):
                    page.set_viewport_size({"width": width, "height": 2400})
                    _file_browser(page, files)
                    time.sleep(0.6)
                    name = f"look-{theme.split()[-1].lower()}-{width}"
                    notebook_width = page.locator(".jp-Notebook").bounding_box()["width"]
                    if files:
                        assert notebook_width < 620, (name, notebook_width)  # the laptop layout, really
                    history = page.evaluate(KEY_COLUMNS_JS, [".imagen4-history", ["state", "credits", "task id",
                                                                                   "images"]])
                    batch = page.evaluate(KEY_COLUMNS_JS, [".imagen4-batch-table", ["state", "task id", "images"]])
                    assert history["rows"] >= 2 and batch["rows"] == 2, (name, history, batch)
                    assert not history["hidden"] and not history["scrolls"], (name, history)
                    assert not batch["hidden"] and not batch["scrolls"], (name, batch)
                    # the prompt gives way: one line with an ellipsis, the whole prompt on hover
                    clipped = page.evaluate("""() => Array.from(document.querySelectorAll(
                        '.imagen4-history tbody tr td:first-child > div:nth-child(2)')).map(d =>
                        [d.scrollWidth > d.clientWidth, d.title.length, d.getClientRects().length])""")
                    assert all(c[1] > 0 and c[2] == 1 for c in clipped), (name, clipped)
                    if files:
                        assert any(c[0] for c in clipped), (name, clipped)  # a long prompt is cut at 800 px
                    dates = page.evaluate(DATES_JS)
                    cut_dates = page.evaluate("() => Array.from(document.querySelectorAll('.imagen4-history "
                                              ".imagen4-when')).filter(s => s.parentElement.scrollWidth > "
                                              "s.parentElement.clientWidth).length")
                    assert cut_dates == 0, name  # a date is never cut short, even where the prompt gives way
                    cut_heads = page.evaluate("() => Array.from(document.querySelectorAll('.imagen4-history th, "
                                              ".imagen4-batch-table th')).filter(h => h.textContent !== 'task' && "
                                              "h.textContent !== 'prompt' && h.scrollWidth > h.clientWidth)"
                                              ".map(h => h.textContent)")
                    assert cut_heads == [], (name, cut_heads)  # the key columns' headers read whole
                    assert len(dates) == history["rows"], (name, dates)
                    for d in dates:
                        assert d["lines"] == 1 and d["height"] < 24, (name, d)
                    for sel in (".imagen4-history", ".imagen4-batch-table", ".imagen4-tasks"):
                        ids = page.evaluate(TASK_IDS_JS, sel)
                        assert ids, (name, sel)
                        for t in ids:
                            assert t["text"] == t["title"] and t["title"].startswith("task_"), (name, sel, t)
                            assert t["inner"] == t["title"], (name, sel, t)  # what a copy takes: the whole id
                            assert t["lines"] == 1 and t["height"] < 24 and t["tailIn"], (name, sel, t)
                            assert t["headWidth"] >= 20, (name, sel, t)  # more than a sliver of its start
                            if width == 1400 and sel != ".imagen4-tasks":
                                assert not t["cut"], (name, sel, t)  # room enough: the whole id
                    # the panel: nothing runs out of it, nothing scrolls sideways, no label cut short
                    assert truncated_labels(page) == [], (name, truncated_labels(page))
                    scroll = page.evaluate("() => { const p = document.querySelector('.imagen4-panel');"
                                           " return [p.scrollWidth, p.clientWidth]; }")
                    assert scroll[0] <= scroll[1] + 1, (name, scroll)
                    # images whole: gallery thumbnails and the tables' thumbnails at their natural ratio
                    thumbs = page.evaluate(IMAGES_JS, ".imagen4-gallery img.imagen4-thumb")
                    ratios = sorted(round(t["natural"], 2) for t in thumbs)
                    assert ratios[0] < 0.6 and ratios[-1] > 1.7, (name, thumbs)  # 9:16 and 16:9, uncropped
                    assert all(t["whole"] for t in thumbs), (name, thumbs)
                    table_thumbs = page.evaluate(IMAGES_JS, ".imagen4-history img, .imagen4-batch-table img")
                    assert table_thumbs and all(t["whole"] for t in table_thumbs), (name, table_thumbs)
                    _cell(page, 1).evaluate("c => c.scrollIntoView({block: 'start'})")
                    time.sleep(0.3)
                    shot(page, name + "-panel")
                    _cell(page, 4).evaluate("c => c.scrollIntoView({block: 'start'})")
                    time.sleep(0.3)
                    shot(page, name)
                    results[name] = notebook_width
            set_theme(page, "JupyterLab Light")  # the theme is a server setting
            assert len(results) == 4, results
        context.close()


def test_a_card_stops_turning_after_a_restart_and_a_reload_and_says_what_to_run(tmp_path_factory):
    # a task that stays in flight for a minute: its card turns while the kernel updates it, and no longer
    with Simulator(api_keys=(KEY,), queue_time=(0.1, 0.1), generation_time=(90, 90), image_scale=0.25) as sim:
        lab = LabServer(tmp_path_factory.mktemp("lab-card"), {"APIKLEY_BASE_URL": sim.url, "APIKLEY_API_KEY": KEY})
        lab.start()
        try:
            lab.write_notebook("card.ipynb", ["%load_ext imagen4_jupyter\n%config Imagen4Magics.poll_interval = 0.2",
                                              "%%imagen4 --no-wait -s 9\na slow lighthouse", "%imagen4 resume"])
            with browser() as chromium:
                context = chromium.new_context(viewport={"width": 1200, "height": 1200})
                page = context.new_page()
                page.set_default_timeout(30_000)
                console = watch_console(page)
                with artifacts_on_failure(page, "look-card", console):
                    page.goto(lab.url(f"/lab/workspaces/c{os.getpid()}/tree/card.ipynb"))
                    wait_lab_kernel_idle(page)
                    page.keyboard.press("Escape")
                    _run(page, 0)
                    _run(page, 1)
                    card = _cell(page, 1).locator(".imagen4-card")
                    page.wait_for_function("() => /generating/.test((document.querySelectorAll('.jp-Cell')[1]"
                                           ".querySelector('.imagen4-card') || {}).textContent || '')", timeout=30_000)
                    task_id = card.get_attribute("data-task-id")
                    assert task_id and task_id.startswith("task_")
                    # a live card: updated each second, turning, its "stopped changing?" line hidden
                    first = int(card.get_attribute("data-updated"))
                    time.sleep(2.5)
                    assert int(card.get_attribute("data-updated")) > first  # the kernel still updates it
                    assert page.evaluate(RUNNING_JS) >= 1
                    stale = card.locator(".imagen4-stale")
                    assert stale.evaluate("s => getComputedStyle(s).visibility") == "hidden"
                    shot(page, "look-card-live", card)

                    # restart the kernel: nobody updates the card any more
                    _cell(page, 0).locator(".jp-InputPrompt").click()
                    page.keyboard.press("Escape")
                    page.keyboard.press("0")
                    page.keyboard.press("0")  # command mode's "restart the kernel", which asks first
                    page.locator(".jp-Dialog button.jp-mod-accept").click()
                    wait_lab_kernel_idle(page)
                    stopped = int(card.get_attribute("data-updated"))
                    time.sleep(LIVE_SECONDS + 1.5)
                    assert int(card.get_attribute("data-updated")) == stopped  # really nobody updates it
                    assert page.evaluate(RUNNING_JS) == 0  # no spinner on a card whose kernel restarted
                    assert stale.evaluate("s => getComputedStyle(s).visibility") == "visible"
                    said = card.inner_text()
                    assert "stopped changing? run" in said and f"%imagen4 show {task_id}" in said, said
                    assert "%imagen4 resume after a kernel restart" in said and "updated " in said, said
                    # the ring closed: a still circle, not a frozen spinner
                    ring = card.locator(".imagen4-mark").evaluate(
                        "m => [getComputedStyle(m).borderRightColor, getComputedStyle(m).borderTopColor]")
                    assert ring[0] == ring[1], ring
                    shot(page, "look-card-after-restart", card)

                    # save and reload the page: the saved card does not turn for ever either
                    page.keyboard.press("Control+s")
                    time.sleep(1.0)
                    page.reload()
                    wait_lab_kernel_idle(page)
                    card = _cell(page, 1).locator(".imagen4-card")
                    card.wait_for()
                    assert int(card.get_attribute("data-updated")) == stopped
                    time.sleep(LIVE_SECONDS + 1.5)
                    assert page.evaluate(RUNNING_JS) == 0
                    assert card.locator(".imagen4-stale").evaluate("s => getComputedStyle(s).visibility") == "visible"
                    shot(page, "look-card-after-reload", card)

                    # %imagen4 resume follows the task again: a live card of the same task, its own output
                    page.keyboard.press("Escape")
                    _run(page, 0)  # the new kernel loads the extension again
                    _run(page, 2)
                    again = _cell(page, 2).locator(f".imagen4-card[data-task-id='{task_id}']")
                    again.wait_for(timeout=30_000)
                    assert "generating" in again.inner_text() or "waiting" in again.inner_text()
                    assert sim.count("createTask") == 1  # followed, never sent again
                    shot(page, "look-card-resumed", _cell(page, 2))
                context.close()
        finally:
            lab.stop()
