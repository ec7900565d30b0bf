"""The accelerator table (targets.py) and the project's own targets in pyproject.toml."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pytest_netbudget import config, targets
from pytest_netbudget.config import ConfigError

T, G, US = 1e12, 1e9, 1e-6

# The built-in table as version "1" was made, read off the datasheets by hand (dense figures;
# where a vendor prints only 2:4-sparse tensor figures they are halved here). A figure that
# changes without a new TABLE_VERSION fails this test: baselines record the version, and a
# changed table must be reported as such.
DATASHEETS_V1 = {
    # A100 datasheet: FP64 TC 19.5, FP32 19.5, TF32 156 (312*), FP16/BF16 312 (624*), INT8 624 TOPS (1248*), 2,039 GB/s
    "a100": (
        {"fp64": 19.5, "fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312, "int8": 624},
        2039,
        2,
    ),
    # H100 whitepaper, SXM5 dense: FP64 TC 66.9, FP32 66.9, TF32 494.7, FP16/BF16 989.4, FP8/INT8 1978.9; 3.35 TB/s
    "h100": (
        {"fp64": 66.9, "fp32": 66.9, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "fp8": 1978.9, "int8": 1978.9},
        3350,
        2,
    ),
    # L4 datasheet: FP32 30.3; TF32 120*, FP16/BF16 242*, FP8/INT8 485* (sparse only) -> 60, 121, 242.5; 300 GB/s
    "l4": ({"fp32": 30.3, "tf32": 60, "fp16": 121, "bf16": 121, "fp8": 242.5, "int8": 242.5}, 300, 2),
    # Ada whitepaper appendix, RTX 4090: FP32 82.6, TF32 82.6, FP16/BF16 165.2 and FP8 330.3 (FP32 accumulate),
    # INT8 660.6 TOPS; 1,008 GB/s
    "rtx4090": ({"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2, "fp8": 330.3, "int8": 660.6}, 1008, 2),
    # Orin technical brief: 5.3 FP32 TFLOPS, 170 sparse INT8 TOPS (GPU) -> 85; fp16/bf16/tf32 at 1/2, 1/4 of int8
    "jetson-orin": ({"fp32": 5.3, "tf32": 21.25, "fp16": 42.5, "bf16": 42.5, "int8": 85}, 204.8, 5),
    # Apple: 27.2 TFLOPS (76-core GPU), 800 GB/s
    "m2-ultra": ({"fp32": 27.2, "fp16": 27.2}, 800, 5),
    # Xeon 8480+: 56 cores x 2.0 GHz x (32 fp64, 64 fp32, 128 fp16, 1024 bf16 AMX, 2048 int8 AMX) per cycle;
    # 8 x 4800 MT/s x 8 B = 307.2 GB/s
    "xeon-8480": (
        {"fp64": 3.584, "fp32": 7.168, "fp16": 14.336, "bf16": 114.688, "int8": 229.376},
        307.2,
        1,
    ),
}


def test_the_table_is_the_datasheets_of_its_version():
    assert targets.TABLE_VERSION == "1"
    assert set(targets.BUILT_IN) == set(DATASHEETS_V1)
    for name, (peaks, bandwidth_gbs, overhead_us) in DATASHEETS_V1.items():
        target = targets.BUILT_IN[name]
        assert {key: pytest.approx(value * T) for key, value in peaks.items()} == dict(target.peak_flops), name
        assert target.bandwidth == pytest.approx(bandwidth_gbs * G), name
        assert target.op_overhead_s == pytest.approx(overhead_us * US), name
        assert target.version == "1"


def test_every_figure_names_its_source():
    for target in targets.BUILT_IN.values():
        for figure in (*target.peak_flops, "bandwidth", "op_overhead"):
            assert target.sources[figure], (target.name, figure)
    for name, figure, _, source in targets.table_rows():
        if figure in targets.PRECISIONS or figure == "bandwidth":
            # a datasheet's URL, or a figure derived or unconfirmed, and said to be
            assert "https://" in source or "not confirmed" in source or "derived" in source, (name, figure)


def test_sparse_figures_are_not_taken_for_dense():
    # The A100's datasheet prints FP16 312 TFLOPS dense and 624 with sparsity: the table has 312.
    assert targets.BUILT_IN["a100"].peak("fp16") == 312 * T
    # H100 SXM's datasheet prints 1,979 TFLOPS FP16 *with sparsity*: dense is half.
    assert targets.BUILT_IN["h100"].peak("fp16") == pytest.approx(1978.9 / 2 * T, rel=1e-3)


def test_a_precision_the_part_lacks_falls_back():
    a100, m2 = targets.BUILT_IN["a100"], targets.BUILT_IN["m2-ultra"]
    assert a100.peak("fp8") == a100.peak("fp16")  # no fp8 units on Ampere: fp8 runs as fp16
    assert m2.peak("bf16") == m2.peak("fp32")
    assert m2.peak("int8") == m2.peak("fp16") == 27.2 * T
    assert a100.ridge == pytest.approx(19.5e12 / 2039e9)


@pytest.mark.parametrize(
    "dtype, precision",
    [
        ("float32", "fp32"),
        ("float16", "fp16"),
        ("bfloat16", "bf16"),
        ("uint8", "int8"),
        ("float8_e4m3fn", "fp8"),
        ("float64", "fp64"),
        ("int64", "fp32"),
        ("bool", "fp32"),
    ],
)
def test_precision_of_a_dtype(dtype, precision):
    assert targets.precision_of(dtype) == precision


def test_resolve_suggests_the_closest_name():
    assert targets.resolve("h100").title == "NVIDIA H100 SXM5 80GB"
    with pytest.raises(targets.TargetError, match="did you mean 'a100'"):
        targets.resolve("a10O")
    with pytest.raises(targets.TargetError, match="netbudget calibrate"):
        targets.resolve("this-machine")


def load(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / "pyproject.toml"
    path.write_text(text, encoding="utf-8")
    settings = config.load_settings(path)
    assert settings is not None
    return settings


MODELS = """
[tool.netbudget.models.a]
factory = "pkg:A"
input_shape = [1, 4]

