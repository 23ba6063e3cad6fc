"""The Stage I decoder (stage1/gpt.py): incremental decoding agrees with the full forward
pass, padded keys are ignored, and (where transformers is installed) the arithmetic is
Hugging Face's GPT2Model's, so checkpoints trained with it keep their meaning."""

import torch

from crysvcd.stage1.gpt import GPT2


def tiny(seed=0):
    torch.manual_seed(seed)
    return GPT2(d=32, n_layer=2, n_head=4, n_positions=16, dropout=0.0).eval()


def test_cached_decoding_equals_the_full_forward():
    model, x = tiny(), torch.randn(3, 7, 32)
    mask = torch.ones(3, 7)
    full, _ = model(x, mask)
    h, cache, steps = None, None, []
    for t in range(7):  # one position at a time, as the sampler decodes
        h, cache = model(x[:, t : t + 1], mask[:, : t + 1], cache)
        steps.append(h)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_padded_keys_change_nothing_before_them():
    model, x = tiny(), torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    out, _ = model(x, mask)
    short, _ = model(x[1:, :3], mask[1:, :3])
    torch.testing.assert_close(out[1, :3], short[0], atol=1e-5, rtol=1e-5)


def test_same_numbers_as_transformers_gpt2():
    import transformers  # the test extra installs it; a skip here would hide a missing install

    ours = tiny()
    cfg = transformers.GPT2Config(vocab_size=1, n_positions=16, n_embd=32, n_layer=2,
                                  n_head=4, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)  # fmt: skip
    theirs = transformers.GPT2Model(cfg).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all(".attn.bias" in k or "masked_bias" in k for k in missing)
    x, mask = torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ref = theirs(inputs_embeds=x, attention_mask=mask).last_hidden_state
    out, _ = ours(x, mask)
    keep = mask.bool()  # padded positions' own outputs are never read
    torch.testing.assert_close(out[keep], ref[keep], atol=1e-5, rtol=1e-5)
