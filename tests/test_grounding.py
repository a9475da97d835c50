"""The grounding loss: which words name which region of a training scene, and the loss on the maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from playground.tiny import arch, grounding, world
from playground.tiny.vocab import build_tokenizer

# the offline model's layout (three levels, cross-attention at 16x16, 8x8 and 4x4) at a tenth of its widths
NARROW = dataclasses.replace(arch.OFFLINE, unet_channels=(16, 32, 32), unet_groups=4, text_width=32, text_layers=1,
                             text_heads=2)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def named(tokenizer, scene):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(scene.caption).input_ids)
    return {tokens[i].removesuffix("</w>") + f"@{i}": region
            for i, region in grounding.word_regions(tokens, scene.objects, scene.background).items()}


def test_each_objects_words_name_that_object_even_when_both_are_squares(tokenizer):
    objects = [("yellow", "square", 92, 92, 36), ("cyan", "square", 36, 36, 36)]
    scene = world.Scene("a yellow square at the bottom right and a cyan square at the top left on a white background",
                        world.render_shapes(objects, "white"), objects=objects, background="white")
    assert named(tokenizer, scene) == {"yellow@2": 0, "square@3": 0, "cyan@10": 1, "square@11": 1,
                                       "white@18": grounding.BACKGROUND}


def test_training_scenes_name_their_objects_in_the_captions_order(tokenizer):
    seen = set()
    for seed in range(200):
        scene = world.sample(seed)
        regions = named(tokenizer, scene)
        if not scene.objects:  # a person: nothing grounded
            assert regions == {} and "person" in scene.caption
            continue
        for k, (colour, shape, *_) in enumerate(scene.objects):
            assert {w.split("@")[0] for w, r in regions.items() if r == k} == {colour, shape}, scene.caption
        assert [w.split("@")[0] for w, r in regions.items() if r == grounding.BACKGROUND] == [scene.background]
        seen.add(len(scene.objects))
    assert seen == {1, 2}


def test_masks_cover_each_drawn_object_and_the_background_the_rest():
    objects = [("red", "square", 32, 32, 48), ("blue", "circle", 96, 96, 32)]
    masks = grounding.object_masks(objects)
    assert masks.shape == (3, 16, 16)
    assert masks[0, 2:6, 2:6].min() == pytest.approx(1) and masks[0, 8:, 8:].max() == 0
    ys, xs = np.nonzero(masks[1] > 0.5)
    assert abs(xs.mean() - 11.5) < 0.6 and abs(ys.mean() - 11.5) < 0.6  # centred at 96 px = cell 11.5
    np.testing.assert_allclose(masks.sum(0), 1, atol=1e-6)


def test_the_loss_is_zero_inside_the_region_and_grows_with_the_attention_outside():
    masks, weights = torch.zeros(1, 77, 16, 16), torch.zeros(1, 77)
    masks[0, 2, :4, :4], weights[0, 2] = 1, 1  # token 2 names the top-left 4x4 cells
    inside = torch.full((1, 256, 77), 1 / 77)
    inside[0, :, 2] = 0
    inside[0, torch.arange(256).reshape(16, 16)[:4, :4].flatten(), 2] = 1  # token 2 attended only there
    outside = inside.flip(1)  # the same attention at the bottom right
    assert grounding.loss([inside], masks, weights) == pytest.approx(0, abs=1e-6)
    assert grounding.loss([outside], masks, weights) == pytest.approx(1, abs=1e-6)
    uniform = torch.full((1, 256, 77), 1 / 77)  # everywhere alike: inside is the region's share, 16/256
    assert grounding.loss([uniform], masks, weights) == pytest.approx((1 - 16 / 256) ** 2, abs=1e-5)
    coarse, odd = torch.full((1, 64, 77), 1 / 77), torch.zeros(1, 77, 16, 16)  # an 8x8 layer: masks pooled by area
    odd[0, 2, :3, :3] = 1  # 3x3 fine cells: 1 + 0.5 + 0.5 + 0.25 coarse cells' worth
    assert grounding.loss([coarse], odd, weights) == pytest.approx((1 - 2.25 / 64) ** 2, abs=1e-5)
    assert grounding.loss([outside], masks, torch.zeros(1, 77)) == 0  # nothing grounded (an empty caption)


@pytest.mark.tiny  # a narrow U-Net built here
def test_capture_hands_over_every_cross_attention_map_with_its_gradient_and_leaves_the_output_alone(tokenizer):
    torch.manual_seed(0)
    unet, text = arch.new_unet(NARROW), arch.new_text_encoder(NARROW, tokenizer)
    ids = tokenizer(["a red square on a white background"], padding="max_length", max_length=77,
                    return_tensors="pt").input_ids
    hidden = text(ids).last_hidden_state
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    with torch.no_grad():
        plain = unet(x, t, hidden).sample
    capture = grounding.Capture(unet)
    with capture.active() as probs:
        out = unet(x, t, hidden).sample
    torch.testing.assert_close(out, plain)
    assert len(probs) == 7 and sorted({p.shape[1] for p in probs}) == [16, 64, 256]  # 16x16, 8x8, 4x4 layers
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(1, 256))
    scene = world.sample(0, "shape")
    grounding.loss(probs, *grounding.targets(tokenizer, [scene], [scene.caption])).backward()
    assert text.embeddings.token_embedding.weight.grad.abs().sum() > 0  # the words' keys learn from it
    with grounding.Capture(None).active() as nothing:  # grounding off: nothing recorded, processors untouched
        unet(x, t, hidden)
    assert nothing == [] and all(type(p).__name__ != "_Recorded" for p in unet.attn_processors.values())


@pytest.mark.tiny  # a narrow U-Net built here
def test_agreement_pulls_the_unconditional_prediction_onto_the_conditional_one_on_low_noise_steps_only(tokenizer):
    from playground.tiny import stages

    torch.manual_seed(0)
    unet, text = arch.new_unet(NARROW), arch.new_text_encoder(NARROW, tokenizer)
    captions = ["a red square on a white background", "", "a blue circle on a black background",
                "a green star on a gray background"]
    ids = tokenizer(captions, padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden, empty = text(ids).last_hidden_state, stages.encode_captions(tokenizer, text, [""], "cpu")
    x = torch.randn(4, 4, 16, 16)
    late = int(1000 * stages.AGREE_BELOW) - 1
    t = torch.tensor([late, late, late, 999])  # the third low-noise, the last noisy; the second has no caption
    pred = unet(x, t, hidden).sample
    loss = stages.agreement(unet, x, t, empty, pred, captions, 1000)
    with torch.no_grad():  # by hand: the unconditional prediction of the captioned low-noise samples only
        uncond = unet(x[[0, 2]], t[[0, 2]], empty.expand(2, -1, -1)).sample
    torch.testing.assert_close(loss, ((uncond - pred[[0, 2]]) ** 2).mean())
    loss.backward()
    assert unet.conv_in.weight.grad.abs().sum() > 0 and text.embeddings.token_embedding.weight.grad.abs().sum() > 0
    # only the empty caption's token learns from it: the conditional side is held fixed
    red = tokenizer.convert_tokens_to_ids("red</w>")
    assert text.embeddings.token_embedding.weight.grad[red].abs().sum() == 0
    noisy_only = stages.agreement(unet, x, torch.full((4,), 999), empty, pred, captions, 1000)
    assert noisy_only.item() == 0  # no low-noise sample: nothing to agree on
