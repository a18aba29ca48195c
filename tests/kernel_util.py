"""Real IPython kernels for tests: started with the simulator's URL and key, driven through jupyter_client.

`Kernel` keeps every iopub message it has read (with the time it arrived), so a test can run a cell,
run another, and later look for the `update_display_data` messages that belong to the first one.
"""
from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client import KernelManager

import imagen4_jupyter

REPO = Path(imagen4_jupyter.__file__).resolve().parents[1]
FAST_CONFIG = "%config Imagen4Magics.poll_interval = 0.05"


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `cond()` until it is truthy (its value is returned) or raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def kernel_env(base_url: str, key: str, ipython_dir: Path) -> dict[str, str]:
    """The test process's environment plus the simulator, a private IPYTHONDIR and this checkout."""
    env = dict(os.environ)
    env.update(APIKLEY_BASE_URL=base_url, APIKLEY_API_KEY=key, IPYTHONDIR=str(ipython_dir),
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    env.pop("JPY_SESSION_NAME", None)
    return env


class Execution:
    """One execute request: its reply, its iopub messages, and how long the reply took."""

    def __init__(self, msg_id: str, reply: dict, messages: list[dict], seconds: float):
        self.msg_id, self.reply, self.messages, self.seconds = msg_id, reply, messages, seconds

    @property
    def ok(self) -> bool:
        return self.reply["content"]["status"] == "ok"

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")

    @property
    def error_text(self) -> str:
        """Everything an error shows: stderr plus the traceback lines of an `error` message."""
        parts = [self.stderr]
        for m in self.messages:
            if m["msg_type"] == "error":
                parts.append("\n".join(m["content"]["traceback"]))
        return "".join(parts)

    def displays(self) -> list[dict]:
        return [m for m in self.messages if m["msg_type"] in ("display_data", "execute_result")]

    def display_ids(self) -> list[str]:
        return [m["content"]["transient"]["display_id"] for m in self.displays()
                if (m["content"].get("transient") or {}).get("display_id")]

    def text(self) -> str:
        """All text the cell showed: streams, text/plain of outputs, error tracebacks."""
        bits = [self.stdout, self.error_text]
        bits += [m["content"]["data"].get("text/plain", "") for m in self.displays()]
        return "\n".join(bits)


class Kernel:
    """A started kernel with a blocking client; `close()` shuts it down (or `kill()` does it hard)."""

    def __init__(self, cwd: Path, env: dict[str, str], *, startup_timeout: float = 60):
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.blocking_client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=startup_timeout)
        self.messages: list[dict] = []  # every iopub message read so far, with `_received` (monotonic)
        self._drain(0.2)

    # -- reading iopub --------------------------------------------------------------------------
    def _read(self, timeout: float) -> dict | None:
        try:
            msg = self.kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return None
        msg["_received"] = time.monotonic()
        self.messages.append(msg)
        return msg

    def _drain(self, quiet: float) -> None:
        while self._read(quiet) is not None:
            pass

    def wait_for(self, predicate: Callable[[list[dict]], Any], timeout: float = 30) -> Any:
        """Read iopub until `predicate(all messages)` is truthy; returns its value or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.messages)
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met in {timeout} s; last messages: "
                                   f"{[m['msg_type'] for m in self.messages[-10:]]}")
            self._read(min(left, 0.5))

    # -- running code ---------------------------------------------------------------------------
    def execute(self, code: str, *, allow_stdin: bool = True, timeout: float = 60) -> Execution:
        """Run one cell like an interactive front-end (allow_stdin true) and wait for its idle status."""
        t0 = time.monotonic()
        msg_id = self.kc.execute(code, allow_stdin=allow_stdin, stop_on_error=False)
        reply = None
        deadline = t0 + timeout
        while reply is None:
            try:
                msg = self.kc.get_shell_msg(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no reply in {timeout} s to {code[:60]!r}") from None
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg
        seconds = time.monotonic() - t0

        def idle(msgs: list[dict]) -> bool:
            return any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                       and m["parent_header"].get("msg_id") == msg_id for m in msgs)

        self.wait_for(idle, timeout=max(1.0, deadline - time.monotonic()))
        mine = [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id]
        return Execution(msg_id, reply, mine, seconds)

    def updates_for(self, display_ids: list[str]) -> list[dict]:
        """`update_display_data` messages (from any parent) that target these display ids."""
        wanted = set(display_ids)
        return [m for m in self.messages if m["msg_type"] == "update_display_data"
                and (m["content"].get("transient") or {}).get("display_id") in wanted]

    def kill(self) -> None:
        """End the kernel process at once (no shutdown request): what a crash or `kill -9` does."""
        import signal

        self.kc.stop_channels()
        self.km.signal_kernel(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.km.shutdown_kernel(now=True)  # only cleans up now: the process is gone

    def close(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=True)


def image_outputs(outputs: list[dict]) -> list[dict]:
    """The image outputs of a notebook cell (nbformat dicts)."""
    return [o for o in outputs if o.get("output_type") in ("display_data", "execute_result")
            and {"image/png", "image/jpeg"} & set(o.get("data", {}))]


def make_notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def run_notebook(nb: nbformat.NotebookNode, cwd: Path, env: dict[str, str], timeout: float = 120):
    """Execute a notebook headlessly with nbclient (as nbconvert --execute and papermill do)."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb
