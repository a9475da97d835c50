"""Cross-attention maps: faithful to the layers, no change to the outputs, CLIP's split of the prompt."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from playground import tokens
from playground.attention import capture
from playground.attention.capture import AttentionRecorder, cross_attention_layers, recording
from playground import settings as settings_mod
from playground.engine import Engine
from playground.loading import load_model
from playground.errors import InvalidRequest
from playground.schema import GenerateRequest, InspectRequest
from playground.sampling import Job, denoise

from playground.tiny import analyse

from conftest import tiny_settings

REQ = GenerateRequest(prompt="a red circle on a blue background", negative_prompt="blurry ugly", seed=3, steps=5,
                      cfg_scale=5, scheduler="DDIM", width=64, height=64)


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir))


@pytest.fixture(scope="module")
def traj(engine):
    return engine.inspect(REQ)


def find(engine, traj, word):
    """The kept-token indices of `word` in a recorded trajectory, as the inspector looks a word up."""
    return tokens.find_word(traj.attention.tokens, word, engine.model.pipe.tokenizer)


def split(engine, prompt):
    return tokens.split_prompt(engine.model.pipe.tokenizer, prompt)


def job(prompt="a red circle", guidance=5.0, steps=4) -> Job:
    return Job(scheduler="DDIM", prompts=[prompt], negative_prompts=["blurry"], guidance=[guidance],
               generators=[torch.Generator().manual_seed(1)], steps=steps, height=64, width=64)


def recorded_run(engine, recorder, j=None):
    """Our loop under a recording, ending each step as the Engine's observer does."""
    with recording(cross_attention_layers(engine.components.unet), recorder):
        return denoise(engine.components, j or job(), observer=lambda s: recorder.end_step(s.index, s.total))


def test_recording_leaves_the_outputs_identical_and_the_layers_as_they_were(engine):
    unet = engine.components.unet
    before = [type(layer.processor) for _, layer in cross_attention_layers(unet)]
    plain = denoise(engine.components, job())
    recorder = AttentionRecorder(sample=1, tokens=5, latent_hw=(8, 8))
    recorded = recorded_run(engine, recorder)
    assert recorder.recorded == 4 and recorder.buffers  # it did record
    assert float((plain.images - recorded.images).abs().max()) <= 1e-5  # fp32
    assert float((plain.latents - recorded.latents).abs().max()) <= 1e-5
    # afterwards every cross-attention layer has its own processor back; self-attention was never wrapped
    assert [type(layer.processor) for _, layer in cross_attention_layers(unet)] == before
    assert not any(isinstance(m.processor, capture.RecordingProcessor) for _, m in unet.named_modules()
                   if hasattr(m, "processor"))


def test_one_layer_recorded_equals_the_hand_computation(engine):
    """The 4x4 resolution has one cross-attention layer (the mid block's): its recorded map at step 0 is
    softmax(Q K^T / sqrt(d)) from that layer's own to_q / to_k weights and the inputs it was given."""
    unet = engine.components.unet
    layer = unet.mid_block.attentions[0].transformer_blocks[0].attn2
    seen = []
    hook = layer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0].clone(), kwargs["encoder_hidden_states"].clone())),
        with_kwargs=True)
    try:
        recorder = AttentionRecorder(sample=1, tokens=77, latent_hw=(8, 8))
        recorded_run(engine, recorder)
    finally:
        hook.remove()
    assert recorder.layers[(4, 4)] == 1
    hidden, text = seen[0]  # step 0; batch [negative, prompt]: the prompt is row 1
    with torch.no_grad():
        q = hidden[1] @ layer.to_q.weight.T  # (16 positions, inner)
        k = text[1] @ layer.to_k.weight.T  # (77 tokens, inner)
        heads, d = layer.heads, k.shape[-1] // layer.heads
        probs = torch.stack([torch.softmax(q[:, h * d:(h + 1) * d] @ k[:, h * d:(h + 1) * d].T / d**0.5, dim=-1)
                             for h in range(heads)]).mean(0)  # (16, 77)
    want = probs.T.reshape(77, 4, 4)
    got = recorder.buffers[(4, 4)][0].float()
    assert torch.allclose(got, want, atol=2e-3)  # stored in float16


def test_maps_over_all_77_tokens_sum_to_one_at_every_position(engine):
    recorder = AttentionRecorder(sample=1, tokens=77, latent_hw=(8, 8))
    recorded_run(engine, recorder)
    assert set(recorder.buffers) == {(8, 8), (4, 4)}
    for grid, maps in recorder.buffers.items():  # (steps, 77, h, w), the mean over the layers there
        assert torch.allclose(maps.float().sum(1), torch.ones(4, *grid), atol=1e-2)
    # and exactly, before storage, for any layer and input
    layer = cross_attention_layers(engine.components.unet)[0][1]
    probs = capture.cross_attention_probs(layer, torch.randn(2, 64, layer.to_q.in_features),
                                            torch.randn(2, 77, layer.to_k.in_features))
    assert probs.shape == (2, 64, 77) and torch.allclose(probs.sum(-1), torch.ones(2, 64), atol=1e-5)


