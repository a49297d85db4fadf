# Sourced by the scripts: create .venv (Python >= 3.11) and install ankihost into it.
#   $1 = the pip extra to install ("" for the server only, "test" for the test suite)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ANKIHOST_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "ankihost needs Python 3.11 or later (set PYTHON=...)" >&2; exit 1; }
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
spec="$ROOT"
[ -n "${1:-}" ] && spec="$ROOT[$1]"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
