# Sourced by scripts/demo and scripts/test: create or update .venv with one set of extras.
#
#   ensure_venv EXTRA    ->  .venv exists, `pip install -e ".[EXTRA]"` is current; sets $VENV_PY
#
# Quick when nothing changed: a stamp file in .venv records a hash of pyproject.toml, setup.cfg,
# the interpreter and the checkout's path; pip runs only when that hash differs.
# Environment: PYTHON (interpreter that creates the venv, default python3), IMAGEN4_VENV (default .venv).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${IMAGEN4_VENV:-$ROOT/.venv}"

_say() { printf '%s\n' "[setup] $*" >&2; }

_pick_python() {
    local cand
    for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 python; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1; then
            printf '%s\n' "$cand"
            return 0
        fi
    done
    return 1
}

_hash() {
    # sha256 of the install inputs; any change re-runs pip.
    {
        cat "$ROOT/pyproject.toml"
        [ -f "$ROOT/setup.cfg" ] && cat "$ROOT/setup.cfg"
        printf '%s\n' "$ROOT" "$1"
        "$VENV/bin/python" -c 'import sys; print(sys.version)'
    } | "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}

ensure_venv() {
    local extra="$1" py stamp want
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        py="$(_pick_python)" || {
            _say "error: need Python >= 3.10 with the venv module (set PYTHON=/path/to/python3)."
            return 1
        }
        _say "creating $VENV with $("$py" --version 2>&1)"
        rm -rf "$VENV"
        "$py" -m venv "$VENV" || {
            _say "error: '$py -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)."
            return 1
        }
    fi
    VENV_PY="$VENV/bin/python"
    stamp="$VENV/.imagen4-$extra.stamp"
    want="$(_hash "$extra")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && "$VENV_PY" -c 'import importlib.metadata as m; m.version("imagen4-jupyter")' >/dev/null 2>&1; then
        return 0
    fi
    _say "installing imagen4-jupyter[$extra] into $VENV (the first time takes a minute or two)"
    local t0=$SECONDS
    local log="$VENV/pip-$extra.log"
    if ! (cd "$ROOT" && "$VENV_PY" -m pip install --disable-pip-version-check --progress-bar off \
        -e ".[$extra]") >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        _say "error: pip install -e \".[$extra]\" failed; full log: $log"
        return 1
    fi
    printf '%s\n' "$want" >"$stamp"
    _say "installed in $((SECONDS - t0)) s"
}
