"""The formula registry (issue 9): one way in with a duplicate check, a rule for every formula,
and per-call overrides that never reach the global registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_netbudget import Cost, cli, profile, register_formula, targets
from pytest_netbudget.formulas import FormulaError, FormulaSet, registered


@torch.library.custom_op("nbformulas::scale", mutates_args=())
def scale(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@scale.register_fake
def _scale_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@register_formula("nbformulas::scale")
def _scale_formula(call) -> Cost:
    """nbformulas::scale: 1 MAC per output element"""
    return Cost(macs=call.first_out.numel())


class Scales(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.nbformulas.scale(x)


def scale_macs() -> int:
    return profile(Scales(), input_shape=(2, 3), device="meta").macs


# --- one way in, with a duplicate check ------------------------------------------------------------------------


def test_registering_an_op_twice_needs_replace():
    with pytest.raises(ValueError, match=r"a formula for aten::mm is already registered; pass replace=True"):
        register_formula(torch.ops.aten.mm.default)(lambda call: Cost())
    with pytest.raises(ValueError, match=r"nbformulas::scale is already registered"):
        register_formula("nbformulas::scale")(lambda call: Cost(macs=99))
    assert scale_macs() == 2 * 3  # the refused registration left the first formula in place
    assert profile(nn.Linear(4, 3, bias=False), input_shape=(2, 4), device="meta").macs == 2 * 4 * 3


def test_registering_a_module_type_twice_needs_replace():
    class Block(nn.Linear):
        pass

    register_formula(Block)(lambda module, inputs, output: Cost(macs=1))
    with pytest.raises(ValueError, match=r"test_formulas\.test_registering_a_module_type_twice_needs_replace"):
        register_formula(Block)(lambda module, inputs, output: Cost(macs=2))
    assert profile(Block(4, 3), input_shape=(2, 4), device="meta").macs == 1


def test_a_refused_list_registers_none_of_its_targets():
    with pytest.raises(ValueError, match="aten::relu is already registered"):
        register_formula(["nbformulas::never_registered", "aten::relu"])(lambda call: Cost())
    assert "nbformulas::never_registered" not in {record.name for record in registered()}


def test_replace_true_replaces_a_formula():
    try:
        register_formula(torch.ops.nbformulas.scale, replace=True)(lambda call: Cost(macs=5))
        assert scale_macs() == 5
    finally:
        register_formula("nbformulas::scale", replace=True)(_scale_formula)
    assert scale_macs() == 2 * 3


def test_an_op_name_needs_its_namespace():
    with pytest.raises(ValueError, match="namespace"):
        register_formula("no_namespace")(lambda call: Cost())
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_formula(42)(lambda call: Cost())


# --- every formula has a rule ------------------------------------------------------------------------------------


def test_every_registered_formula_has_a_family_and_a_rule():
    records = registered()
    assert [record.name for record in records] == sorted(record.name for record in records)
    assert len({record.name for record in records}) == len(records)
    for record in records:
        assert record.rule.strip() and "\n" not in record.rule, record
        # the families a target's efficiency may name (targets.FAMILIES), or a user's formula
        assert record.family in {*targets.FAMILIES, "user"}, record


def test_every_registered_aten_op_is_found_by_the_lookup():
    formulas = FormulaSet()
    for record in registered():
        namespace, _, name = record.name.partition("::")
        packet = getattr(torch.ops.aten, name, None) if namespace == "aten" else None
        if packet is None:  # an op that this torch version lacks
            continue
        overload = getattr(packet, packet.overloads()[0])
        assert formulas.for_op(overload) is not None, record.name


def test_rules_of_a_few_formulas():
    rules = {record.name: (record.family, record.rule) for record in registered()}
    assert rules["aten::mm"] == ("linalg", "MACs = M*K*N for [M, K] @ [K, N]; FLOPs = 2*MACs")
    assert rules["aten::addmm"] == (
        "linalg",
        "MACs = M*K*N for bias + [M, K] @ [K, N]; FLOPs = 2*MACs + M*N (the bias),"
        " +1 per output element each for beta and alpha when not 1, none for the bias when beta is 0",
    )
    assert rules["aten::relu"] == ("elementwise", "1 FLOP per output element")
    assert rules["aten::_softmax"] == ("elementwise", "3 FLOPs per output element (exponent, sum, divide)")
    assert rules["aten::upsample_bilinear2d"] == ("pooling", "4 FLOPs per output element (one per neighbour sampled)")
    assert rules["aten::cat"] == ("free", "free (data movement: join, split, repeat, permute)")
    assert rules["aten::convolution"][0] == "conv"


def test_a_user_formula_takes_its_rule_from_its_docstring():
    rules = {record.name: (record.family, record.rule) for record in registered()}
    assert rules["nbformulas::scale"] == ("user", "nbformulas::scale: 1 MAC per output element")
    register_formula("nbformulas::undocumented")(lambda call: Cost())
    assert {record.name: record.rule for record in registered()}["nbformulas::undocumented"] == (
        "user formula test_formulas.test_a_user_formula_takes_its_rule_from_its_docstring.<locals>.<lambda>"
    )


# --- per-call overrides ------------------------------------------------------------------------------------------


@torch.library.custom_op("nbformulas::opaque", mutates_args=())
def opaque(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@opaque.register_fake
def _opaque_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class UsesOpaque(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.nbformulas.opaque(x)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_per_call_formula_counts_an_op_for_that_call_only(device):
    """An op no registered formula counts: uncounted, then counted by the call's formula, then uncounted again."""
    per_call = {"nbformulas::opaque": lambda call: Cost(macs=3 * call["x"].numel())}
    before = profile(UsesOpaque(), input_shape=(2, 5), device=device)
    with_formula = profile(UsesOpaque(), input_shape=(2, 5), device=device, formulas=per_call)
    after = profile(UsesOpaque(), input_shape=(2, 5), device=device)
    assert before.uncounted_ops == after.uncounted_ops == {"nbformulas.opaque": 1}
    assert (before.macs, after.macs) == (0, 0)
    assert with_formula.uncounted_ops == {}
    assert (with_formula.macs, with_formula.flops) == (3 * 10, 2 * 3 * 10)
    assert "nbformulas::opaque" not in {record.name for record in registered()}


