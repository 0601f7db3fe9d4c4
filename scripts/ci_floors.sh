#!/usr/bin/env bash
# The floors job: the test suite on the oldest version of every core dependency that
# pyproject.toml allows, in a new virtual environment in a temporary directory.
#
#   bash scripts/ci_floors.sh          # the CI subset: every test but the three slowest
#   bash scripts/ci_floors.sh --full   # the whole suite (as `python3 -m pytest` selects it)
#
# Each `name>=X` of [project] dependencies is installed as `name==X` (read from
# pyproject.toml here, so the declared floors and the tested versions cannot drift); a
# dependency without a plain `>=` floor is an error. The test extras are not core
# dependencies: pip picks their newest versions that fit the floors.
#
# Cost: PyPI's torch wheels for Linux are CUDA builds, so torch's floor brings its nvidia-*
# libraries (about 3 GB to download, 5 GB in the environment; no GPU is needed to import
# it). The environment is removed on exit. On the 2-core CI machine: about 2 minutes to
# build the environment (5 on a busy machine), 3.5 for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

full=0
case "${1:-}" in
"") ;;
--full) full=1 ;;
*)
    echo "usage: $0 [--full]" >&2
    exit 2
    ;;
esac

start=$SECONDS
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - >"$tmp/floors.txt" <<'EOF'
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

with open("pyproject.toml", "rb") as fh:
    deps = tomllib.load(fh)["project"]["dependencies"]
floor = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(;.+)?$")
for dep in deps:
    m = floor.match(dep)
    if m is None:
        sys.exit(f"ci_floors: {dep!r} in pyproject.toml has no plain '>=' floor to test")
    name, version, marker = m.groups()
    print(f"{name}=={version}{' ' + marker if marker else ''}")
EOF
echo "floors:" $(grep -v "^#" "$tmp/floors.txt" | tr '\n' ' ')

python3 -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install -qq --no-compile -c "$tmp/floors.txt" -r "$tmp/floors.txt" -e ".[test]"
"$py" - "$tmp/floors.txt" <<'EOF'
import sys
from importlib.metadata import version

from packaging.requirements import Requirement

for line in open(sys.argv[1]):
    req = Requirement(line.strip())
    if req.marker is not None and not req.marker.evaluate():
        continue
    got = version(req.name)
    if not req.specifier.contains(got, prereleases=True):  # ==2.4 holds 2.4.0+cu121
        sys.exit(f"ci_floors: {req.name} {got} is installed, not {req.specifier}")
EOF
"$py" -m pip check
install=$((SECONDS - start))

args=(-q -p no:cacheprovider)
if [ "$full" = 0 ]; then
    # End-to-end studies covered by the faster study tests; the main job runs them.
    args+=(
        --deselect tests/test_examples.py::test_tutorial_runs_and_resumes_to_the_same_report
        --deselect tests/test_experiment.py::test_reduced_demo_calibrates_its_gates_with_controls_and_references
        --deselect tests/test_experiment.py::test_subsets_and_aggregate_merge_directories
    )
fi
"$py" -m pytest "${args[@]}"
echo "floors: passed (environment ${install} s, total $((SECONDS - start)) s)"
