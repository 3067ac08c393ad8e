"""The one reader of ComfyUI's attention call (attention/attention_call.py), without ComfyUI: the
two layouts, the mask positional or by keyword, and a replaced tensor reaching the host function."""

from __future__ import annotations

import torch

from comfyui_prompt_edit.attention.attention_call import AttentionCall


def host(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False, skip_output_reshape=False,
         transformer_options=None):
    """ComfyUI's optimized_attention's signature: plain attention, [B, L, H·D] unless told otherwise."""
    if not skip_reshape:
        q, k, v = (x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2) for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out if skip_output_reshape else out.transpose(1, 2).flatten(2)


def test_a_flat_call_reads_heads_tokens_and_its_positional_mask():
    q, k, v = (torch.randn(2, 5, 3 * 4, generator=torch.Generator().manual_seed(s)) for s in range(3))
    mask = torch.zeros(5, 5)
    call = AttentionCall.read((q, k, v, 3, mask), {"transformer_options": {"block_index": 1}})
    assert call.heads == 3 and call.token_axis == 1 == call.output_token_axis and call.length == 5
    assert call.options == {"block_index": 1} and call.mask_4d().shape == (1, 1, 5, 5)
    assert call.heads_first(q).shape == (2, 3, 5, 4)
    assert torch.equal(call.heads_first(q).transpose(1, 2).flatten(2), q)


def test_a_heads_first_call_with_a_keyword_mask_and_replaced_keys_reaches_the_host():
    q, k, v = (torch.randn(1, 2, 6, 4, generator=torch.Generator().manual_seed(s)) for s in range(3))
    text_mask = torch.zeros(1, 1, 6)
    text_mask[..., -1] = -torch.inf
    kwargs = {"mask": text_mask, "skip_reshape": True, "skip_output_reshape": True}
    call = AttentionCall.read((q, k, v, 2), kwargs)
    assert call.token_axis == 2 == call.output_token_axis and call.length == 6 and call.options == {}
    assert call.mask_4d().shape == (1, 1, 1, 6) and call.heads_first(k) is k
    other = torch.randn(1, 2, 6, 4)
    out = call.with_tensors(k=other).run(host)
    torch.testing.assert_close(out, host(q, other, v, 2, mask=text_mask.unsqueeze(1), skip_reshape=True,
                                         skip_output_reshape=True))
    assert not torch.allclose(out, call.run(host))  # the replaced keys were used
    layered = []
    call.run(host, then=lambda func, *args, **kw: layered.append(len(args)) or func(*args, **kw))
    assert layered == [4]  # an override layered under gets the call as the host made it


def test_what_is_not_an_attention_call_on_tensors_is_not_read():
    assert AttentionCall.read((1, 2, 3), {}) is None
    assert AttentionCall.read((torch.zeros(1),), {}) is None
