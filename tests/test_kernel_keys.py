"""Keys and addresses in a real kernel: an address from a .env with the key from the environment is refused in one
line until `%imagen4 trust`; the webhook key typed at `%imagen4 webhook-key` (masked) signs the callbacks and is in
no file afterwards (the kernel's IPython history database, the notebook folder), while `%config
Imagen4Magics.webhook_key = ...` is refused in one line and keeps nothing."""
from __future__ import annotations

import pytest
from conftest import KEY
from kernel_util import FAST_CONFIG, Kernel, kernel_env
from test_kernel_service import answering, one_line_error

from imagen4_jupyter.simulator import Simulator

pytestmark = pytest.mark.kernel
WEBHOOK = "whk-typed-8c1f0a77d2e94b35"  # only ever typed at the masked prompt
IN_CONFIG = "whk-config-5d0e93b1"  # what a user might write in a %config line (IPython saves that line)


@pytest.fixture(scope="module")
def wsim():
    with Simulator(api_keys=(KEY,), queue_time=(0.0, 0.02), generation_time=(0.05, 0.1), image_scale=0.0625,
                   webhook_key=WEBHOOK) as s:
        yield s


def files_holding(needle: str, *folders) -> list:
    return [p for folder in folders for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_trust_and_the_webhook_key_in_a_kernel(wsim, tmp_path):
    work, ipython = tmp_path / "work", tmp_path / "ipython"
    (work / ".git").mkdir(parents=True)
    (work / ".env").write_text(f"APIKLEY_BASE_URL={wsim.url}\n")  # the key stays in the environment
    (tmp_path / ".env").write_text("APIKLEY_BASE_URL=https://collector.example\n")  # above the project root
    env = kernel_env(wsim.url, KEY, ipython)
    env.pop("APIKLEY_BASE_URL")
    env.pop("APIKLEY_WEBHOOK_KEY", None)
    env.pop("APIKLEY_TRUSTED_HOSTS", None)
    k = Kernel(work, env)
    try:
        load = k.execute("%load_ext imagen4_jupyter")
        assert load.ok and "[not trusted yet: %imagen4 trust 127.0.0.1]" in load.stdout, load.text()
        assert f"ignored {tmp_path / '.env'}: above the project root" in " ".join(load.stdout.split()), load.text()
        assert "collector.example" not in load.stdout.replace(str(tmp_path / ".env"), "")
        assert k.execute(FAST_CONFIG).ok
        n = wsim.count()
        one_line_error(k.execute("%%imagen4 --wait\na lantern", allow_stdin=False),
                       "Not sending your key", "127.0.0.1", ".env at", "%imagen4 trust 127.0.0.1",
                       "APIKLEY_TRUSTED_HOSTS")
        assert wsim.count() == n
        assert k.execute("%imagen4 trust 127.0.0.1").ok

        refused = k.execute(f"%config Imagen4Magics.webhook_key = {IN_CONFIG!r}")
        said = refused.text()
        assert "%imagen4 webhook-key" in said and "APIKLEY_WEBHOOK_KEY" in said and IN_CONFIG not in said, said
        assert "Traceback" not in said and len(said.strip().splitlines()) <= 2, said
        one_line_error(k.execute("%imagen4 webhook-key", allow_stdin=False), "cannot ask for the webhook key",
                       "APIKLEY_WEBHOOK_KEY")
        ex, asked = answering(k, "%imagen4 webhook-key", WEBHOOK)
        assert ex.ok and [a["password"] for a in asked] == [True], ex.text()
        on = k.execute("%config Imagen4Magics.callback_listen = '127.0.0.1:0'")
        assert "(signed: others are refused)" in on.stdout and on.stdout.count("callbacks on") == 1, on.text()

        ex = k.execute("%%imagen4 --wait -s 3\na lantern", allow_stdin=False)
        assert ex.ok, ex.text()
        wsim.wait_for_callbacks(1)
        check = k.execute("import time\nfrom imagen4_jupyter.records.session import current_session\n"
                          "hub = current_session().callbacks\nfor _ in range(100):\n"
                          "    if hub.hints: break\n    time.sleep(0.05)\n"
                          "print('signed', hub.signed, 'hints', hub.hints, 'refused', hub.receiver.refused)")
        assert "signed True hints 1 refused {}" in check.stdout, check.text()
        every = "".join(m["content"].get("text", "") + str(m["content"].get("data", ""))
                        for m in k.messages)
        assert WEBHOOK not in every
    finally:
        k.close()
    assert files_holding(IN_CONFIG, ipython), "the %config line should be in IPython's history (the grep works)"
    assert files_holding(WEBHOOK, ipython, work) == []
