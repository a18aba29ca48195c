"""JupyterLab / Notebook 7 server and headless Debian chromium for browser tests (see the browser-testing recipe).

The server runs on loopback with a random token and private config/data/runtime dirs; kernels inherit
`extra_env` (the simulator's URL and a test key). Playwright drives `/usr/bin/chromium`; never downloads one.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("IMAGEN4_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """`python -m jupyterlab` on 127.0.0.1 in a temp tree; `url(path)` adds the token."""

    def __init__(self, base: Path, extra_env: dict[str, str]):
        self.base = Path(base)
        self.root = self.base / "root"
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.extra_env = extra_env
        self.proc: subprocess.Popen | None = None
        self.log_path = self.base / "server.log"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.origin}{path}{sep}token={self.token}"

    def start(self, timeout: float = 60.0) -> "LabServer":
        for sub in ("root", "ws", "settings", "config", "data", "runtime", "ipython"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        notif = self.base / "settings" / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "APIKLEY", "JPY_"))}
        env.update({
            "JUPYTER_CONFIG_DIR": str(self.base / "config"), "JUPYTER_DATA_DIR": str(self.base / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"), "IPYTHONDIR": str(self.base / "ipython"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            **self.extra_env,
        })
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               f"--ServerApp.root_dir={self.root}", f"--LabApp.workspaces_dir={self.base / 'ws'}",
               f"--LabApp.user_settings_dir={self.base / 'settings'}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url("/api/status"), timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"JupyterLab did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            req = urllib.request.Request(self.origin + "/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {self.token}"})
            urllib.request.urlopen(req, timeout=5).close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def write_notebook(self, name: str, cells: list[str]) -> Path:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
        path = self.root / name
        nbformat.write(nb, path)
        return path


@contextmanager
def browser():
    """A headless Debian chromium driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def artifacts_on_failure(page, name: str, console: list[str]):
    """On an exception: save a screenshot, the page HTML and the console errors under test-artifacts/."""
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"), full_page=True)
            (ARTIFACTS / f"{name}-failure.html").write_text(page.content())
        except Exception:
            pass
        (ARTIFACTS / f"{name}-console.txt").write_text("\n".join(console))
        raise


def watch_console(page) -> list[str]:
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    return messages


def wait_lab_kernel_idle(page, timeout: float = 60_000) -> None:
    """JupyterLab: the status bar names the kernel and says Idle (the toolbar indicator says so too early)."""
    page.wait_for_function(
        "() => { const s = document.querySelector('#jp-main-statusbar');"
        " return !!s && /\\|\\s*Idle/.test(s.textContent); }", timeout=timeout)


def wait_nb7_kernel_idle(page, timeout: float = 60_000) -> None:
    """Notebook 7 has no status bar: wait for the execution indicator."""
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', state="attached", timeout=timeout)


def run_cell(page, index: int) -> None:
    """Run the index-th cell the way a person does: click its prompt, Shift+Enter."""
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")


def run_cell_done(page, index: int, timeout: float = 60_000) -> None:
    """`run_cell`, then wait until the cell's prompt shows its execution count (the kernel ran it)."""
    run_cell(page, index)
    page.wait_for_function(f"() => /\\[\\d+\\]/.test(document.querySelectorAll('.jp-Notebook .jp-Cell')[{index}]"
                           ".querySelector('.jp-InputPrompt').textContent)", timeout=timeout)


@contextmanager
def lab_on_simulator(base: Path, key: str, **sim_options):
    """A started `LabServer` whose kernels talk to a fresh simulator (`server.sim`) with `key`; stopped after."""
    from imagen4_jupyter.simulator import Simulator

    with Simulator(api_keys=(key,), **sim_options) as sim:
        server = LabServer(base, {"APIKLEY_BASE_URL": sim.url, "APIKLEY_API_KEY": key})
        server.sim = sim
        server.start()
        try:
            yield server
        finally:
            server.stop()


def has_chromium() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


def browser_marks(timeout: float) -> list:
    """The marks of a browser test module. CI installs chromium and playwright (scripts/test): there a missing
    piece is a failure, never a skip; elsewhere the module is skipped without them."""
    import pytest

    if not os.environ.get("CI"):
        pytest.importorskip("playwright")
        pytest.importorskip("jupyterlab")
    return [pytest.mark.browser, pytest.mark.timeout(timeout),
            pytest.mark.skipif(not has_chromium() and not os.environ.get("CI"),
                               reason="needs Debian's chromium (apt-get install chromium)")]