def test_another_threads_run_is_not_recorded_while_one_records(engine):
    recorder = AttentionRecorder(sample=0, tokens=5, latent_hw=(8, 8))
    other: dict = {}
    with recording(cross_attention_layers(engine.components.unet), recorder):
        thread = threading.Thread(target=lambda: other.setdefault("out", denoise(engine.components, job())))
        thread.start()
        thread.join()
    assert recorder.recorded == 0 and not recorder.buffers and not recorder._sum
    assert float((other["out"].images - denoise(engine.components, job()).images).abs().max()) <= 1e-5


def test_the_inspector_records_the_prompts_tokens(engine, traj):
    a = traj.attention
    assert a.of == "prompt"
    assert [t.text for t in a.kept] == ["<start>", "a", "red", "circle", "on", "a", "blue", "background", "<end>"]
    assert a.layers == {(8, 8): 3, (4, 4): 1} and a.steps == 5 and a.window == 77
    assert {g: tuple(m.shape) for g, m in a.maps.items()} == {(8, 8): (5, 9, 8, 8), (4, 4): (5, 9, 4, 4)}
    assert a.nbytes == 5 * 9 * (64 + 16) * 2  # float16
    # all resolutions: the layer-weighted mean, upsampled to the latent grid
    step = a.stack(step=2)
    fine, coarse = a.stack(2, "8x8"), a.stack(2, "4x4")
    assert step.shape == fine.shape == coarse.shape == (9, 8, 8)
    np.testing.assert_allclose(step, (3 * fine + coarse) / 4, atol=1e-5)
    np.testing.assert_allclose(fine, a.maps[(8, 8)][2].float().numpy(), atol=1e-6)
    np.testing.assert_allclose(a.stack(None, "8x8"), a.maps[(8, 8)].float().sum(0).numpy(), atol=1e-4)
    assert 0 < a.share().sum() <= 1.0 + 1e-3 and a.share(step=0).shape == (9,)
    np.testing.assert_allclose(a.share(step=2), step.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(a.share(), a.stack(None).mean(axis=(1, 2)) / 5, rtol=1e-6)  # summed: per step
    with pytest.raises(InvalidRequest, match="'32x32'.*choose one of: all, 4x4, 8x8"):
        a.stack(0, "32x32")


def test_negative_prompt_attention_and_off(engine, traj):
    neg = engine.inspect(InspectRequest(REQ, "negative"))
    assert neg.attention.of == "negative" and [t.text for t in neg.attention.kept] == ["<start>", "blurry", "ugly",
                                                                                       "<end>"]
    # the same picture: recording changes nothing
    assert np.array_equal(np.asarray(neg.image), np.asarray(traj.image))
    assert engine.inspect(InspectRequest(REQ, "off")).attention is None
    with pytest.raises(InvalidRequest, match="CFG scale other than 1"):
        engine.inspect(InspectRequest(GenerateRequest(**{**REQ.__dict__, "cfg_scale": 1.0}), "the negative prompt"))
    with pytest.raises(InvalidRequest, match="unknown attention of 'both'"):
        engine.inspect(InspectRequest(REQ, "both"))
    # without CFG the batch is the prompt alone, and its maps are still recorded
    alone = engine.inspect(GenerateRequest(**{**REQ.__dict__, "cfg_scale": 1.0}))
    assert alone.attention.steps == 5


def test_the_prompt_as_clip_splits_it(engine):
    short = split(engine, "a red circle")
    assert [(t.text, t.kind) for t in short] == [("<start>", "start"), ("a", "word"), ("red", "word"),
                                                  ("circle", "word"), ("<end>", "end")]
    long = split(engine, " ".join(["red"] * 80))
    kinds = [t.kind for t in long]
    assert kinds.count("word") == 75 and kinds.count("dropped") == 5 and kinds[76] == "end"
    assert len(tokens.kept(long)) == 77 and [t.position for t in tokens.kept(long)] == list(range(77))


def test_finding_a_word(engine, traj):
    assert find(engine, traj, "red") == [2]
    assert find(engine, traj, " Blue ") == [6]
    assert find(engine, traj, "<end>") == [8]
    with pytest.raises(InvalidRequest, match="word 'green' is not among the prompt's tokens.*'red'"):
        find(engine, traj, "green")
    # a word CLIP splits into pieces is all of its pieces
    split_up = split(engine, "a xylophonist")
    pieces = engine.model.pipe.tokenizer.tokenize("xylophonist")
    assert len(pieces) > 1
    assert tokens.find_word(split_up, "xylophonist", engine.model.pipe.tokenizer) == list(range(2, 2 + len(pieces)))


def test_layer_grids_round_up_like_the_unet():
    assert capture.layer_grid(64 * 64, (64, 64)) == (64, 64)
    assert capture.layer_grid(8 * 8, (64, 64)) == (8, 8)
    assert capture.layer_grid(5 * 3, (9, 5)) == (5, 3)  # 9x5 -> 5x3 -> 3x2
    assert capture.layer_grid(3 * 2, (9, 5)) == (3, 2)
    with pytest.raises(ValueError, match="7 positions"):
        capture.layer_grid(7, (64, 64))
    assert capture.mass_centre(np.pad(np.ones((2, 2)), ((0, 6), (6, 0)))) == (0.875, 0.125)


def test_the_pictures_of_a_token(engine, traj):
    from PIL import Image

    from playground.views import overlay

    v = engine.attention_view(traj, 2, "red", "all")
    a = traj.attention
    assert v.token == "red" and v.at_step.size == v.summed.size == traj.image.size
    assert [caption.split(" · ")[0] for _, caption in v.strip] == [t.text for t in a.kept]
    heat = a.stack(2)[2]
    assert v.low == pytest.approx(float(heat.min())) and v.high == pytest.approx(float(heat.max()))
    assert v.share == pytest.approx(float(a.share(2)[2]))
    assert v.together == pytest.approx(float(a.share(2).sum())) and 0 < v.together <= 1
    assert a.resolution_names == ["all", "4x4", "8x8"]
    # no decoded x0 yet: the step's linear preview is the backdrop; once decoded, the decode is
    engine.decode_x0(traj, 2)
    assert np.asarray(engine.attention_view(traj, 2, 2, "all").at_step).tolist() != np.asarray(v.at_step).tolist()
    # a hot corner is bright there over a grey image, dark elsewhere
    hot = np.zeros((8, 8))
    hot[:2, :2] = 1.0
    pic = np.asarray(overlay(Image.new("RGB", (64, 64), (128, 128, 128)), hot), dtype=float)
    assert pic[:8, :8].mean() > 150 > 60 > pic[40:, 40:].mean()
    with pytest.raises(InvalidRequest, match="token must be an integer from 0 to 8"):
        engine.attention_view(traj, 2, 9, "all")
    with pytest.raises(InvalidRequest, match="without attention maps"):
        engine.attention_view(engine.inspect(InspectRequest(REQ, "off")), 2, 0)


def test_focus_ignores_the_floor_every_token_gets():
    heat = np.full((8, 8), 0.3)
    heat[:2, 6:] = 0.5  # a little more at the top right, over a floor that alone would centre the mass
    assert capture.mass_centre(heat)[0] < 0.6
    assert capture.focus(heat) == pytest.approx((0.875, 0.125))


# ---------------------------------------------------------------- the offline model

@pytest.fixture(scope="module")
def offline() -> Engine:
    settings = dataclasses.replace(settings_mod.Settings(model="bundled", device="cpu"), safety_checker=False)
    return Engine(load_model(settings), settings)


@pytest.mark.slow
@pytest.mark.parametrize("prompt", [
    "a large red square at the top left on a black background",
    "a large blue circle at the bottom right on a white background",
    "a large green triangle on the right on a gray background",
    "a large yellow star at the top on a black background",
])
def test_the_offline_models_colour_and_shape_words_attend_to_the_object(offline, prompt):
    """The mass centre of "red" and of "square", summed over the steps, lies on the
    object the model drew (its bounding box, as the analyser finds it), wherever the prompt put it."""
    traj = offline.inspect(GenerateRequest(prompt=prompt, seed=0, steps=25, scheduler="DDIM"))
    found = analyse.analyse(traj.image).objects
    assert found, f"nothing drawn for {prompt!r}"
    x, y, w, h = found[0].bbox
    size = traj.image.size
    summed = traj.attention.stack()
    for word in prompt.split()[2:4]:
        fx, fy = capture.focus(summed[find(offline, traj, word)].sum(0))
        cx, cy = fx * size[0], fy * size[1]
        assert x <= cx <= x + w and y <= cy <= y + h, (word, (round(cx), round(cy)), found[0].bbox)



def test_the_attention_call_validates_its_request_once(engine, monkeypatch):
    from playground import validation

    calls = []
    real = validation.validate_generate
    monkeypatch.setattr(validation, "validate_generate", lambda req, limits: calls.append(req) or real(req, limits))
    traj, view = engine.attention(InspectRequest(REQ, "prompt", "blue", "all"))
    assert len(calls) == 1 and view.token == "blue" and traj.attention.steps == REQ.steps
