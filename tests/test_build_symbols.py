"""The link-level rule of a restricted build (mxfp4lab.flashinfer_build.symbols): every tensorrt_llm function
that compiled objects reference and none defines gets a definition that throws, under its exact mangled
name; undefined data is refused. Checked with tiny g++ objects and a program that calls a stub (CPU)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mxfp4lab.flashinfer_build import symbols as S

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("g++", "nm", "c++filt")), reason="needs g++ and binutils (nm, c++filt)"
)

CALLER = """
namespace tensorrt_llm { namespace kernels {
int compiled(int);
int left_out(int);
template <class T> struct Runner { Runner(); };
}}
int call_all(int x) {
  tensorrt_llm::kernels::Runner<float> r;
  return tensorrt_llm::kernels::compiled(x) + tensorrt_llm::kernels::left_out(x);
}
"""
DEFINER = "namespace tensorrt_llm { namespace kernels { int compiled(int x) { return x + 1; } }}\n"
DATA_USER = (
    "namespace tensorrt_llm { extern int table[4]; }\nint read0() { return tensorrt_llm::table[0]; }\n"
)
MAIN = """
#include <cstdio>
#include <stdexcept>
int call_all(int);
int main() {
  try { call_all(1); }
  catch (const std::runtime_error& e) { std::printf("caught: %s\\n", e.what()); return 0; }
  std::printf("no exception\\n");
  return 1;
}
"""
#: A real launcher of the dispatch switch, as c++filt prints it (FlashInfer 0.7.2, nvcc 13.0).
LAUNCHER = (
    "void tensorrt_llm::kernels::cutlass_kernels_oss::"
    "sm90_generic_mixed_moe_gemm_kernelLauncher<__nv_bfloat16, "
    "cutlass::float_e2m1_t, __nv_bfloat16, tensorrt_llm::cutlass_extensions::EpilogueOpDefault, "
    "cute::tuple<cute::C<128>, cute::C<64>, cute::C<128> >, "
    "cute::tuple<cute::C<2>, cute::C<1>, cute::C<1> >, "
    "cutlass::gemm::KernelTmaWarpSpecializedCooperative, cutlass::epilogue::TmaWarpSpecializedCooperative, "
    "(cutlass::WeightOnlyQuantOp)2, (cutlass::gemm::collective::MixedInputScaleMode)0>("
    "tensorrt_llm::kernels::"
    "cutlass_kernels::GroupedGemmInput<__nv_bfloat16, cutlass::float_e2m1_t, __nv_bfloat16, __nv_bfloat16>, "
    "tensorrt_llm::kernels::cutlass_kernels::TmaWarpSpecializedGroupedGemmInput, int, unsigned long*)"
)


def _obj(tmp: Path, name: str, text: str) -> Path:
    src, obj = tmp / f"{name}.cpp", tmp / f"{name}.o"
    src.write_text(text)
    subprocess.run(["g++", "-O2", "-fPIC", "-c", str(src), "-o", str(obj)], check=True)
    return obj


def test_missing_functions_and_their_stubs_throw(tmp_path):
    objs = [_obj(tmp_path, "caller", CALLER), _obj(tmp_path, "definer", DEFINER)]
    missing = S.missing_functions(objs)
    names = [d for _, d in missing]
    assert [m for m, _ in missing] == sorted(m for m, _ in missing)
    assert set(names) == {
        "tensorrt_llm::kernels::left_out(int)",
        "tensorrt_llm::kernels::Runner<float>::Runner()",
    }, "compiled(int) is defined"
    stub = _obj(tmp_path, "stubs", S.stub_source(missing, "compact"))
    assert S.missing_functions([*objs, stub]) == [], "the stubs define exactly what was missing"
    exe = tmp_path / "prog"
    main = tmp_path / "main.cpp"
    main.write_text(MAIN)
    subprocess.run(["g++", str(main), *map(str, [*objs, stub]), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "caught: mxfp4lab: tensorrt_llm::kernels::Runner<float>::Runner() is not compiled" in out.stdout
    assert "configs=compact" in out.stdout


def test_undefined_data_is_refused(tmp_path):
    objs = [_obj(tmp_path, "data_user", DATA_USER)]
    with pytest.raises(RuntimeError, match="data symbols are referenced but defined by no object"):
        S.missing_functions(objs)


def test_launcher_label_and_message():
    assert S.launcher_label(LAUNCHER) == "128x64x128_coop_2x1x1"
    assert S.launcher_label("tensorrt_llm::kernels::left_out(int)") is None
    text = S.stub_source([("_ZN12tensorrt_llm_fake", LAUNCHER)], "minimal")
    assert "SM90 mixed-input config 128x64x128_coop_2x1x1 was not compiled" in text
    assert '__asm__("_ZN12tensorrt_llm_fake")' in text


def test_check_launcher_symbols_counts(tmp_path):
    launcher = (
        "namespace tensorrt_llm { void sm90_generic_mixed_moe_x(int); void sm90_generic_mixed_moe_y(int); }"
    )
    user = _obj(
        tmp_path,
        "user",
        launcher + "\nvoid go() { tensorrt_llm::sm90_generic_mixed_moe_x(1); "
        "tensorrt_llm::sm90_generic_mixed_moe_y(2); }\n",
    )
    one = _obj(tmp_path, "one", "namespace tensorrt_llm { void sm90_generic_mixed_moe_x(int) {} }\n")
    with pytest.raises(RuntimeError, match="R-AGREE: 1 SM90 mixed launchers"):
        S.check_launcher_symbols([user, one])
    stub = _obj(tmp_path, "stub", S.stub_source(S.missing_functions([user, one]), "custom"))
    assert S.check_launcher_symbols([user, one, stub]) == {"launchers_referenced": 2, "launchers_defined": 2}


def test_compile_launcher_logs_cpu_and_unit_times_merge_it(tmp_path):
    import json
    import sys

    from mxfp4lab.flashinfer_build import _timed, make
    from mxfp4lab.flashinfer_build.sources import UNIT_CPU_LOG

    src = tmp_path / "u.cpp"
    src.write_text("int f(int x) { return x * 3; }\n")
    log = tmp_path / UNIT_CPU_LOG
    obj = tmp_path / "u.o"
    cmd = [sys.executable, _timed.__file__, str(log), "g++", "-O2", "-c", str(src), "-o", str(obj)]
    assert subprocess.run(cmd).returncode == 0 and (tmp_path / "u.o").exists()
    assert subprocess.run([*cmd[:3], "false"]).returncode == 1, "the command's status comes back"
    recs = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert recs[0]["output"] == "u.o" and recs[0]["user_s"] + recs[0]["sys_s"] > 0 and recs[0]["rc"] == 0
    (tmp_path / ".ninja_log").write_text("# ninja log v5\n120\t5320\t0\t" + str(tmp_path / "u.o") + "\tabc\n")
    t = make.unit_times(tmp_path)["u.o"]
    assert (t["start_s"], t["end_s"], t["seconds"]) == pytest.approx((0.12, 5.32, 5.2))
    assert t["cpu_s"] == round(recs[0]["user_s"] + recs[0]["sys_s"], 2)
