"""The sounding-notes input (models/state.py): decoding's rules, block by block as token by token, in the model."""

from __future__ import annotations

import math

import pytest
import torch

from ambientgen import vocab as V
from ambientgen.models import state
from ambientgen.models.sampling import generate_tokens
from ambientgen.models.transformer import MusicTransformer, TransformerConfig
from ambientgen.models.weights import add_state_features, load_model_dir, save_model_dir

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def events(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Ons, offs (many of silent pitches) and shifts over four pitches, with velocities and PAD/EOS among them."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 5, (batch, length), generator=g)
    pitch = torch.randint(60, 64, (batch, length), generator=g)
    other = torch.randint(0, 100, (batch, length), generator=g)
    ids = torch.where(kind == 0, V.NOTE_ON_OFFSET + pitch, V.NOTE_OFF_OFFSET + pitch)
    ids = torch.where(kind == 2, V.TIME_SHIFT_OFFSET + other, ids)
    ids = torch.where(kind == 3, V.VELOCITY_OFFSET + other % 32, ids)
    return torch.where((kind == 4) & (other < 3), other % 2, ids)  # PAD or EOS now and then


def followed(ids: list[int]) -> list[list[float]]:
    """The features after each id, followed one event at a time as decoding pairs offs with ons."""
    count, start, now, out = [0] * V.NUM_PITCHES, [0] * V.NUM_PITCHES, 0, []
    for i in ids:
        if V.NOTE_ON_OFFSET <= i < V.NOTE_OFF_OFFSET:
            p = i - V.NOTE_ON_OFFSET
            start[p] = now if count[p] == 0 else start[p]
            count[p] += 1
        elif V.NOTE_OFF_OFFSET <= i < V.TIME_SHIFT_OFFSET:
            count[i - V.NOTE_OFF_OFFSET] = max(0, count[i - V.NOTE_OFF_OFFSET] - 1)  # a silent off does nothing
        elif V.TIME_SHIFT_OFFSET <= i < V.VELOCITY_OFFSET:
            now += i - V.TIME_SHIFT_OFFSET + 1
        out.append([float(c > 0) for c in count]
                   + [math.log1p((now - s) / V.STEPS_PER_SECOND) if c > 0 else 0.0 for c, s in zip(count, start)])
    return out


def test_features_follow_decodings_rules():
    ids = events(3, 160)
    feats, last = state.advance(ids, state.silence(3))
    assert feats.shape == (3, 160, state.NUM_FEATURES)
    for b in range(3):
        assert torch.allclose(feats[b], torch.tensor(followed(ids[b].tolist())), atol=1e-6)
    assert last.count.sum() > 0  # the test holds notes at the end, so the carried state is not trivially empty


def test_block_by_block_equals_all_at_once():
    ids = events(2, 120, seed=1)
    whole, end = state.advance(ids, state.silence(2))
    parts, s = [], state.silence(2)
    for a, b in [(0, 37), (37, 38), (38, 90), (90, 120)]:
        f, s = state.advance(ids[:, a:b], s)
        parts.append(f)
    assert torch.equal(torch.cat(parts, 1), whole)
    assert all(torch.equal(x, y) for x, y in zip(s, end))


def model(**kw) -> MusicTransformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(**{**dict(vocab_size=V.VOCAB_SIZE, n_layer=2, n_head=4, d_model=32, d_ff=64, max_len=64,
                                      dropout=0.0, state_features=True, state_logits=True), **kw})
    m = MusicTransformer(cfg).eval()
    if m.wse is not None:
        torch.nn.init.normal_(m.wse.weight, std=0.2)  # trained weights: the input matters
    if m.state_bias is not None:
        torch.nn.init.normal_(m.state_bias, std=0.02)
    return m


def test_the_state_changes_the_logits_and_the_cache_carries_it():
    m = model()
    ids = events(2, 50, seed=2)
    with torch.no_grad():
        full, _ = m(ids)
        caches = m.new_caches(2)
        parts = [m(ids[:, :20], caches=caches)[0]] + [m(ids[:, i:i + 1], caches=caches)[0] for i in range(20, 50)]
        plain = model(state_features=False, state_logits=False)
        plain.load_state_dict(m.state_dict(), strict=False)
        without, _ = plain(ids)
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-5, rtol=0)  # the lean step too
    assert (full - without).abs().max() > 1e-2