[tool.netbudget.models.b]
factory = "pkg:B"
input_shape = [1, 4]
target = "npu"
"""


def test_user_targets_and_the_target_keys(tmp_path):
    settings = load(
        tmp_path,
        """
[tool.netbudget]
target = "l4"

[tool.netbudget.targets.npu]
title = "Our NPU"
peak_tflops = { fp32 = 2, int8 = 16 }
bandwidth_gbs = 50
op_overhead_us = 3
source = "vendor sheet rev B"
"""
        + MODELS,
    )
    npu = settings.targets["npu"]
    assert (npu.title, npu.peak("fp32"), npu.peak("int8"), npu.bandwidth) == ("Our NPU", 2 * T, 16 * T, 50 * G)
    assert npu.op_overhead_s == pytest.approx(3 * US)
    assert npu.sources["int8"] == "vendor sheet rev B"
    assert npu.version.startswith("user-")
    a, b = settings.models
    assert a.target is targets.BUILT_IN["l4"]  # the top-level target
    assert b.target is npu  # the model's own


def test_a_user_targets_version_follows_its_figures(tmp_path):
    def version(bandwidth: int) -> str:
        text = f"[tool.netbudget.targets.npu]\npeak_tflops = {{ fp32 = 2 }}\nbandwidth_gbs = {bandwidth}\n"
        return load(tmp_path, "[tool.netbudget]\n" + text).targets["npu"].version

    assert version(50) == version(50) != version(60)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[tool.netbudget]\ntarget = "a10O"', "[tool.netbudget] target: unknown target 'a10O'; did you mean 'a100'?"),
        ("[tool.netbudget]\ntarget = 3", "target: must be a target's name like 'a100', got 3"),
        ('[tool.netbudget]\ntarget = "this-machine"', "netbudget calibrate"),
        ("[tool.netbudget]\ntargets = 3", "targets: must be a table of [tool.netbudget.targets.NAME] tables"),
        (
            "[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = 1 }\nbandwith_gbs = 5",
            "[tool.netbudget.targets.npu] bandwith_gbs: unknown key; did you mean 'bandwidth_gbs'?",
        ),
        (
            "[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = 1, bf61 = 2 }\nbandwidth_gbs = 5",
            "[tool.netbudget.targets.npu.peak_tflops] bf61: unknown key; did you mean 'bf16'?",
        ),
        (
            "[tool.netbudget.targets.npu]\npeak_tflops = { fp16 = 1 }\nbandwidth_gbs = 5",
            "[tool.netbudget.targets.npu.peak_tflops] fp32: missing",
        ),
        ("[tool.netbudget.targets.npu]\nbandwidth_gbs = 5", "peak_tflops: missing or not a table"),
        (
            "[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = 1 }",
            "[tool.netbudget.targets.npu] bandwidth_gbs: missing",
        ),
        (
            "[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = 1 }\nbandwidth_gbs = -5",
            "bandwidth_gbs: must be a positive number, got -5",
        ),
        (
            '[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = "fast" }\nbandwidth_gbs = 5',
            "fp32: must be a positive number, got 'fast'",
        ),
        (
            "[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = 1 }\nbandwidth_gbs = 5\nop_overhead_us = -1",
            "op_overhead_us: must be a number of microseconds, 0 or more, got -1",
        ),
        (
            "[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = 1 }\nbandwidth_gbs = 5\ntitle = 7",
            "title: must be a string, got 7",
        ),
        (
            "[tool.netbudget.targets.a100]\npeak_tflops = { fp32 = 1 }\nbandwidth_gbs = 5",
            "[tool.netbudget.targets.a100]: 'a100' is a built-in target: give yours another name",
        ),
        ("[tool.netbudget]\ntargets = { npu = 3 }", "[tool.netbudget.targets.npu]: must be a table"),
        (
            '[tool.netbudget.models.m]\nfactory = "p:M"\ninput_shape = [1]\nmax_latency_ms = 5',
            "[tool.netbudget.models.m] max_latency_ms: budgets an estimated latency, but the model has no target",
        ),
        (
            '[tool.netbudget.models.m]\nfactory = "p:M"\ninput_shape = [1]\ntarget = "rtx-4090"',
            "[tool.netbudget.models.m] target: unknown target 'rtx-4090'; did you mean 'rtx4090'?",
        ),
    ],
)
def test_target_errors_name_file_table_and_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert expected in str(info.value)
    assert str(tmp_path / "pyproject.toml") in str(info.value)


# --- the command line: targets, calibrate, show --target ----------------------------------------------


@pytest.fixture
def kept_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cli.main`` puts the current directory on sys.path: restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_netbudget_targets_lists_every_figure_with_its_source(capsys, kept_path):
    from pytest_netbudget import cli

    assert cli.main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "table version 1" in out
    assert "a100         fp16         312 TFLOP/s" in out
    assert "nvidia-a100-datasheet" in out
    assert "jetson-orin  fp16         42.5 TFLOP/s     not confirmed" in out


def test_a_calibrations_table_reads_back_as_the_same_target(tmp_path):
    from pytest_netbudget.engine.calibration import Calibration

    measured = Calibration(1, 90e9, 20e9, 1.2e-6, 10, True, {"conv": 1.2, "pooling": 0.05})
    settings = load(tmp_path, "[tool.netbudget]\n" + measured.toml())
    target = settings.targets["this-machine"]
    assert (target.peak("fp32"), target.bandwidth) == (pytest.approx(90e9), pytest.approx(20e9))
    assert target.op_overhead_s == pytest.approx(1.2e-6)
    assert dict(target.efficiency) == {"conv": 1.2, "pooling": 0.05}
    assert "CPU time" in target.sources["fp32"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["calibrate", "--cpu-time"], "--cpu-time measures one thread: give --threads 1 too"),
        (["calibrate", "--threads", "0"], "--threads must be a positive integer"),
        (["calibrate", "--name", "my target"], "a target's name is letters, digits"),
        (
            ["show", "torch.nn:Identity", "--input-shape", "1,4", "--target", "a10O"],
            "target: unknown target 'a10O'; did you mean 'a100'?",
        ),
    ],
)
def test_command_line_mistakes(capsys, kept_path, args, message):
    from pytest_netbudget import cli

    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_show_with_a_target(capsys, kept_path):
    from pytest_netbudget import cli

    assert (
        cli.main(
            [
                "show",
                "torch.nn:Linear",
                "--kwargs",
                '{"in_features": 4, "out_features": 3}',
                "--input-shape",
                "2,4",
                "--device",
                "meta",
                "--target",
                "h100",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # one addmm: 116 bytes at 3,350 GB/s plus 2 us
    assert "Estimated latency on NVIDIA H100 SXM5 80GB (target h100, table 1): 0.00200 ms" in out
    assert "Latency ms  FLOP/B  Bound" in out


def test_show_of_a_factory_path_knows_the_projects_own_targets(capsys, kept_path, tmp_path, monkeypatch):
    """``netbudget show package.module:callable --target npu`` in a project that defines npu (1 TFLOP/s, 1 TB/s,
    no overhead): Linear(4, 3) on [2, 4] is one addmm of 2 * 2 * 4 * 3 + 6 = 54 FLOPs over 116 bytes, 0.116 ns
    of memory against 0.054 ns of compute. Before, only a registered model's show read the project's targets:
    a factory path's said "unknown target 'npu'"."""
    from pytest_netbudget import cli

    (tmp_path / "pyproject.toml").write_text(
        "[tool.netbudget.targets.npu]\npeak_tflops = { fp32 = 1 }\nbandwidth_gbs = 1000\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    args = ["show", "torch.nn:Linear", "--kwargs", '{"in_features": 4, "out_features": 3}', "--input-shape", "2,4"]
    assert cli.main([*args, "--device", "meta", "--target", "npu"]) == 0
    out = capsys.readouterr().out
    assert "(target npu, table user-" in out
    assert "): 0.000000116 ms, a roofline lower bound" in out


# --- a changed table in a pull request ---------------------------------------------------------------

GEMM_MODELS = """
from torch import nn


def gemm(width=64):
    return nn.Linear(64, width, bias=False)
"""

NPU_PROJECT = """
[tool.netbudget.targets.npu]
peak_tflops = {{ fp32 = {peak} }}
bandwidth_gbs = 1000

[tool.netbudget.models.gemm]
factory = "mymodels:gemm"
kwargs = {{ width = {width} }}
input_shape = [64, 64]
max_increase = {{ latency_ms = "0" }}
"""


def test_a_changed_table_is_reported_as_a_changed_table_not_growth(pytester, project):
    """The project's npu at 1 TFLOP/s, 1 TB/s: Linear(64, 64) on [64, 64] is 2 * 64**3 FLOPs, compute-bound,
    0.000524 ms. Its peak edited to 0.5 TFLOP/s (a new table: the user target's version is a fingerprint of
    its figures) doubles the estimate to 0.00105 ms, which max_increase = 0 would fail as growth; it is
    reported as the changed table instead, in the terminal, the Markdown and the JSON report, and the
    baseline check names it. The same table and a wider layer (64 -> 96 outputs, 0.000786 ms) is growth."""
    pytester.syspathinsert()

    def write(peak: float, width: int) -> None:
        project(NPU_PROJECT.format(peak=peak, width=width), top='device = "cpu"\ntarget = "npu"', models=GEMM_MODELS)

    write(1, 64)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    old = json.loads((pytester.path / "netbudget-baseline.json").read_text(encoding="utf-8"))
    old_version = old["models"]["gemm"]["target"]["version"]
    assert old["models"]["gemm"]["totals"]["latency_ms"] == 0.000524

    write(0.5, 64)
    new_version = config.load_settings(pytester.path / "pyproject.toml").targets["npu"].version
    change = f"npu (table {old_version}) -> npu (table {new_version})"
    result = pytester.runpytest("--netbudget", "--netbudget-report=pr.md", "--netbudget-report=pr.json")
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"*gemm: estimated latency not compared with *: its target changed, {change}*"])
    markdown = (pytester.path / "pr.md").read_text(encoding="utf-8")
    assert "<summary><code>gemm</code>: target changed</summary>" in markdown
    shown = change.replace(">", "&#62;")  # escaped as everything from the project is
    assert f"- **estimated latency not compared**: its target changed, {shown} (another target or table" in markdown
    assert (
        json.loads((pytester.path / "pr.json").read_text(encoding="utf-8"))["models"]["gemm"]["estimate_change"]
        == change
    )
    stale = pytester.runpytest("--netbudget", "--netbudget-check-baseline")
    assert stale.ret == 1
    stale.stdout.fnmatch_lines([f"*gemm's latency_ms, layers, target differ (with its environment: target {change})*"])

    write(1, 96)
    grown = pytester.runpytest("--netbudget")
    assert grown.ret == 1
    # the budget column says "-" (before: "no target", of a model that has one)
    grown.stdout.re_match_lines([r"^\s+latency_ms\s+-\s+0\.000786\s+0\.000524\s+\+0\.00026 \(\+50\.0%\)\s+grew"])
    assert "not compared" not in grown.stdout.str()


