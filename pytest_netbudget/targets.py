"""Accelerators that latency is estimated for: dense peak FLOP/s per dtype, memory bandwidth,
a per-op overhead, and where each figure comes from.

The estimate is a roofline (see the README): per op, the larger of its FLOPs over the peak
for its dtype and its bytes over the bandwidth, plus the target's per-op overhead. Peaks are
*dense*: vendors print 2:4-sparse tensor figures first (twice the dense ones), and a table
that takes them for dense halves every compute time. ``TABLE_VERSION`` changes with any
figure, so that a baseline made with other figures says so instead of showing growth.

Stdlib only: config validation and reports read this without torch.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Bumped whenever a built-in figure changes (tests/test_targets.py holds the figures it was made with).
TABLE_VERSION = "1"

#: The precisions a target may give a peak for, widest first.
PRECISIONS = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8")

#: A precision the target has no figure for runs at this one instead (a part without bf16
#: units computes bf16 in fp32). fp32 is required of every target, so every chain ends.
FALLBACK = {"fp64": "fp32", "tf32": "fp32", "fp16": "fp32", "bf16": "fp32", "fp8": "fp16", "int8": "fp16"}

#: torch dtype names (``str(torch.float16)`` without ``torch.``) -> precision; any other dtype
#: (integers wider than 8 bits, bool, complex) runs on the fp32 vector units.
_PRECISION_OF_DTYPE = {
    "float64": "fp64",
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "int8": "int8",
    "uint8": "int8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
    "float8_e4m3fnuz": "fp8",
    "float8_e5m2fnuz": "fp8",
}


#: The op families of the formula registry (``netbudget formulas`` lists each op's), which a
#: target's ``efficiency`` may name: the fraction of the roofline that family's kernels attain.
FAMILIES = (
    "linalg",
    "conv",
    "attention",
    "recurrent",
    "elementwise",
    "pooling",
    "indexing",
    "losses",
    "quantized",
    "nested",
    "free",
    "backward",
    "optimizers",
)


def precision_of(dtype_name: str) -> str:
    """The precision whose peak an op on tensors of ``dtype_name`` runs at."""
    return _PRECISION_OF_DTYPE.get(dtype_name, "fp32")


class TargetError(ValueError):
    """An unknown target name or a bad target table; the message says what and where."""


@dataclass(frozen=True)
class Target:
    """One accelerator as the roofline sees it.

    ``peak_flops``: dense FLOP/s per precision (int8: operations/s); ``bandwidth``: bytes/s of
    main memory; ``op_overhead_s``: seconds every kernel costs on top of its roofline time.
    ``sources`` maps ``"fp16"``, ``"bandwidth"``, ``"op_overhead"``, ... to where the figure
    comes from (title and URL, or how it was measured). ``efficiency`` maps an op family
    (``"conv"``) to the share of its roofline that family's kernels attain on this part: an op
    takes its roofline time over that share (a calibrated target's; built-ins have none: the
    pure roofline, a lower bound). A share above 1 is data that stays in cache, faster than
    the main-memory bandwidth the roof assumes.
    """

    name: str
    title: str
    peak_flops: Mapping[str, float]
    bandwidth: float
    op_overhead_s: float
    sources: Mapping[str, str] = field(default_factory=dict)
    version: str = TABLE_VERSION  # the built-in table's version; a user target's own fingerprint
    efficiency: Mapping[str, float] = field(default_factory=dict)

    def peak(self, precision: str) -> float:
        """FLOP/s at ``precision``, or at the one it falls back to where the part has none."""
        while precision not in self.peak_flops:
            precision = FALLBACK[precision]
        return self.peak_flops[precision]

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which an fp32 op is compute-bound on this target."""
        return self.peak("fp32") / self.bandwidth


def _dense(sparse: float) -> float:
    """A 2:4-sparse tensor-core figure as the dense rate (sparsity doubles throughput)."""
    return sparse / 2


T = 1e12
G = 1e9
US = 1e-6

