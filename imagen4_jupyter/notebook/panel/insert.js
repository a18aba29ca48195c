// imagen4 panel, "Insert as code": insert a code cell holding `args.code` below the cell showing the panel.
// Runs in JupyterLab 4 and Notebook 7 through the trusted output of an Output widget (`element` is the
// output's node). It activates the panel's cell, presses the notebook toolbar's "insert cell below" button,
// focuses the new cell's editor and pastes the code into it, then reports `ok` or why it failed through the
// panel's hidden report box. Runs once per token, and never when stale (a reloaded page with saved widget state).
function imagen4Insert(args) {
  const token = args.token, code = args.code, created = args.created;
  const done = (window.__imagen4_done = window.__imagen4_done || {});
  if (done[token] || Math.abs(Date.now() - created) > 120000) return;
  done[token] = true;
  // the output is rendered before it is attached to the page: wait until it is
  const t0 = Date.now();
  const attached = (fn) => element.isConnected ? fn() : (Date.now() - t0 < 10000 && setTimeout(() => attached(fn), 20));
  attached(() => {
    const root = element.closest('.imagen4-panel');
    const report = (msg) => {
      const box = root && root.querySelector('.imagen4-insert-report input, .imagen4-insert-report textarea');
      if (!box) return;
      box.value = token + ' ' + msg;
      box.dispatchEvent(new Event('input', {bubbles: true}));
    };
    try {
      const cell = element.closest('.jp-Cell');
      const nbPanel = element.closest('.jp-NotebookPanel');
      if (!cell || !nbPanel) return report('fail: the panel is not inside a JupyterLab/Notebook 7 notebook');
      const cellsAfter = () => {
        const out = []; let n = cell.nextElementSibling;
        while (n) { if (n.classList.contains('jp-Cell')) out.push(n); n = n.nextElementSibling; }
        return out;
      };
      const before = cellsAfter()[0] || null;
      cell.dispatchEvent(new FocusEvent('focusin', {bubbles: true}));
      const button = nbPanel.querySelector('[data-command="notebook:insert-cell-below"]');
      if (!button) return report('fail: no "insert cell below" button in the notebook toolbar');
      // JupyterLab's toolbar buttons act on mousedown (a plain click() does nothing); click() is the fallback
      button.dispatchEvent(new MouseEvent('mousedown', {bubbles: true, cancelable: true, button: 0}));
      const started = Date.now();
      let clicked = false;
      const fill = () => {
        const next = cellsAfter()[0] || null;
        const editor = next && next !== before ? next.querySelector('.cm-content') : null;
        if (!editor) {
          if (!clicked && Date.now() - started > 1000) { clicked = true; button.click(); }
          if (Date.now() - started > 5000) return report('fail: the new cell did not appear');
          return setTimeout(fill, 50);
        }
        editor.focus();
        const data = new DataTransfer();
        data.setData('text/plain', code);
        editor.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
        setTimeout(() => {
          const text = editor.innerText || editor.textContent || '';
          report(text.indexOf(code.split('\n')[0]) >= 0 ? 'ok' : 'fail: the editor did not take the text');
        }, 100);
      };
      setTimeout(fill, 0);
    } catch (err) {
      report('fail: ' + err);
    }
  });
}
