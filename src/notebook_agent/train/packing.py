"""Packed (padding-free) batches for attention kernels that cannot read sequence boundaries.

TRL's padding-free collator flattens a batch into one row and marks where each example starts
only by `position_ids` (and `cu_seq_lens_*`, which only the flash-attention kernels read).
SDPA and eager attention ignore both: every token of a packed row then attends to the examples
packed before it (checked in tests/train/test_packing.py), so a trace is trained with an
unrelated trace as its context. On a CPU there is no flash attention, so `train sft --packing`
adds a block-diagonal causal mask to each packed forward pass instead (`mask_packed_batches`). The mask is
dense, (tokens in the row)^2 entries, so it is allowed only up to `MAX_MASKED_ROW` tokens.
"""

from __future__ import annotations

from typing import Any

#: the longest flattened row (per_device_train_batch_size x max_length) given a dense mask:
#: 8,192^2 entries are 128 MB in bf16
MAX_MASKED_ROW = 8192


def reads_boundaries(attn_implementation: str | None) -> bool:
    """Whether the attention kernel reads packed sequence boundaries (the flash-attention
    family, including hub kernels such as kernels-community/flash-attn3)."""
    return "flash" in (attn_implementation or "")


def block_causal_mask(position_ids: Any, dtype: Any) -> Any:
    """An additive [batch, 1, L, L] mask: a token sees earlier tokens of its own example only.
    Examples are told apart by `position_ids` restarting at 0."""
    import torch

    example = torch.cumsum((position_ids == 0).to(torch.int32), dim=1)  # [B, L]: which example
    length = position_ids.shape[1]
    allowed = (example[:, :, None] == example[:, None, :]) & torch.ones(length, length, dtype=torch.bool).tril()
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def mask_packed_rows(model: Any) -> Any:
    """Make `model` attend within each packed example: a forward pre-hook adds
    `block_causal_mask` when the call has `position_ids` that restart inside a row and no
    attention mask (a single sequence, as in generation, is left alone). The batch itself is
    not changed, so the trainer's token counts (which read `attention_mask` when present) stay
    right. Returns the hook's handle."""
    dtype = model.dtype

    def add_mask(module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        pos = kwargs.get("position_ids")
        if pos is not None and kwargs.get("attention_mask") is None and bool((pos[:, 1:] == 0).any()):
            kwargs["attention_mask"] = block_causal_mask(pos, dtype).to(pos.device)
        return args, kwargs

    return model.register_forward_pre_hook(add_mask, with_kwargs=True)


def needs_mask(padding_free: bool, attn_implementation: str | None) -> bool:
    """Whether packed rows need `block_causal_mask`: padding-free rows, and attention that
    does not read their boundaries."""
    return padding_free and not reads_boundaries(attn_implementation)


def check_masked_row(padding_free: bool, attn_implementation: str | None, batch_size: int, max_length: int | None) -> None:
    """Refuse a padding-free setup whose dense mask would be too large (before training)."""
    if not needs_mask(padding_free, attn_implementation):
        return
    row = batch_size * (max_length or 0)
    if max_length is None or row > MAX_MASKED_ROW:
        raise ValueError(
            f"packing with {attn_implementation or 'this'} attention needs a dense mask per batch of "
            f"(batch size x max length)^2 = ({batch_size} x {max_length})^2 entries (at most {MAX_MASKED_ROW}^2): "
            "lower --batch-size or --max-length, install flash attention (--attn flash_attention_2), "
            "or train without --packing")


def mask_packed_batches(trainer: Any) -> bool:
    """Mask `trainer`'s packed rows (a TRL SFTTrainer; `mask_packed_rows` on its model) when its
    model's attention cannot read sequence boundaries, after `check_masked_row` on its settings;
    True when it did. Called by `train_sft` (and benchmarks/train.py) before `trainer.train()`.
    (TRL refuses a custom collator with padding-free training, and a mask in the batch would be
    counted as tokens.)"""
    model, args = trainer.model, trainer.args
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    padding_free = getattr(trainer, "padding_free", False)
    check_masked_row(padding_free, attn, args.per_device_train_batch_size, args.max_length)
    if not needs_mask(padding_free, attn):
        return False
    mask_packed_rows(model)
    return True