def test_a_new_built_in_table_is_a_changed_table(pytester, project):
    """A baseline entry made with table 0 of the built-in A100 (edited in, as a release that changed a
    figure would leave it) against this table 1: the same note, no growth."""
    pytester.syspathinsert()
    project(NPU_PROJECT.format(peak=1, width=64), top='device = "cpu"\ntarget = "a100"', models=GEMM_MODELS)
    assert pytester.runpytest("--netbudget", "--netbudget-update").ret == 0
    path = pytester.path / "netbudget-baseline.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    entry = data["models"]["gemm"]
    entry["target"]["version"] = "0"
    entry["totals"]["latency_ms"] /= 2  # table 0's figures made it half as long
    path.write_text(json.dumps(data), encoding="utf-8")
    result = pytester.runpytest("--netbudget")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*gemm: estimated latency not compared with *: its target changed, a100 (table 0) -> a100 (table 1)*"]
    )


def test_a_calibration_turns_its_timings_into_the_this_machine_target(monkeypatch, tmp_path):
    """calibrate() end to end with a clock that reads 0.5 s more at every call, so that every timed run
    takes exactly 0.5 s: the 1024x1024 matmul's 2 * 1024**3 FLOPs give 4.294967296 GFLOP/s, the 64 MiB
    copy's 2 * 64 MiB read and written 0.268435456 GB/s, the 2,000 one-element adds 0.5 / 2,000 = 250 us
    an op; every family gets a share, and the printed table reads back as the same target (before, no test
    ran the measurement: only the printed table's reading back was tested)."""
    from types import SimpleNamespace

    from pytest_netbudget.engine import calibration

    ticks = iter(range(10**6))
    clock = SimpleNamespace(perf_counter=lambda: next(ticks) * 0.5)
    monkeypatch.setattr(calibration, "time", clock)
    measured = calibration.calibrate(runs=1, threads=1)
    assert (measured.matmul_flops, measured.copy_bandwidth) == (2 * 1024**3 / 0.5, 2 * 64 * 2**20 / 0.5)
    assert measured.op_overhead_s == 0.5 / 2000
    assert set(measured.efficiency) == {
        "linalg",
        "conv",
        "elementwise",
        "pooling",
        "attention",
        "recurrent",
        "free",
    }
    assert all(share > 0 for share in measured.efficiency.values())
    target = load(tmp_path, "[tool.netbudget]\n" + measured.toml()).targets["this-machine"]
    six_digits = {"rel": 1e-5}  # the table prints six significant digits
    assert target.peak("fp32") == pytest.approx(2 * 1024**3 / 0.5, **six_digits)
    assert target.bandwidth == pytest.approx(2**28, **six_digits)
    assert target.op_overhead_s == pytest.approx(250e-6)
