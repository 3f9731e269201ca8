#!/usr/bin/env bash
# Regenerate image/requirements.txt: the runtime closure of pyproject.toml's dependencies (as
# pip resolves it), pinned to the versions installed in .venv (what the test suite runs with),
# plus the setuptools that builds the project inside the image without build isolation.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ -x .venv/bin/pip ] || { echo "ERROR: no .venv; run 'make test-unit' once first" >&2; exit 1; }
report="$(mktemp)"; trap 'rm -f "$report"' EXIT
.venv/bin/pip install --quiet --dry-run --ignore-installed --report "$report" . >/dev/null
.venv/bin/python - "$report" <<'PY'
import json, re, subprocess, sys

SETUPTOOLS = "setuptools==75.8.0"  # pyproject.toml's build-system needs >= 69
norm = lambda name: re.sub(r"[-_.]+", "-", name.lower())
resolved = {
    norm(i["metadata"]["name"]): i["metadata"]["version"]
    for i in json.load(open(sys.argv[1]))["install"]
    if i["metadata"]["name"] != "reconciler"
}
listed = subprocess.run([".venv/bin/pip", "list", "--format=json"], capture_output=True,
                        text=True, check=True).stdout
installed = {norm(p["name"]): p["version"] for p in json.loads(listed)}
pins = [f"{name}=={installed.get(name, version)}" for name, version in sorted(resolved.items())]
header = (
    "# The daemon image's Python packages, pinned: the runtime closure of pyproject.toml's\n"
    "# dependencies at the versions the test suite runs with (plus setuptools, which builds the\n"
    "# project without build isolation). Regenerate with: bash image/lock.sh\n"
)
open("image/requirements.txt", "w").write(header + "\n".join([*pins, SETUPTOOLS]) + "\n")
print(f"image/requirements.txt: {len(pins) + 1} pins")
PY
