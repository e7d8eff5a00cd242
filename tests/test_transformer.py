"""Music Transformer model: relative attention (skewing), kernels, causality, KV cache, sampling, model files."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ambientgen.models import decode
from ambientgen.models.sampling import generate_tokens, sample_next
from ambientgen.models.transformer import CONFIGS, MusicTransformer, TransformerConfig, get_config, rel_logits
from ambientgen.models.weights import load_model_dir, save_model_dir
from ambientgen.util import StageError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small tensors: one thread is faster than two and does not fight the other tests for the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_cfg(**kw) -> TransformerConfig:
    return TransformerConfig(**{**dict(vocab_size=40, n_layer=2, n_head=4, d_model=32, d_ff=64, max_len=48,
                                       dropout=0.0), **kw})


def model64(**kw) -> MusicTransformer:
    torch.manual_seed(0)
    return MusicTransformer(small_cfg(**kw)).double().eval()


def test_skewed_relative_logits_equal_per_pair_dot_products():
    torch.manual_seed(1)
    H, L, D, M = 3, 17, 8, 24
    q = torch.randn(2, H, L, D, dtype=torch.float64)
    er = torch.randn(H, M, D, dtype=torch.float64)  # distance r is stored at index M-1-r
    ref = torch.zeros(2, H, L, L, dtype=torch.float64)
    for i in range(L):
        for j in range(i + 1):
            ref[:, :, i, j] = (q[:, :, i] * er[:, M - 1 - (i - j)]).sum(-1)
    lower = torch.ones(L, L, dtype=torch.bool).tril()
    got = rel_logits(q, er, past=0)
    assert torch.allclose(got[..., lower], ref[..., lower])
    # queries after cached keys (a block and a single query) see the same relative logits
    blk = rel_logits(q[:, :, 9:], er, past=9)
    assert torch.allclose(blk[..., lower[9:]], ref[:, :, 9:][..., lower[9:]])
    one = rel_logits(q[:, :, 12:13], er, past=12)
    assert torch.allclose(one[..., :13], ref[:, :, 12:13, :13])


@pytest.mark.parametrize("attention", ["relative", "vanilla"])
def test_attention_kernels_agree_forward_and_backward(attention):
    x = torch.randint(2, 40, (3, 30))
    results = {}
    for impl in ("explicit", "sdpa"):
        m = model64(attention=attention)
        m.set_attn_impl(impl)
        logits, loss = m(x, x)
        loss.backward()
        results[impl] = (logits, {n: p.grad.clone() for n, p in m.named_parameters()})
    (la, ga), (lb, gb) = results["explicit"], results["sdpa"]
    assert torch.allclose(la, lb, atol=1e-10)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-9), n
    if attention == "relative":
        assert any(n.endswith("attn.er") for n in ga) and all(ga[n].abs().sum() > 0 for n in ga if n.endswith(".er"))


def test_flex_attention_matches_without_grad():
    m = model64()
    x = torch.randint(2, 40, (2, 20))
    with torch.no_grad():
        m.set_attn_impl("explicit")
        a, _ = m(x)
        m.set_attn_impl("flex")
        b, _ = m(x)
    assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("attention", ["relative", "vanilla"])
def test_causal_future_tokens_do_not_change_past_logits(attention):
    m = model64(attention=attention)
    x = torch.randint(2, 40, (1, 25))
    y = x.clone()
    y[0, 15:] = (y[0, 15:] + 7) % 38 + 2
    with torch.no_grad():
        a, _ = m(x)
        b, _ = m(y)
    assert torch.allclose(a[:, :15], b[:, :15], atol=1e-12)
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_relative_and_vanilla_differ_in_position_parameters():
    rel = MusicTransformer(small_cfg())
    van = MusicTransformer(small_cfg(attention="vanilla"))
    shared = MusicTransformer(small_cfg(rel_shared_heads=True))
    assert rel.wpe is None and van.wpe is not None
    assert rel.blocks[0].attn.er.shape == (4, 48, 8)  # per head, per layer, max_len distances
    assert shared.blocks[0].attn.er.shape == (1, 48, 8)
    assert not hasattr(van.blocks[0].attn, "er")
    assert "blocks.0.attn.er" in dict(rel.named_parameters())


def test_paper_config_and_sizes():
    base = get_config("base")
    assert (base.n_layer, base.d_model, base.n_head, base.d_ff, base.max_len) == (6, 512, 8, 2048, 2048)
    assert base.vocab_size == 390 and set(CONFIGS) >= {"tiny", "small", "base"}
    with pytest.raises(ValueError, match="unknown model config keys"):
        TransformerConfig.from_dict({**base.to_dict(), "n_layers": 3})
    tied = MusicTransformer(small_cfg())
    untied = MusicTransformer(small_cfg(tie_embeddings=False))
    assert tied.head.weight is tied.wte.weight and untied.head.weight is not untied.wte.weight


def test_loss_is_mean_over_non_pad_tokens():
    m = model64()
    x = torch.randint(2, 40, (2, 12))
    y = torch.randint(2, 40, (2, 12))
    y[1, 7:] = 0  # padding
    logits, loss = m(x, y)
    ce = F.cross_entropy(logits.reshape(-1, 40), y.reshape(-1), reduction="none").reshape(2, 12)
    mask = y != 0
    assert torch.allclose(loss, ce[mask].mean())
    assert not torch.allclose(loss, ce.sum())


@pytest.mark.parametrize("attention", ["relative", "vanilla"])
def test_kv_cache_gives_the_same_logits(attention):
    m = model64(attention=attention)
    x = torch.randint(2, 40, (2, 30))
    with torch.no_grad():
        full, _ = m(x)
        caches = m.new_caches(2)
        parts = [m(x[:, :11], caches=caches)[0], m(x[:, 11:12], caches=caches)[0], m(x[:, 12:30], caches=caches)[0]]
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(attention="relative"), dict(attention="vanilla"),
                                dict(rel_shared_heads=True, bias=False, tie_embeddings=False)])
def test_lean_decoding_step_gives_the_forward_logits(kw, monkeypatch):
    torch.manual_seed(3)
    m = MusicTransformer(small_cfg(**kw, dropout=0.1)).eval()  # fp32, dropout off at inference
    x = torch.randint(2, 40, (3, 20))
    steps = []
    real = decode.step
    monkeypatch.setattr(decode, "step", lambda *a: steps.append(1) or real(*a))
    with torch.no_grad():
        full, _ = m(x)
        caches = m.new_caches(3)
        parts = [m(x[:, :8], caches=caches)[0]] + [m(x[:, i:i + 1], caches=caches)[0] for i in range(8, 20)]
    assert len(steps) == 12 and caches[0].pos == 20
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5, rtol=0)
    m.train()  # training, or a gradient asked for, takes the module path
    with torch.no_grad():
        m(x[:, :1], caches=m.new_caches(3))
    assert len(steps) == 12
    small = m.eval().new_caches(3, capacity=1)
    with torch.no_grad(), pytest.raises(ValueError, match="cache is full"):
        m(x[:, :1], caches=small)
        m(x[:, 1:2], caches=small)
    assert len(steps) == 14 and small[0].pos == 1


@pytest.mark.parametrize("attention", ["relative", "vanilla"])
def test_generation_with_cache_gives_exactly_the_same_tokens(attention):
    m = model64(attention=attention)
    prompt = torch.randint(2, 40, (3, 5))
    kw = dict(temperature=1.3, top_k=30, top_p=0.95, seed=11, stop_at_eos=False)
    # 70 new tokens > max_len 48: the context window slides (and the cache is refilled from the last half)
    with_cache = generate_tokens(m, prompt, 70, use_cache=True, window="restart", **kw)
    without = generate_tokens(m, prompt, 70, use_cache=False, **kw)
    assert with_cache.shape == (3, 75)
    assert torch.equal(with_cache, without)
    assert not torch.equal(with_cache[0], with_cache[1])  # batch rows sample independently
    assert torch.equal(generate_tokens(m, prompt, 70, use_cache=True, window="restart", **kw), with_cache)  # seeded
    assert not torch.equal(generate_tokens(m, prompt, 70, use_cache=True, window="restart", **{**kw, "seed": 12}),
                           with_cache)


def test_rolling_cache_keeps_the_context_instead_of_restarting(monkeypatch):
    m = model64(attention="relative")
    prompt = torch.randint(2, 40, (2, 5))
    kw = dict(temperature=1.3, top_k=30, top_p=0.95, seed=11, stop_at_eos=False)
    rolled = generate_tokens(m, prompt, 120, **kw)  # the default with the cache and relative attention
    exact = generate_tokens(m, prompt, 120, use_cache=False, **kw)
    # until the context is full the two are the same tokens; after it the rolling cache keeps 7/8 of the context
    assert torch.equal(rolled[:, :48], exact[:, :48]) and not torch.equal(rolled, exact)
    assert torch.equal(generate_tokens(m, prompt, 120, **kw), rolled)  # seeded
    calls = []
    real = m.forward
    monkeypatch.setattr(m, "forward", lambda idx, *a, **k: calls.append(idx.shape[1]) or real(idx, *a, **k))
    generate_tokens(m, prompt, 120, **kw)
    assert calls[0] == 5 and set(calls[1:]) == {1}  # never a refill: one token per step after the prompt
    with pytest.raises(ValueError, match="needs the cache and relative attention"):
        generate_tokens(model64(attention="vanilla"), prompt, 4, window="roll")


def test_generation_stops_at_eos_and_pads_after():
    m = model64()
    with torch.no_grad():  # every step: EOS (id 1) with probability 0.3, the 38 others (PAD is never drawn) evenly
        m.ln_f.weight.zero_()
        m.ln_f.bias.fill_(1.0)  # the final features are the same vector v whatever the input
        m.head.weight.zero_()
        m.head.weight[1] = math.log(0.3 * 38 / 0.7) / m.cfg.d_model  # logit of EOS = w . v, the others 0
    prompt = torch.full((2, 3), 5)
    out = generate_tokens(m, prompt, 40, seed=0).tolist()
    ends = []
    for row in out:
        assert 1 in row[3:], row  # with this seed both rows end within 40 tokens
        k = row.index(1, 3)
        assert all(t == 0 for t in row[k + 1:]) and 0 not in row[:k]  # PAD only after EOS
        ends.append(k)
    assert ends[0] != ends[1]  # one row ended first and was padded while the other went on
    assert len(out[0]) == max(ends) + 1  # generation stops once every row has ended


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0, 1.0]])
    gen = torch.Generator().manual_seed(0)
    assert all(int(sample_next(logits, top_k=1, generator=gen)) == 1 for _ in range(20))
    assert all(int(sample_next(logits, top_p=0.01, generator=gen)) == 1 for _ in range(20))
    topk2 = {int(sample_next(logits, top_k=2, generator=gen)) for _ in range(200)}
    assert topk2 == {1, 2}
    cold = [int(sample_next(logits, temperature=0.02, generator=gen)) for _ in range(100)]
    hot = [int(sample_next(logits, temperature=5.0, generator=gen)) for _ in range(300)]
    assert cold.count(1) > 90 and len(set(hot)) == 5
    assert all(int(sample_next(logits, banned=(1,), top_k=1, generator=gen)) == 2 for _ in range(10))


def test_model_dir_roundtrip_and_clear_errors(tmp_path):
    m = MusicTransformer(small_cfg())
    save_model_dir(m, tmp_path / "m", {"step": 5})
    loaded, meta = load_model_dir(tmp_path / "m")
    assert meta["step"] == 5
    for (n, a), (_, b) in zip(m.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]

    cfg_path = tmp_path / "m" / "config.json"
    data = json.loads(cfg_path.read_text())
    data["model"]["d_model"] = 64
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(StageError, match="model.safetensors.*do not match") as exc:
        load_model_dir(tmp_path / "m")
    assert "config.json" in str(exc.value)
    cfg_path.write_text("{not json")
    with pytest.raises(StageError, match="config.json: not a valid model config"):
        load_model_dir(tmp_path / "m")
    cfg_path.unlink()
    with pytest.raises(StageError, match="config.json: model config is missing"):
        load_model_dir(tmp_path / "m")
    save_model_dir(m, tmp_path / "n")
    (tmp_path / "n" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(StageError, match="model.safetensors: not a safetensors file"):
        load_model_dir(tmp_path / "n")


def test_a_kernel_that_fails_is_named_and_not_chosen(monkeypatch, caplog):
    import ambientgen.models.transformer as tm

    def broken(*a, **k):
        raise RuntimeError("no such kernel in this build")

    monkeypatch.setattr(tm.F, "scaled_dot_product_attention", broken)
    assert tm._first_that_runs(small_cfg(), torch.device("cpu"), ["sdpa", "explicit"]) == "explicit"
    assert "attention kernel 'sdpa' cannot run here (RuntimeError: no such kernel in this build)" in caplog.text


def test_the_kernel_is_chosen_by_rule_not_by_a_timing():
    """auto gives the same kernel every time on a device: chunked on a CPU; flex on CUDA when compiled."""
    import ambientgen.models.transformer as tm

    assert tm.kernel_order("cpu") == ["chunked", "explicit", "sdpa"]
    assert tm.kernel_order("cuda", compiled=True)[0] == "flex" and tm.kernel_order("cuda")[0] == "sdpa"
    tm._IMPL_CACHE.clear()
    picks = {MusicTransformer(small_cfg()).set_attn_impl("auto") for _ in range(3)}
    assert picks == {"chunked"}


@pytest.mark.parametrize("kept", [True, False])
def test_chunked_attention_equals_explicit_forward_and_backward(kept):
    """Blocks of CHUNK queries, their logits kept for backward or recomputed in it, give the explicit kernel's
    outputs and gradients (fp32)."""
    import ambientgen.models.transformer as tm

    length = 3 * tm.CHUNK + 17 if kept else tm.RECOMPUTE_FROM + 17  # a last block shorter than the others
    assert (length < tm.RECOMPUTE_FROM) == kept
    cfg = TransformerConfig(**{**small_cfg().to_dict(), "max_len": length + 40, "dropout": 0.0})
    torch.manual_seed(0)
    x = torch.randint(1, cfg.vocab_size, (2, length + 1))
    results = {}
    for impl in ("explicit", "chunked"):
        torch.manual_seed(1)
        m = MusicTransformer(cfg)
        m.set_attn_impl(impl)
        logits, loss = m(x[:, :-1], x[:, 1:])
        loss.backward()
        results[impl] = (logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters()})
    (la, ga), (lb, gb) = results["explicit"], results["chunked"]
    assert torch.allclose(la, lb, atol=1e-5, rtol=1e-5)
    for name in ga:
        assert torch.allclose(ga[name], gb[name], atol=1e-5, rtol=1e-4), name
    with torch.no_grad():  # and without gradients (no recomputation)
        m.set_attn_impl("chunked")
        assert torch.allclose(m(x[:, :-1])[0], la, atol=1e-5, rtol=1e-5)


def test_train_offers_every_attention_kernel():
    from ambientgen.cli import build_parser
    from ambientgen.models.transformer import ATTN_IMPLS

    train = build_parser(only="train")._subparsers._group_actions[0].choices["train"]
    choices = next(a.choices for a in train._actions if a.dest == "attn_impl")
    assert tuple(choices) == ATTN_IMPLS


def test_fast_dropout_drops_p_of_the_elements_and_rescales_the_rest():
    from ambientgen.models.transformer import fast_dropout

    torch.manual_seed(0)
    x = torch.ones(1 << 20)
    y = fast_dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.002  # 1M draws: the standard error is 0.0003
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    assert not torch.equal(fast_dropout(x, 0.1), y)  # a fresh mask each call