_A100_DATASHEET = (
    "NVIDIA A100 Tensor Core GPU datasheet, "
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (dense column; the starred figures are sparse)"
)
_H100_WHITEPAPER = (
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper, "
    "https://resources.nvidia.com/en-us-tensor-core/gtc22-whitepaper-hopper (H100 SXM5, dense; the "
    "datasheet's 1,979 / 3,958 TFLOPS figures are with sparsity)"
)
_H100_DATASHEET = "NVIDIA H100 Tensor Core GPU datasheet, https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_L4_DATASHEET = (
    "NVIDIA L4 Tensor Core GPU datasheet, https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet"
)
_L4_SPARSE = f"{_L4_DATASHEET}: printed with sparsity only, halved here"
_ADA_WHITEPAPER = (
    "NVIDIA Ada GPU Architecture whitepaper v2.01, Appendix A (GeForce RTX 4090), "
    "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf"
)
_ORIN_BRIEF = (
    "NVIDIA Jetson AGX Orin Series Technical Brief v1.2, "
    "https://www.nvidia.com/content/dam/en-zz/Solutions/gtcf21/jetson-orin/nvidia-jetson-agx-orin-technical-brief.pdf"
)
_ORIN_DERIVED = (
    f"not confirmed: derived from the GPU's dense int8 rate ({_ORIN_BRIEF}: 170 sparse TOPS) at the "
    "Ampere tensor-core ratio int8 : fp16/bf16 : tf32 = 4 : 2 : 1; NVIDIA prints no such figure"
)
_M2_ULTRA_GPU = (
    "Apple Mac Pro technical page (M2 Ultra, 76-core GPU: 'up to 27.2 teraflops'), https://www.apple.com/mac-pro/"
)
_M2_ULTRA_NEWS = "Apple Newsroom, 'Apple introduces M2 Ultra' (2023-06-05), https://www.apple.com/newsroom/2023/06/apple-introduces-m2-ultra/"
_XEON_ARK = (
    "Intel ARK, Xeon Platinum 8480+ (56 cores, 2.0 GHz base, 8 channels DDR5-4800); URL not confirmed here: "
    "https://www.intel.com/content/www/us/en/products/sku/231746/"
    "intel-xeon-platinum-8480-processor-105m-cache-2-00-ghz/specifications.html"
)
_XEON_DERIVED = f"derived, not a vendor figure: 56 cores x 2.0 GHz base x {{}} per cycle per core ({_XEON_ARK})"
_XEON_AMX = (
    "derived: 56 cores x 2.0 GHz base x {} AMX operations per cycle per core, the rate Intel gives for 4th Gen "
    "Xeon in 'Accelerate AI Workloads with Intel AMX', "
    "https://www.intel.com/content/www/us/en/products/docs/accelerator-engines/advanced-matrix-extensions/ai-solution-brief.html"
    " (URL not confirmed here)"
)
_LAUNCH = "assumed, no datasheet gives it: the order of one kernel launch ({} us) on this kind of part"

BUILT_IN: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "a100",
            "NVIDIA A100 SXM4 80GB",
            {"fp64": 19.5 * T, "fp32": 19.5 * T, "tf32": 156 * T, "fp16": 312 * T, "bf16": 312 * T, "int8": 624 * T},
            2039 * G,
            2 * US,
            {
                **dict.fromkeys(("fp64", "fp32", "tf32", "fp16", "bf16", "int8", "bandwidth"), _A100_DATASHEET),
                "fp64": f"{_A100_DATASHEET}: FP64 Tensor Core",
                "op_overhead": _LAUNCH.format(2),
            },
        ),
        Target(
            "h100",
            "NVIDIA H100 SXM5 80GB",
            {
                "fp64": 66.9 * T,
                "fp32": 66.9 * T,
                "tf32": 494.7 * T,
                "fp16": 989.4 * T,
                "bf16": 989.4 * T,
                "fp8": 1978.9 * T,
                "int8": 1978.9 * T,
            },
            3350 * G,
            2 * US,
            {
                **dict.fromkeys(("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"), _H100_WHITEPAPER),
                "fp64": f"{_H100_WHITEPAPER}: FP64 Tensor Core",
                "bandwidth": _H100_DATASHEET,
                "op_overhead": _LAUNCH.format(2),
            },
        ),
        Target(
            "l4",
            "NVIDIA L4 24GB",
            {
                "fp32": 30.3 * T,
                "tf32": _dense(120 * T),
                "fp16": _dense(242 * T),
                "bf16": _dense(242 * T),
                "fp8": _dense(485 * T),
                "int8": _dense(485 * T),
            },
            300 * G,
            2 * US,
            {
                "fp32": _L4_DATASHEET,
                **dict.fromkeys(("tf32", "fp16", "bf16", "fp8", "int8"), _L4_SPARSE),
                "bandwidth": _L4_DATASHEET,
                "op_overhead": _LAUNCH.format(2),
            },
        ),
        Target(
            "rtx4090",
            "NVIDIA GeForce RTX 4090",
            {
                "fp32": 82.6 * T,
                "tf32": 82.6 * T,
                "fp16": 165.2 * T,
                "bf16": 165.2 * T,
                "fp8": 330.3 * T,
                "int8": 660.6 * T,
            },
            1008 * G,
            2 * US,
            {
                **dict.fromkeys(("fp32", "tf32", "int8", "bandwidth"), _ADA_WHITEPAPER),
                **dict.fromkeys(
                    ("fp16", "bf16", "fp8"),
                    f"{_ADA_WHITEPAPER}: with FP32 accumulate, as PyTorch's matmuls run (FP16 accumulate is twice)",
                ),
                "op_overhead": _LAUNCH.format(2),
            },
        ),
        Target(
            "jetson-orin",
            "NVIDIA Jetson AGX Orin 64GB (GPU, MAXN)",
            {"fp32": 5.3 * T, "tf32": 21.25 * T, "fp16": 42.5 * T, "bf16": 42.5 * T, "int8": _dense(170 * T)},
            204.8 * G,
            5 * US,
            {
                "fp32": f"{_ORIN_BRIEF}: 5.3 FP32 TFLOPS of CUDA cores",
                "int8": f"{_ORIN_BRIEF}: 170 sparse INT8 TOPS of the GPU's tensor cores, halved",
                **dict.fromkeys(("tf32", "fp16", "bf16"), _ORIN_DERIVED),
                "bandwidth": _ORIN_BRIEF,
                "op_overhead": _LAUNCH.format(5),
            },
        ),
        Target(
            "m2-ultra",
            "Apple M2 Ultra (76-core GPU)",
            {"fp32": 27.2 * T, "fp16": 27.2 * T},
            800 * G,
            5 * US,
            {
                "fp32": _M2_ULTRA_GPU,
                "fp16": "not confirmed: Apple publishes no fp16 figure; taken as the fp32 rate (the M-series GPU "
                "does not double its rate at fp16)",
                "bandwidth": _M2_ULTRA_NEWS,
                "op_overhead": _LAUNCH.format(5),
            },
        ),
        Target(
            "xeon-8480",
            "Intel Xeon Platinum 8480+ (one socket, 56 cores)",
            {"fp64": 3.584 * T, "fp32": 7.168 * T, "fp16": 14.336 * T, "bf16": 114.688 * T, "int8": 229.376 * T},
            307.2 * G,
            1 * US,
            {
                "fp64": _XEON_DERIVED.format("32 FP64 FLOPs (two AVX-512 FMA units)"),
                "fp32": _XEON_DERIVED.format("64 FP32 FLOPs (two AVX-512 FMA units)"),
                "fp16": _XEON_DERIVED.format("128 FP16 FLOPs (AVX512-FP16)"),
                "bf16": _XEON_AMX.format(1024),
                "int8": _XEON_AMX.format(2048),
                "bandwidth": f"derived: 8 channels x 4800 MT/s x 8 bytes ({_XEON_ARK})",
                "op_overhead": _LAUNCH.format(1),
            },
        ),
    )
}


