"""Packed rows with SDPA / eager attention: examples must not attend to each other."""

from __future__ import annotations

import pytest
import torch

from notebook_agent.train.packing import (
    MAX_MASKED_ROW,
    check_masked_row,
    mask_packed_batches,
    mask_packed_rows,
    reads_boundaries,
)


def tiny_llama(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_examples_see_only_themselves_with_the_mask(attn):
    """TRL's padding-free collator alone lets the second example attend to the first (its
    logits change); with the block mask each example's logits are those it has alone."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = tiny_llama(attn)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(1, 100, (7,), generator=g).tolist(), torch.randint(1, 100, (5,), generator=g).tolist()
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    features = [{"input_ids": a}, {"input_ids": b}]

    def logits(batch):
        with torch.no_grad():
            return model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]

    with torch.no_grad():
        alone = [model(torch.tensor([x])).logits[0] for x in (a, b)]
    batch = collate(features)
    plain = logits(batch)
    assert torch.allclose(plain[:7], alone[0], atol=1e-5)
    assert not torch.allclose(plain[7:], alone[1], atol=1e-3)  # the bug the mask is for
    handle = mask_packed_rows(model)
    masked = logits(batch)
    assert torch.allclose(masked[:7], alone[0], atol=1e-5) and torch.allclose(masked[7:], alone[1], atol=1e-5)
    with torch.no_grad():  # one sequence (generation) is left as it was
        assert torch.allclose(model(torch.tensor([a])).logits[0], alone[0])
    handle.remove()
    assert torch.allclose(logits(batch), plain)


def test_trainer_batches_are_masked_and_the_loss_is_each_example_alone(tmp_path, smollm2_tokenizer):
    """A real SFTTrainer with BFD packing and SDPA: after `mask_packed_batches` its packed batch
    gives the same loss as the examples evaluated one by one, and the trainer still counts the
    batch's 19 tokens (a mask put in the batch would be summed as tokens)."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    model = tiny_llama("sdpa")
    rows = [{"input_ids": list(range(3, 3 + n))} for n in (9, 6, 4)]
    cfg = SFTConfig(output_dir=str(tmp_path), packing=True, max_length=32, per_device_train_batch_size=1,
                    report_to="none", use_cpu=True, bf16=False, dataset_num_proc=None, max_steps=1, logging_steps=1)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=smollm2_tokenizer)
    assert mask_packed_batches(trainer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] == 19 and "attention_mask" not in batch
    with torch.no_grad():
        packed = model(**batch).loss
        # each alone: the collator drops the first token of each example from the loss
        total = sum(model(torch.tensor([r["input_ids"]]), labels=torch.tensor([r["input_ids"]])).loss * (len(r["input_ids"]) - 1)
                    for r in rows)
    assert torch.allclose(packed, total / (19 - 3), atol=1e-5)
    trainer.train()
    assert trainer.state.log_history[0]["num_tokens"] == 19


def test_a_dense_mask_that_would_be_too_large_is_refused_before_training():
    check_masked_row(True, "sdpa", 1, 2048)
    check_masked_row(True, "flash_attention_2", 16, 4096)  # reads the boundaries itself: no mask
    check_masked_row(False, "sdpa", 16, 4096)  # not packed: no mask
    with pytest.raises(ValueError, match="without --packing"):
        check_masked_row(True, "sdpa", 2, MAX_MASKED_ROW)
    assert reads_boundaries("kernels-community/flash-attn3") and not reads_boundaries("sdpa")
