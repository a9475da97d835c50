"""The lesson's three exercises against hand computations on small cases."""

from __future__ import annotations

import math

import torch

from playground import exercises


def test_compression_at_each_size_as_counted_by_hand():
    rows = {r.size: r for r in exercises.compression(factor=8, channels=4)}
    assert list(rows) == [256, 512, 768, 1024]
    r = rows[512]  # 512 x 512 x 3 = 786,432 numbers; 64 x 64 x 4 = 16,384 latents
    assert (r.pixel_numbers, r.latent_numbers, r.ratio) == (786_432, 16_384, 48.0)
    assert r.saved_bytes == 4 * (786_432 - 16_384) == 3_080_192 and r.latent_runs == 48
    assert rows[256].latent_numbers == 32 * 32 * 4 and rows[1024].pixel_numbers == 3_145_728
    sd3 = exercises.compression(factor=8, channels=16, sizes=(1024,))[0]  # SD3's 16-channel VAE: 12x
    assert (sd3.latent_numbers, sd3.ratio, sd3.latent_runs) == (262_144, 12.0, 12)


def test_cfg_response_on_two_predictions_by_hand():
    # uncond (1, 0), cond (1, 1): the direction is (0, 1), guided(s) = (1, s)
    out = exercises.cfg_response(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    rows = {r.scale: r for r in out.rows}
    assert list(rows) == [float(s) for s in range(1, 21)]
    assert math.isclose(rows[1].cosine, 1 / math.sqrt(2)) and math.isclose(rows[1].norm_ratio, 1.0)
    assert math.isclose(rows[3].cosine, 3 / math.sqrt(10))  # (1, 3) . (0, 1) / |(1, 3)|
    assert math.isclose(rows[4].norm_ratio, math.sqrt(17 / 2))  # 2.92: not yet 3x
    assert math.isclose(rows[5].norm_ratio, math.sqrt(26 / 2))  # 3.61
    assert math.isclose(rows[3].amplification, 2 / math.sqrt(2))  # |(1, 3) - (1, 1)| / |(1, 1)|
    assert out.passes_3x == 5.0
    assert exercises.cfg_response(torch.ones(4), torch.ones(4)).passes_3x is None  # no direction: no growth


def test_the_knee_is_where_doubling_stops_paying():
    assert exercises.knee([(5, 1.0), (10, 0.5), (20, 0.46), (40, 0.45)]) == 10  # 0.5 -> 0.46 is 8%
    assert exercises.knee([(5, 1.0), (10, 0.5), (20, 0.25)]) is None  # every doubling halves it
    assert exercises.knee([(10, 0.5), (5, 1.0), (40, 0.2), (20, 0.21)]) == 20  # order does not matter
    assert exercises.halvings([(5, 1.0), (10, 0.5), (20, 0.45)]) == [0.5, 0.09999999999999998]


def test_the_toy_shows_the_odes_discretisation_falling_first_order():
    errors = exercises.toy_step_errors(samples=256)
    assert [n for n, _ in errors] == [5, 10, 20, 40, 80, 160]
    values = [e for _, e in errors]
    assert all(a > b > 0 for a, b in zip(values, values[1:]))  # more steps, less error, never none
    assert values[-1] < 0.01 * values[0]
    assert all(0.4 < cut < 0.75 for cut in exercises.halvings(errors)[-3:])  # first order: about halved each time