# -- themes, widths and contrast (what a person sees) ------------------------------------------------
def set_theme(page, name: str) -> None:
    """Switch JupyterLab's theme through the command palette and wait until it applies."""
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.keyboard.type(name)
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.body.dataset.jpThemeName === {name!r}")
    time.sleep(0.5)  # the theme's stylesheet loads after the name changes


# Every visible element under the roots that holds text of its own: its colour against the first opaque
# background up its ancestors (WCAG ratio). Returns [{where, text, ratio, fg, bg}] for those under `minimum`.
CONTRAST_ALL_JS = """([roots, minimum]) => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  const low = [];
  let checked = 0;
  for (const sel of roots) {
    for (const root of document.querySelectorAll(sel)) {
      for (const el of [root, ...root.querySelectorAll('*')]) {
        const own = Array.from(el.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent).join('').trim();
        const isInput = el.tagName === 'TEXTAREA' || el.tagName === 'INPUT' || el.tagName === 'SELECT';
        if (!own && !(isInput && el.value)) continue;
        if (el.tagName === 'STYLE' || el.tagName === 'SCRIPT') continue;
        const box = el.getBoundingClientRect();
        const cs = getComputedStyle(el);
        if (!box.width || !box.height || cs.visibility === 'hidden' || cs.display === 'none') continue;
        let bg = null;
        for (let n = el; n && !bg; n = n.parentElement) {
          const c = rgb(getComputedStyle(n).backgroundColor);
          if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) bg = c.slice(0, 3);
        }
        bg = bg || [255, 255, 255];
        const fg = rgb(cs.color);
        const alpha = (fg.length === 4 ? fg[3] : 1) * Number(cs.opacity || 1);
        const mixed = fg.slice(0, 3).map((v, i) => v * alpha + bg[i] * (1 - alpha));
        const [a, b] = [lum(mixed), lum(bg)].sort((x, y) => y - x);
        const ratio = (a + 0.05) / (b + 0.05);
        checked += 1;
        if (ratio < minimum) low.push({where: sel + ' ' + el.tagName.toLowerCase() + '.' + el.className,
                                       text: (own || el.value).slice(0, 40), ratio: Number(ratio.toFixed(2)),
                                       fg: cs.color, bg: 'rgb(' + bg.join(',') + ')'});
      }
    }
  }
  return {checked, low};
}"""


def low_contrast(page, roots: list[str], minimum: float = 4.5) -> tuple[int, list[dict]]:
    """(how many text elements were measured, those under `minimum`) under the CSS selectors `roots`."""
    found = page.evaluate(CONTRAST_ALL_JS, [roots, minimum])
    return found["checked"], found["low"]


# Panel labels cut short: a button, toggle button, label or caption whose text is wider than its box
TRUNCATED_JS = """(sel) => {
  const out = [];
  for (const el of document.querySelectorAll(sel + ' button, ' + sel + ' .widget-label, ' + sel + ' .imagen4-label')) {
    const box = el.getBoundingClientRect();
    if (!box.width) continue;
    if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1 && el.tagName !== 'BUTTON')
      out.push({text: el.textContent.trim(), scroll: el.scrollWidth, client: el.clientWidth});
  }
  // nothing runs out of the panel, and each task row is as wide as the panel at most
  const panel = document.querySelector(sel);
  if (panel && panel.scrollWidth > panel.clientWidth + 1)
    out.push({text: 'the panel', scroll: panel.scrollWidth, client: panel.clientWidth});
  for (const row of document.querySelectorAll(sel + ' .imagen4-task, ' + sel + ' .imagen4-task-line')) {
    if (row.scrollWidth > row.clientWidth + 1)
      out.push({text: row.textContent.trim().slice(0, 60), scroll: row.scrollWidth, client: row.clientWidth});
  }
  return out;
}"""


def truncated_labels(page, root: str = ".imagen4-panel") -> list[dict]:
    return page.evaluate(TRUNCATED_JS, root)


def shot(page, name: str, locator=None, pad: int = 8) -> Path:
    """Save a screenshot under test-artifacts/ (of `locator`'s box when given, else the viewport)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if locator is None:
        page.screenshot(path=str(path))
    else:
        box = locator.bounding_box()
        size = page.viewport_size
        x, y = max(0, box["x"] - pad), max(0, box["y"] - pad)
        clip = {"x": x, "y": y, "width": min(box["width"] + 2 * pad, size["width"] - x),
                "height": min(box["height"] + 2 * pad, size["height"] - y)}
        page.screenshot(path=str(path), clip=clip)
    return path