def user_target(
    name: str,
    title: str,
    peak_tflops: Mapping[str, float],
    bandwidth_gbs: float,
    op_overhead_us: float,
    source: str,
    efficiency: Mapping[str, float] | None = None,
) -> Target:
    """A target from ``[tool.netbudget.targets.NAME]`` (figures already checked by the config).
    Its version is a fingerprint of its figures, so that a baseline made before they were
    edited reports the edit rather than growth."""
    figures = (sorted(peak_tflops.items()), bandwidth_gbs, op_overhead_us, sorted((efficiency or {}).items()))
    fingerprint = hashlib.sha256(repr(figures).encode()).hexdigest()[:10]
    return Target(
        name,
        title or name,
        {precision: value * T for precision, value in peak_tflops.items()},
        bandwidth_gbs * G,
        op_overhead_us * US,
        dict.fromkeys((*peak_tflops, "bandwidth", "op_overhead"), source),
        version=f"user-{fingerprint}",
        efficiency=dict(efficiency or {}),
    )


def resolve(name: str, user: Mapping[str, Target] | None = None) -> Target:
    """A target by name, the project's own (``user``) or built in; an unknown name says which exist."""
    known = {**BUILT_IN, **(user or {})}
    if name not in known:
        raise TargetError(unknown_target(name, list(known)))
    return known[name]


def unknown_target(name: object, known: list[str]) -> str:
    """The message for a target nobody defined, with the closest name and the calibration's hint."""
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known targets: {', '.join(sorted(known))}"
    if name == "this-machine":
        hint += " ('this-machine' is defined by the table `netbudget calibrate` prints, pasted into pyproject.toml)"
    return f"unknown target {name!r}{hint}"


def table_rows() -> list[tuple[str, str, str, str]]:
    """(target, figure, value, source) for every built-in figure: what the README's table shows."""
    rows = []
    for target in BUILT_IN.values():
        for precision in PRECISIONS:
            if precision in target.peak_flops:
                unit = "TOPS" if precision == "int8" else "TFLOP/s"
                value = f"{target.peak_flops[precision] / T:g} {unit}"
                rows.append((target.name, precision, value, target.sources[precision]))
        rows.append((target.name, "bandwidth", f"{target.bandwidth / G:g} GB/s", target.sources["bandwidth"]))
        rows.append((target.name, "op overhead", f"{target.op_overhead_s / US:g} us", target.sources["op_overhead"]))
    return rows
