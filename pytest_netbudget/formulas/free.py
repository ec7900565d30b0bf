"""Ops that move, select, create or reshape data and do no arithmetic: free, and known to be.

Registering them (rather than leaving them without a formula) is what keeps them out of
``uncounted_ops``. Views need no entry: the registry recognises them from their schema.
"""

from __future__ import annotations

from .registry import FREE, aten, register

_FREE_OPS = {  # rule -> ops
    "free (data movement: copies and layout changes)": """
        clone copy _to_copy contiguous _unsafe_view _reshape_alias detach alias lift lift_fresh_copy
        resize set _pin_memory
        """,
    "free (data movement: join, split, repeat, permute)": """
        cat stack hstack vstack unsafe_split unsafe_split_with_sizes unsafe_chunk repeat repeat_interleave tile
        flip roll pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle im2col
        _pack_padded_sequence _pad_packed_sequence _nested_tensor_from_tensor_list
        """,
    "free (creates a tensor)": """
        zeros ones empty empty_strided full fill zero arange linspace eye tril_indices triu_indices scalar_tensor
        new_zeros new_ones new_empty new_full new_empty_strided zeros_like ones_like empty_like full_like
        _efficientzerotensor
        """,
    "free (draws random numbers)": "rand randn randint rand_like randn_like randint_like normal uniform random",
    "free (data movement: index, gather, scatter, select)": """
        embedding index_select gather index index_copy index_fill masked_fill masked_select
        masked_scatter where slice_scatter select_scatter diagonal_scatter as_strided_scatter tril triu
        one_hot bucketize searchsorted nonzero unique _unique2 bincount isin
        """,
    "free (data movement: padding)": """
        constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d
        replication_pad1d replication_pad2d replication_pad3d
        """,
    "free (data movement: nearest-neighbour upsampling copies)": """
        upsample_nearest1d upsample_nearest2d upsample_nearest3d
        _upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d
        """,
    "free (dropout: the identity in eval mode)": "dropout feature_dropout alpha_dropout",
    "free (bookkeeping: scalars, asserts, tokens)": """
        item _local_scalar_dense _assert_async _assert_tensor_metadata _has_compatible_shallow_copy_type
        _make_dep_token sym_constrain_range_for_size
        """,
}

for _rule, _names in _FREE_OPS.items():
    register(aten(_names), FREE, family="free", rule=_rule)
register(
    aten("select_backward slice_backward diagonal_backward"),
    FREE,
    family="free",
    rule="free (a view's gradient: the incoming gradient placed into zeros)",
)
register(
    ["profiler::_record_function_enter", "profiler::_record_function_enter_new", "profiler::_record_function_exit"],
    FREE,
    family="free",
    rule="free (profiler markers that optimizers and user code place around their work)",
)
