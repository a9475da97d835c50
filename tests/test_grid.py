"""Grid: scale parsing, the labelled layout, cell == Prompt tab output, limits, the API."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from playground import engine as engine_mod
from playground.engine import Engine
from playground.axes import layout, parse_scales
from playground.metadata import read_png
from playground.errors import InvalidRequest
from playground.schema import GenerateRequest
from playground.ui.grid import grid_request

from conftest import tiny_settings


@pytest.fixture(scope="module")
def engine(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir, max_grid_cells=6))


@pytest.mark.parametrize("text,want", [
    ("1, 3, 5, 7.5, 10, 15", [1, 3, 5, 7.5, 10, 15]),
    ("2-12 (+2)", [2, 4, 6, 8, 10, 12]),
    ("1-10 [4]", [1, 4, 7, 10]),
    ("7", [7]),
    ("0-1 (+0.25), 7.5", [0, 0.25, 0.5, 0.75, 1, 7.5]),
    (" 3 ,4, ", [3, 4]),
])
def test_parse_scales(text, want):
    assert parse_scales(text) == pytest.approx(want)


@pytest.mark.parametrize("text,words", [
    ("", "empty"), ("  ,  ", "no CFG scale"), ("a, 2", "'a'"), ("1-5 (+0)", "above 0"), ("inf", "finite"),
    ("1-5 [0]", "from 1"),
])
def test_parse_scales_errors_name_the_value(text, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("+", r"\+")):
        parse_scales(text)


def test_layout_puts_cells_in_place_and_labels_in_margins():
    red, blue = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (64, 48), "blue")
    sheet = layout([[red, blue], [blue, red]], ["Euler a", "DPM++ 2M Karras"], ["CFG 1", "CFG 7.5"])
    px = np.asarray(sheet)
    left = sheet.width - 2 * 64 - 2 * 2  # label margin (gap is 2 px for 64-px cells)
    top = sheet.height - 2 * 48 - 2 * 2
    assert left > 64 and top >= 28  # room for the longest row label and a line of text
    assert tuple(px[top + 10, left + 10]) == (255, 0, 0) and tuple(px[top + 10, left + 64 + 2 + 10]) == (0, 0, 255)
    assert tuple(px[top + 48 + 2 + 10, left + 10]) == (0, 0, 255)
    assert (px[top:, :left - 4] < 128).any()  # dark label pixels in the left margin
    assert (px[:top - 2, left:] < 128).any()  # and in the top margin


def test_a_long_title_is_drawn_whole_inside_the_sheet():
    cells = [[Image.new("RGB", (64, 64), "gray")] * 2]
    title = "“a small blue circle at the top left on a black background”  seed 1006424229, 20 steps"
    sheet = layout(cells, ["DDIM"], ["CFG 1", "CFG 3"], title=title)
    px = np.asarray(sheet)
    top = sheet.height - 64 - 2
    title_band = px[: top - 28] < 128  # dark text pixels above the column labels
    assert title_band.any() and not title_band[:, -2:].any()  # it stops before the right edge: nothing cut off
    from playground.axes import font, wrap
    lines = wrap(title, font(14), sheet.width - 4, ImageDraw.Draw(sheet))
    assert len(lines) > 1 and " ".join(lines) == " ".join(title.split())  # wrapped between words, all kept


def test_every_cell_equals_the_prompt_tab(engine):
    result = engine.grid(grid_request(prompt="a red circle", negative_prompt="blurry", seed=5, steps=4,
                                     schedulers=("Euler a", "DPM++ 2M SDE Karras"), columns="1, 4, 9",
                                     width=64, height=64))
    assert [[(c.scheduler, c.value) for c in row] for row in result.cells] == [
        [("Euler a", 1.0), ("Euler a", 4.0), ("Euler a", 9.0)],
        [("DPM++ 2M SDE Karras", 1.0), ("DPM++ 2M SDE Karras", 4.0), ("DPM++ 2M SDE Karras", 9.0)]]
    for row in result.cells:
        for cell in row:
            alone = engine.generate(GenerateRequest(prompt="a red circle", negative_prompt="blurry", seed=5, steps=4,
                                                    scheduler=cell.scheduler, cfg_scale=cell.value))
            assert np.abs(cell.generated.array - alone.images[0].array).max() <= 1e-4
            assert cell.generated.params == alone.images[0].params  # so the cell's PNG restores to it
    a, b = result.cells[0][0].generated.array, result.cells[0][2].generated.array
    assert np.abs(a - b).max() > 1e-3  # the CFG scale does change the picture


def test_costs_and_noise_levels(engine):
    result = engine.grid(grid_request(prompt="x", seed=1, steps=4, schedulers=("Heun", "DDIM"), columns="1, 7",
                                     width=64, height=64))
    assert [row[0].unet_calls for row in result.cells] == [7, 4]  # Heun: two evaluations per step but the last
    assert len(result.sigmas["Heun"]) == 7 and len(result.sigmas["DDIM"]) == 4
    assert result.sigmas["DDIM"] == sorted(result.sigmas["DDIM"], reverse=True)  # noise goes down
    # each cell holds its share of its row's one batched pass: equal within a row, adding up to the whole
    assert all(len({c.seconds for c in row}) == 1 for row in result.cells)
    assert 0 < sum(c.seconds for row in result.cells for c in row) <= result.seconds


def test_random_seed_resolves_once(engine):
    result = engine.grid(grid_request(prompt="x", seed=-1, steps=2, schedulers=("Euler",), columns="1, 5",
                                     width=64, height=64))
    seeds = {c.generated.params.seed for row in result.cells for c in row}
    assert seeds == {result.request.base.seed} and 0 <= result.request.base.seed < 2**32


def test_progress_covers_the_whole_grid(engine):
    seen = []
    engine.grid(grid_request(prompt="x", seed=1, steps=3, schedulers=("Euler", "Heun"), columns="1, 5",
                            width=64, height=64), on_progress=seen.append)
    assert [p.step for p in seen] == list(range(1, 3 + 5 + 1)) and {p.total for p in seen} == {8}
    assert seen[0].label == "Euler: cells 1-2 of 4" and seen[-1].label == "Heun: cells 3-4 of 4"


@pytest.mark.parametrize("change,words", [
    (dict(schedulers=()), "at least one scheduler"),
    (dict(schedulers=("Euler", "Nope")), "unknown scheduler 'Nope'"),
    (dict(columns="1, 2, 3, 4"), "2 schedulers x 4 CFG scales = 8 cells; the limit is 6"),
    (dict(columns="1, x"), "'x'"),
    (dict(columns="1, 45"), "CFG scale must be a number from 0 to 30, got 45"),
    (dict(columns=""), "empty"),
    (dict(steps=0), "steps"),
    (dict(width=70), "width must be a multiple of 8"),
])
def test_limits_fail_before_any_work(engine, monkeypatch, change, words):
    def no_work(*args, **kwargs):
        raise AssertionError("denoise must not run for an invalid grid")

    monkeypatch.setattr(engine_mod, "denoise", no_work)
    req = grid_request(**{**dict(prompt="x", seed=1, steps=2, schedulers=("Euler", "DDIM"), columns="1, 5",
                                width=64, height=64), **change})
    with pytest.raises(InvalidRequest, match=words.replace("(", r"\(").replace("+", r"\+")):
        engine.grid(req)


@pytest.mark.slow
def test_grid_through_gradio_client(serve):
    _, client = serve(max_grid_cells=6, grid_reference_steps=16)
    sheet, cells, table, plot, convergence, info = client.predict("a red circle", "", 11, 3, ["Euler a", "Heun"],
                                                                  "2-6 (+2)", 64, 64, api_name="/grid")
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 3 * 64 and im.height > 2 * 64
        assert "Schedulers: \"Euler a, Heun\"" in im.info["parameters"]
    assert [c["caption"] for c in cells] == ["Euler a · CFG 2", "Euler a · CFG 4", "Euler a · CFG 6",
                                             "Heun · CFG 2", "Heun · CFG 4", "Heun · CFG 6"]
    assert read_png(cells[4]["image"]).cfg_scale == 4 and read_png(cells[4]["image"]).sampler == "Heun"
    assert [row[4] for row in table["data"]] == [3, 3, 3, 5, 5, 5]  # model evaluations per cell
    assert "Seed 11" in info and "6 cells" in info
    with pytest.raises(Exception, match="the limit is 6"):
        client.predict("x", "", 1, 2, ["Euler", "DDIM", "LMS"], "1-4 [4]", 64, 64, api_name="/grid")
    # the steps axis through the same endpoint: step counts in the columns, each compared with the reference
    sheet, cells, table, plot, convergence, info = client.predict("a red circle", "", 11, 3, ["DDIM"], "2, 4, 8", 64,
                                                                  64, "steps", 5, api_name="/grid")
    assert [c["caption"] for c in cells] == ["DDIM · 2 steps", "DDIM · 4 steps", "DDIM · 8 steps"]
    assert read_png(cells[1]["image"]).steps == 4 and read_png(cells[1]["image"]).cfg_scale == 5
    assert [row[2] for row in table["data"]] == [2, 4, 8] and all(row[7] for row in table["data"])
    steps_column = convergence["columns"].index("steps")
    assert [row[steps_column] for row in convergence["data"]] == [2, 4, 8] and "16-step run" in info


# ---------------------------------------------------------------- steps as the columns

@pytest.fixture(scope="module")
def steps_engine(tiny_model, tiny_dir):
    return Engine(tiny_model, tiny_settings(tiny_dir, max_grid_cells=6, grid_reference_steps=16))


def test_steps_axis_cells_equal_the_prompt_tab_and_measure_their_distance(steps_engine):
    result = steps_engine.grid(grid_request(prompt="a red circle", negative_prompt="blurry", seed=5, cfg_scale=6,
                                            schedulers=("DDIM", "Euler a"), columns="2, 4, 16", axis="steps"))
    assert result.request.columns == (2, 4, 16) and result.reference == 16
    assert [[(c.scheduler, c.value) for c in row] for row in result.cells] == [
        [("DDIM", 2), ("DDIM", 4), ("DDIM", 16)], [("Euler a", 2), ("Euler a", 4), ("Euler a", 16)]]
    for row in result.cells:
        for cell in row:
            alone = steps_engine.generate(GenerateRequest(prompt="a red circle", negative_prompt="blurry", seed=5,
                                                          steps=int(cell.value), cfg_scale=6, scheduler=cell.scheduler))
            assert np.abs(cell.generated.array - alone.images[0].array).max() <= 1e-4
            assert cell.generated.params == alone.images[0].params
        # the cell with the reference's own step count is the reference: no distance at all
        assert row[2].psnr == float("inf") and row[2].latent_rms == 0
        assert row[0].latent_rms > 0 and np.isfinite(row[0].psnr)
    # DDIM is deterministic: more steps come closer to its long run
    ddim = result.cells[0]
    assert ddim[0].latent_rms > ddim[1].latent_rms > ddim[2].latent_rms


def test_steps_axis_progress_counts_the_reference_runs(steps_engine):
    seen = []
    steps_engine.grid(grid_request(prompt="x", seed=1, schedulers=("Heun",), columns="2, 3", axis="steps"),
                      on_progress=seen.append)
    total = (2 * 2 - 1) + (2 * 3 - 1) + (2 * 16 - 1)  # Heun: two evaluations per step but the last
    assert [p.step for p in seen] == list(range(1, total + 1)) and {p.total for p in seen} == {total}



# ---------------------------------------------------------------- where CFG stops as the columns

def test_cfg_stop_axis_cells_equal_the_prompt_tab_and_measure_their_distance(steps_engine):
    """Each column a run whose guidance stops at its value, compared with the same run guided to the end."""
    from playground.ui.grid import cell_table, cost_text, convergence_table, summary

    req = grid_request(prompt="a red circle", negative_prompt="blurry", seed=5, steps=6, cfg_scale=7,
                       schedulers=("DDIM", "Euler a"), columns="0, 0.5, 1", axis="cfg_stop")
    calls = steps_engine.grid_evaluations(req)
    assert calls == {"DDIM": 4 * 6, "Euler a": 4 * 6}  # three cells and the reference, 6 steps each
    result = steps_engine.grid(req)
    assert result.request.columns == (0, 0.5, 1) and result.reference == 1
    row = result.cells[0]
    for cell in row:
        alone = steps_engine.generate(GenerateRequest(prompt="a red circle", negative_prompt="blurry", seed=5,
                                                      steps=6, cfg_scale=7, scheduler="DDIM", cfg_stop=cell.value))
        assert np.abs(cell.generated.array - alone.images[0].array).max() <= 1e-4
        assert cell.generated.params == alone.images[0].params and cell.generated.params.cfg_stop == cell.value
    assert row[2].psnr == float("inf") and row[2].latent_rms == 0  # guided to the end: the reference itself
    assert row[0].latent_rms > row[1].latent_rms > 0  # the earlier guidance stops, the further from it
    # CFG stop 0 is no guidance at all: the CFG 1 picture
    unguided = steps_engine.generate(GenerateRequest(prompt="a red circle", negative_prompt="blurry", seed=5,
                                                     steps=6, cfg_scale=1, scheduler="DDIM"))
    assert np.abs(row[0].generated.array - unguided.images[0].array).max() <= 1e-5
    table = cell_table(result)
    assert list(table["CFG stop"]) == [0, 0.5, 1] * 2 and list(table["PSNR vs reference (dB)"])[2] == "inf"
    assert convergence_table(result).empty  # the distance-by-steps plot is the steps axis's
    assert "compared with the run guided to the end" in summary(result)
    # a stochastic sampler's reference draws the same noise as its cells: no distance at the end, and no note
    assert result.cells[1][2].psnr == float("inf") and "fresh noise" not in summary(result)
    assert "including the run guided to the end of each row as its reference." in cost_text(calls, "cfg_stop", 16)


def test_cfg_stop_out_of_range_is_named(steps_engine):
    with pytest.raises(InvalidRequest, match=r"CFG stop must be a number from 0 to 1, got 1.5"):
        steps_engine.grid(grid_request(prompt="x", seed=1, schedulers=("DDIM",), columns="0.5, 1.5", axis="cfg_stop"))