@pytest.mark.parametrize("target", ["aten::mm", torch.ops.aten.mm, torch.ops.aten.mm.default])
def test_a_per_call_formula_overrides_a_built_in_for_that_call_only(target):
    model = nn.Linear(4, 3, bias=False)  # [2, 4] @ [4, 3]: 2*4*3 = 24 MACs through aten::mm
    overridden = profile(model, input_shape=(2, 4), device="meta", formulas={target: lambda call: Cost(macs=1000)})
    assert (overridden.macs, overridden.flops) == (1000, 2000)
    plain = profile(model, input_shape=(2, 4), device="meta")
    assert (plain.macs, plain.flops) == (2 * 4 * 3, 2 * 2 * 4 * 3)
    assert {record.name: record.family for record in registered()}["aten::mm"] == "linalg"


class AddsInPlace(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 2
        y.add_(1)
        return y


def test_a_per_call_formula_for_an_op_covers_its_in_place_variant():
    """``add_`` falls back to the formula of ``add``, the call's own as much as the registry's."""
    plain = profile(AddsInPlace(), input_shape=(2, 4), device="meta")
    assert plain.flops == 8 + 8  # mul and add_, 1 FLOP per output element each
    overridden = profile(
        AddsInPlace(), input_shape=(2, 4), device="meta", formulas={"aten::add": lambda call: Cost(0, 7)}
    )
    assert overridden.flops == 8 + 7


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class SubBlock(Block):
    pass


def test_a_per_call_module_formula_applies_to_subclasses_for_that_call_only():
    model = nn.Sequential(Block(), SubBlock())  # two [3, 4] @ [4, 4] matmuls: 48 MACs each
    per_call = {Block: lambda module, inputs, output: Cost(macs=100, flops=1)}
    overridden = profile(model, input_shape=(3, 4), device="meta", formulas=per_call)
    rows = {row.path: row for row in overridden.layers}
    assert [(rows[path].macs, rows[path].flops) for path in ("0", "0.inner", "1", "1.inner")] == [
        (100, 1),
        (0, 0),
        (100, 1),
        (0, 0),
    ]
    plain = profile(model, input_shape=(3, 4), device="meta")
    assert (plain.macs, plain.flops) == (2 * 3 * 4 * 4, 2 * 2 * 3 * 4 * 4)
    assert FormulaSet().for_module(model[0]) is None


class Sink(nn.Module):
    """Consumes its input and returns nothing, as a logging or caching module does."""

    def forward(self, x: torch.Tensor) -> None:
        x.sum()


def test_a_module_formula_applies_when_the_forward_returns_none():
    # Before: the formula was skipped when the forward returned None, so the model counted 0 MACs.
    measured = profile(Sink(), input_shape=(2, 3), device="meta", formulas={Sink: lambda m, i, o: Cost(macs=7)})
    assert measured.macs == 7


def named_raising(call):
    raise ValueError("no shape for this")


def named_not_a_cost(call):
    return 5


def named_negative(call):
    return Cost(macs=-3)


@pytest.mark.parametrize(
    ("formula", "fragment"),
    [
        (named_raising, "named_raising for aten.mm raised ValueError: no shape for this"),
        (named_not_a_cost, "named_not_a_cost for aten.mm returned 5, not a Cost"),
        (named_negative, "named_negative for aten.mm returned Cost(macs=-3, flops=None): costs are finite and not"),
        (lambda call: Cost(macs=float("nan")), "<lambda> for aten.mm returned Cost(macs=nan"),
        (lambda call: Cost(0, -5), "<lambda> for aten.mm returned Cost(macs=0, flops=-5): costs are finite"),
    ],
)
def test_a_formula_that_raises_or_returns_no_cost_is_named(formula, fragment):
    # Before: a raising formula surfaced as the model's own exception, 5 as "'int' object has no
    # attribute 'macs'", and a negative cost was added to the totals silently.
    with pytest.raises(FormulaError) as info:
        profile(nn.Linear(4, 2, bias=False), input_shape=(1, 4), device="meta", formulas={"aten::mm": formula})
    assert f"formula {__name__}." in str(info.value) and fragment in str(info.value)


def test_a_formula_set_reads_the_registry_and_its_overrides():
    add, add_, view = torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor, torch.ops.aten.view.default

    def own(call) -> Cost:
        return Cost()

    formulas = FormulaSet({"aten::add": own})
    assert formulas.for_op(add) is own and formulas.for_op(add_) is own
    assert FormulaSet.is_free(formulas.for_op(view))  # views are free by their schema
    assert formulas.for_op(torch.ops.nbformulas.opaque.default) is None
    assert FormulaSet().for_op(add) is not own


def test_a_per_call_formula_must_be_callable_and_named_by_op_or_module_type():
    with pytest.raises(TypeError, match="must be callable"):
        profile(nn.Linear(2, 2), input_shape=(1, 2), device="meta", formulas={"aten::mm": 3})
    with pytest.raises(ValueError, match="namespace"):
        profile(nn.Linear(2, 2), input_shape=(1, 2), device="meta", formulas={"mm": lambda call: Cost()})


# --- netbudget formulas ------------------------------------------------------------------------------------------


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[list[str]]]:
    """Exit code and the listing's lines, each split into name, family and rule."""
    code = cli.main(["formulas", *args])
    lines = capsys.readouterr().out.splitlines()
    return code, [line.split(maxsplit=2) for line in lines]


