"""Links and the Lesson tab in Chromium, on the bundled model: a link opens its tab with every setting as written and
makes the same picture as the API with those settings; every link of the Lesson tab opens its experiment, which runs."""

from __future__ import annotations

import io
from urllib.parse import parse_qsl

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from conftest import free_port, launched
from playground import links
from playground.engine import Engine
from playground.loading import load_model
from playground.settings import Settings
from playground.threads import off_main_thread

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# the same Chromium as the other browser tests, checked the same way (skipped without it, required under CI)
from test_browser import browser, expect  # noqa: E402, F401 (the module's Chromium, as a fixture)

# the Prompt tab's link: every setting a user sets there, none at its default
SETTINGS = dict(prompt="a large yellow triangle on the right on a gray background", negative_prompt="blue", seed=1234,
                steps=12, cfg_scale=4.5, scheduler="DDIM", width=128, height=96, num_images=1)
# each tab's main button, and what its finished run shows
RUNS = {"prompt": ("Generate", "Seed used"), "grid": ("Run grid", "the same starting noise in every cell"),
        "controlnet": ("Generate", " at scale "), "inspector": ("Generate and record", "kept for this session"),
        "anatomy": ("Count again (a ControlNet loaded since the tab opened is counted too)", "parameters in all")}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The bundled model as a user gets it on a CPU machine, with a shorter reference run for the steps grids."""
    settings = Settings(model="bundled", device="cpu", port=free_port(), output_dir=tmp_path_factory.mktemp("out"),
                        grid_reference_steps=60)
    engine = off_main_thread(lambda: Engine(load_model(settings), settings))
    with launched(engine, settings) as url:
        yield url, engine


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def open_link(page, url: str, query: str) -> None:
    page.goto(url + query)
    page.get_by_text("Diffusion Playground").first.wait_for()
    page.locator(".link-note").filter(has_text="Opened from a link").filter(visible=True).first.wait_for(
        timeout=30_000)
    page.wait_for_timeout(500)  # the note comes with the last settings: their follow-ups (the cost line) next


def selected_tab(page) -> str:
    return page.locator("button[role=tab][aria-selected=true]").first.inner_text().strip()


def panel(page):
    """The open top-level tab's content."""
    return page.locator(".tabitem").filter(visible=True).first


def written_link(page) -> dict[str, str]:
    """What the open tab's "Link to these settings" writes from its inputs as they are now."""
    tab = panel(page)
    tab.get_by_role("button", name="Link to these settings").click()
    box = tab.locator(".settings-link textarea, .settings-link input").first
    page.wait_for_function("(el) => el.value.includes('?tab=')", arg=box.element_handle(), timeout=10_000)
    value = box.input_value()
    return dict(parse_qsl(value.split("?", 1)[1], keep_blank_values=True))


def test_a_link_opens_its_tab_with_every_setting_and_makes_the_apis_picture(page, served):
    url, engine = served
    open_link(page, url, links.write("prompt", SETTINGS))
    assert selected_tab(page) == "Prompt"
    tab = panel(page)
    assert "Not applied" not in tab.locator(".link-note").first.inner_text()
    # every setting as written, read from the inputs themselves ...
    expect(tab.get_by_label("Prompt", exact=True)).to_have_value(SETTINGS["prompt"])
    expect(tab.get_by_label("Negative prompt", exact=True)).to_have_value(SETTINGS["negative_prompt"])
    expect(tab.get_by_label("Seed (-1 = random)", exact=True)).to_have_value(str(SETTINGS["seed"]))
    # ... and as the tab writes them back (sliders and menus included)
    written = written_link(page)
    assert written["tab"] == "prompt"
    for name, value in SETTINGS.items():
        assert written[name] == links.text_of(value), name
    # the picture the page makes equals the API's with the same settings
    tab.get_by_role("button", name="Generate", exact=True).click()
    gallery = tab.locator(".grid-wrap img, .thumbnail-item img").first
    gallery.wait_for(timeout=120_000)
    shown = io.BytesIO(page.request.get(gallery.get_attribute("src")).body())
    client = Client(url, verbose=False)
    try:
        api = client.predict(**SETTINGS, api_name="/generate")
    finally:
        client.close()
    api_image = api[1][0]["image"]
    page_pixels = np.asarray(Image.open(shown).convert("RGB"))
    api_pixels = np.asarray(Image.open(api_image).convert("RGB"))
    assert page_pixels.shape == (96, 128, 3)
    assert np.array_equal(page_pixels, api_pixels)


def test_every_lesson_link_opens_its_experiment_and_it_runs(page, served):
    url, _ = served
    page.goto(url)
    page.get_by_text("Diffusion Playground").first.wait_for()
    assert selected_tab(page) == "Lesson"
    anchors = page.locator("a[href*='?tab=']")
    hrefs = [anchors.nth(i).get_attribute("href") for i in range(anchors.count())]
    assert len(hrefs) >= 8
    for href in hrefs:
        query = href[href.index("?"):]
        tab_key = dict(parse_qsl(query[1:]))["tab"]
        open_link(page, url, query)
        label = links.PAGES[tab_key].key
        note = panel(page).locator(".link-note").first.inner_text()
        assert "Not applied" not in note, (href, note)
        assert selected_tab(page).lower().replace(" ", "").startswith(
            {"inspector": "latentinspector", "anatomy": "modelanatomy"}.get(label, label)), href
        button, shows = RUNS[tab_key]
        tab = panel(page)
        tab.get_by_role("button", name=button, exact=True).first.click()
        done = tab.get_by_text(shows).filter(visible=True).first
        done.wait_for(timeout=240_000)
        assert page.locator(".toast-body.error").filter(visible=True).count() == 0, href


def test_the_exercises_answer_on_the_page(page, served):
    url, _ = served
    page.goto(url)
    page.get_by_text("Diffusion Playground").first.wait_for()
    page.get_by_text("Exercise: the VAE's compression").click()
    page.get_by_role("button", name="Work it out").click()
    expect(page.get_by_text("more numbers than its latent").filter(visible=True).first).to_be_visible(timeout=30_000)
    expect(page.get_by_text("64x64x4", exact=True).filter(visible=True).first).to_be_visible()  # 512 px, the U-Net
    page.get_by_text("Exercise: what CFG does to the prediction").click()
    page.get_by_role("button", name="Measure", exact=True).click()
    expect(page.get_by_text("the guided prediction").filter(visible=True).first).to_be_visible(timeout=120_000)
