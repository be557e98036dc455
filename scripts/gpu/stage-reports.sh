#!/usr/bin/env bash
# Stage what `mxfp4lab report` needs on a GPU host that has no package index (papermill, nbconvert, the
# Jupyter kernel, pandas, matplotlib, seaborn, ipywidgets, PyYAML, safetensors and their dependencies).
# Run on a CPU machine with PyPI access, from anywhere in the repository.
#
#   scripts/gpu/stage-reports.sh [--list]
#
# Writes (.devcarry/ is git-ignored):
#   .devcarry/reportsite.tar.xz   the wheels installed (--target) for CPython $PYVER (default 3.12) /
#                                 manylinux x86_64, test suites and caches left out
#   .devcarry/reports-wheels.txt  the staged wheels (name, version, sha256), one a line
#   .devcarry/on-gpu-reports.sh   scripts/gpu/on-gpu-reports.sh: `source .devcarry/on-gpu-reports.sh` on the
#                                 host unpacks the site once and puts it on PYTHONPATH
#   --list                        prints the wheels it would stage and stages nothing
#
# Left out because the GPU image already has them (torch, triton, FlashInfer's imports need them) or they
# are not needed to execute notebooks: $HOST_HAS (override to stage more or less).
set -euo pipefail
PYVER=${PYVER:-3.12}
TOP_LEVEL=(papermill nbconvert nbclient nbformat ipykernel jupyter_client ipywidgets pandas matplotlib seaborn
           pyyaml safetensors)
HOST_HAS=${HOST_HAS:-"numpy requests urllib3 idna certifi charset_normalizer packaging tqdm click typing_extensions
jinja2 markupsafe filelock fsspec sympy mpmath networkx setuptools debugpy jedi parso widgetsnbextension"}
top=$(git rev-parse --show-toplevel)
cd "$top"
excl=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$excl")" && { grep -qx '/.devcarry/' "$excl" 2>/dev/null || echo '/.devcarry/' >> "$excl"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plat=(--only-binary=:all: --python-version "$PYVER" --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
python3 -m pip download -q --disable-pip-version-check "${plat[@]}" -d "$work/whl" "${TOP_LEVEL[@]}"
keep=()
for w in "$work"/whl/*.whl; do
  name=$(basename "$w" | cut -d- -f1 | tr 'A-Z-' 'a-z_')
  skip=0
  for h in $HOST_HAS; do [ "$name" = "$(echo "$h" | tr 'A-Z-' 'a-z_')" ] && skip=1; done
  [ "$skip" = 1 ] || keep+=("$w")
done
list() { for w in "${keep[@]}"; do b=$(basename "$w"); echo "$(echo "$b" | cut -d- -f1-2) $(sha256sum "$w" | cut -c1-16) $b"; done; }
if [ "${1:-}" = --list ]; then
  list
  exit 0
fi
python3 -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python "${plat[@]}" --target "$work/site" "${keep[@]}"
# Test suites, sample data and caches are not needed to run notebooks (keeps the carry small).
find "$work/site" -depth -type d \( -name tests -o -name __pycache__ -o -name sample_data \) \
  -prune -exec rm -rf {} +
rm -rf "$work/site/bin"
mkdir -p .devcarry
tar -C "$work/site" -I 'xz -T0' -cf .devcarry/reportsite.tar.xz .
list > .devcarry/reports-wheels.txt
cp scripts/gpu/on-gpu-reports.sh .devcarry/on-gpu-reports.sh
echo "staged ${#keep[@]} wheels for CPython $PYVER: $(du -h .devcarry/reportsite.tar.xz | cut -f1)" \
     ".devcarry/reportsite.tar.xz (list: .devcarry/reports-wheels.txt), .devcarry/on-gpu-reports.sh"