@pytest.mark.parametrize("window", ["roll", "restart"])
@pytest.mark.parametrize("prompt_len", [10, 70])
def test_past_max_len_the_model_still_knows_the_notes_struck_before_its_context(monkeypatch, window, prompt_len):
    m = model()
    seen = []
    real = state.advance
    monkeypatch.setattr(state, "advance", lambda ids, before: seen.append((ids.shape[1], before)) or real(ids, before))
    prompt = torch.tensor([[V.NOTE_ON_OFFSET + 60] + [V.TIME_SHIFT_OFFSET + 9] * (prompt_len - 1)])
    out = generate_tokens(m, prompt, 90 - prompt_len, seed=0, stop_at_eos=False, window=window)
    n, before = seen[-1]  # the model's last input and the state it started from
    assert n == 1 and out.shape[1] == 90
    _, expected = real(out[:, :-2], state.silence(1))  # the whole history, from its first note
    assert all(torch.equal(x, y) for x, y in zip(before, expected))
    assert expected.count[0, 60] > 0 or (out == V.NOTE_OFF_OFFSET + 60).any()


def test_the_logit_bias_is_what_its_weights_say():
    ids = torch.tensor([[V.NOTE_ON_OFFSET + 60, V.NOTE_ON_OFFSET + 64, V.TIME_SHIFT_OFFSET + 49]])  # 0.5 s
    feats, _ = state.advance(ids, state.silence(1))
    w = torch.tensor([-0.05, 0.01, 0.002, -0.03, 0.004])
    bias = state.logit_bias(feats, w)[0, -1] / state.BIAS_SCALE
    busy = math.log1p(2)
    assert bias.shape == (V.VOCAB_SIZE,)
    assert bias[V.NOTE_OFF_OFFSET + 61] == pytest.approx(-0.05 + 0.002 * busy)  # a silent pitch's off
    assert bias[V.NOTE_OFF_OFFSET + 60] == pytest.approx(0.01 * math.log1p(0.5) + 0.002 * busy)
    assert bias[V.NOTE_ON_OFFSET + 64] == pytest.approx(-0.03 + 0.004 * busy)
    assert bias[V.NOTE_ON_OFFSET + 65] == pytest.approx(0.004 * busy)
    assert not bias[:V.NOTE_ON_OFFSET].any() and not bias[V.TIME_SHIFT_OFFSET:].any()


def test_a_state_bias_needs_the_state_input():
    with pytest.raises(ValueError, match="state_features"):
        TransformerConfig(state_features=False, state_logits=True)


@pytest.mark.parametrize("had_input", [False, True])
def test_adding_the_input_to_a_model_folder_keeps_its_outputs_and_dtype(tmp_path, had_input):
    m = model(state_features=had_input, state_logits=False)
    save_model_dir(m, tmp_path / "m", {"step": 7}, dtype=torch.float16)
    m, _ = load_model_dir(tmp_path / "m")  # the fp16 weights, as the grown folder will hold them
    assert add_state_features(tmp_path / "m") and not add_state_features(tmp_path / "m")
    grown, meta = load_model_dir(tmp_path / "m")
    assert grown.cfg.state_features and grown.cfg.state_logits and meta["step"] == 7
    assert not grown.state_bias.any() and (had_input or not grown.wse.weight.any())
    from safetensors.torch import load_file
    assert {t.dtype for t in load_file(str(tmp_path / "m" / "model.safetensors")).values()} == {torch.float16}
    ids = events(2, 40, seed=3)
    with torch.no_grad():
        assert torch.allclose(grown(ids)[0], m(ids)[0], atol=1e-6)