def test_formulas_grep_conv_lists_the_convolutions_and_nothing_else(capsys):
    code, lines = listed(capsys, "--grep", "conv")
    assert code == 0
    assert [(name, family) for name, family, _ in lines] == [
        ("aten::_convert_weight_to_int4pack", "quantized"),  # "conv" in its name: packing, free
        ("aten::_convert_weight_to_int4pack_for_cpu", "quantized"),
        ("aten::_convolution", "conv"),
        ("aten::_slow_conv2d_forward", "conv"),
        ("aten::conv_tbc", "conv"),
        ("aten::convolution", "conv"),
        ("aten::convolution_backward", "backward"),
        ("aten::cudnn_convolution", "conv"),
        ("aten::cudnn_convolution_transpose", "conv"),
        ("quantized::conv2d", "quantized"),
        ("quantized::conv2d_relu", "quantized"),
    ]


def test_formulas_lists_every_formula_sorted_with_its_rule(capsys):
    code, lines = listed(capsys)
    assert code == 0
    names = [name for name, _, _ in lines]
    assert names == sorted(names) == [record.name for record in registered()]
    assert ["aten::mm", "linalg", "MACs = M*K*N for [M, K] @ [K, N]; FLOPs = 2*MACs"] in lines
    assert ["aten::cat", "free", "free (data movement: join, split, repeat, permute)"] in lines


def test_formulas_grep_ignores_case_and_says_when_nothing_matches(capsys):
    code, lines = listed(capsys, "--grep", "ATEN::MM")
    assert (code, lines) == (0, [["aten::mm", "linalg", "MACs = M*K*N for [M, K] @ [K, N]; FLOPs = 2*MACs"]])
    assert cli.main(["formulas", "--grep", "no such op"]) == 1
    assert "no formula matches 'no such op'" in capsys.readouterr().err


def test_formulas_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["formulas", "--help"])
    assert exit_info.value.code == 0
    assert "netbudget formulas --grep conv" in capsys.readouterr().out
