# Sourced by the scripts: create .venv (Python >= 3.11) and install ankihost into it.
#   $1 = the pip extra to install ("" for the server only, "test" for the test suite)
# The install is skipped when nothing it depends on changed since the last one (pyproject.toml
# and the extra, recorded in a stamp file): ankihost itself is installed editable, so code
# changes need no reinstall, and a restart needs no package index.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ANKIHOST_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "ankihost needs Python 3.11 or later (set PYTHON=...)" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
fi
extra="${1:-}"
stamp="$VENV/.ankihost-installed${extra:+-$extra}"
wanted="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    spec="$ROOT"
    [ -n "$extra" ] && spec="$ROOT[$extra]"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
    echo "$wanted" > "$stamp"
fi
