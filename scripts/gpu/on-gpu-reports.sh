# Source on the GPU host, from the repository root, after scripts/gpu/stage-reports.sh copied this file to
# .devcarry/on-gpu-reports.sh:   source .devcarry/on-gpu-reports.sh
# Unpacks the staged report packages once per machine into $MXFP4LAB_REPORT_SITE (default /tmp/reportsite),
# puts them and this checkout on PYTHONPATH (the notebook kernels inherit it) and their data files (nbconvert's
# templates) on JUPYTER_PATH, selects matplotlib's
# non-interactive inline backend, and checks that papermill, nbconvert and a Python kernel are usable.
site=${MXFP4LAB_REPORT_SITE:-/tmp/reportsite}
if [ ! -d "$site/papermill" ]; then
  mkdir -p "$site" && tar -C "$site" -xJf .devcarry/reportsite.tar.xz
fi
export PYTHONPATH=$PWD:$site${PYTHONPATH:+:$PYTHONPATH}
export JUPYTER_PATH=$site/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}  # nbconvert's templates (wheel data files)
export MPLBACKEND=module://matplotlib_inline.backend_inline PYTHONUNBUFFERED=1
python3 - <<'EOF' || { echo "on-gpu-reports.sh: the staged report packages do not import here" >&2; return 1 2>/dev/null || exit 1; }
import papermill, nbconvert, pandas, matplotlib, seaborn, ipywidgets, yaml, safetensors  # noqa: F401
from nbconvert import HTMLExporter
HTMLExporter(template_name="lab").template  # the lab template is found (JUPYTER_PATH)
from jupyter_client.kernelspec import KernelSpecManager
specs = KernelSpecManager().find_kernel_specs()
assert "python3" in specs, f"no python3 kernel spec (found {sorted(specs)})"
print(f"reports: papermill {papermill.__version__}, nbconvert {nbconvert.__version__}, pandas {pandas.__version__}")
EOF
