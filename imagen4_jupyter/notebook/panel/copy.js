// imagen4 panel, "Copy seed": copy `args.text` to the clipboard and select the panel's seed box (the fallback
// when the clipboard is not allowed). Runs once per token, and never when stale.
function imagen4Copy(args) {
  const token = args.token, text = args.text, created = args.created;
  const done = (window.__imagen4_done = window.__imagen4_done || {});
  if (done[token] || Math.abs(Date.now() - created) > 120000) return;
  done[token] = true;
  if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).catch(() => {});
  const t0 = Date.now();
  const select = () => {
    if (!element.isConnected) return Date.now() - t0 < 10000 && setTimeout(select, 20);
    const root = element.closest('.imagen4-panel');
    const box = root && root.querySelector('.imagen4-seed-copy input');
    if (box) { box.focus(); box.select(); }
  };
  select();
}
