"""What a workshop room sees in Chromium, on the bundled model: Live shows the model's guess while it runs, the pose
editor draws its pose beside itself, and each action's error is named beside that action, in its tab only."""

from __future__ import annotations

import re

import pytest

# the same Chromium and app as the other browser tests, checked the same way (skipped without it, required under CI)
from test_browser import COVERED, browser, expect, open_app, page, steps, url, visible  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SIZES = [(1400, 1000), (1280, 720), (390, 844)]  # a laptop, a projector's first screen, a phone
LIVE_RED = "a large red square at the top left on a black background"


def open_tab(page, name: str) -> None:
    """A top-level tab by its name; on a narrow page the tabs that do not fit are in the "More tabs" menu."""
    tab = page.locator("button[role=tab]", has_text=name).first
    if not tab.is_visible():
        page.get_by_role("button", name="More tabs").first.click()
        tab = page.locator(".overflow-dropdown button", has_text=name).first
    tab.click()


def box(locator) -> dict:
    b = locator.bounding_box()
    assert b is not None, locator
    return b


def in_view(page, b: dict) -> bool:
    """Whether the whole of box `b` is on the screen."""
    size = page.viewport_size
    return b["y"] >= -1 and b["y"] + b["height"] <= size["height"] + 1 and b["x"] >= -1 \
        and b["x"] + b["width"] <= size["width"] + 1


# the src of the image shown in the block labelled `label` ("" while none has loaded)
SHOWN_SRC = """(label) => { const b = [...document.querySelectorAll('.block')].find(x => x.innerText.includes(label));
    const i = b && [...b.querySelectorAll('img')].find(i => i.complete && i.naturalWidth > 0);
    return i ? i.src : ""; }"""
PREVIEW = "Preview: the model"


# ---------------------------------------------------------------- Live

def test_live_shows_the_models_guess_while_it_runs(page):
    """A long live run shows the predicted x0 in the preview while its note still says which step it is on, before
    its finished picture, as Generate does."""
    visible(page.get_by_label("Prompt", exact=True)).fill(LIVE_RED)
    page.get_by_label("Live: draw again at every edit", exact=False).check()
    page.locator(".prose").filter(has_text=f"“{LIVE_RED}” in ").first.wait_for(timeout=30_000)
    before = page.evaluate(SHOWN_SRC, PREVIEW)
    assert before
    steps(page, 100)  # an edit: a long live run starts
    # a new picture in the preview while the note still says the run is on its way: a preview, not the result
    page.wait_for_function(f"""() => {{
        const step = document.body.innerText.match(/Live: denoising, step (\\d+) of 100/);
        const src = ({SHOWN_SRC})("{PREVIEW}");
        return step && +step[1] < 100 && src && src !== {before!r}; }}""", timeout=60_000)
    done = page.locator(".prose").filter(has_text=f"“{LIVE_RED}” in ").filter(has_text="100 steps").first
    done.wait_for(timeout=120_000)  # then the finished picture, as before
    assert page.evaluate(SHOWN_SRC, PREVIEW)


# ---------------------------------------------------------------- the pose editor

@pytest.mark.parametrize("width,height", SIZES)
def test_the_drawn_pose_shows_beside_the_pose_editor(browser, url, width, height):
    """Draw this pose and Mirror draw the map where the user is looking: on the screen with the button, without a
    scroll by the user; the tab's control map, a screen above, shows the same picture."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    open_app(page, url)
    open_tab(page, "ControlNet")
    page.get_by_label("Or start from a preset").click()
    page.get_by_role("option", name="waving").click()  # one hand up: its mirror is another picture
    page.get_by_text("Drawn from the pose JSON.").first.wait_for(timeout=30_000)
    drawn = page.locator("#pose-drawn img")
    expect(drawn).to_have_count(1, timeout=30_000)
    first = drawn.get_attribute("src")
    for name, note in (("Mirror left-right", "Mirrored left-right"), ("Draw this pose", "Drawn from the pose JSON.")):
        button = page.get_by_role("button", name=name)
        button.scroll_into_view_if_needed()
        button.click()
        page.get_by_text(note).first.wait_for(timeout=30_000)
        if name.startswith("Mirror"):
            page.wait_for_function("(first) => { const i = document.querySelector('#pose-drawn img');"
                                   " return i && i.src !== first && i.complete && i.naturalWidth > 0; }", arg=first,
                                   timeout=30_000)
        page.wait_for_timeout(800)  # a smooth scroll into view, where the page scrolls
        shown, pressed = box(drawn), box(button)
        assert in_view(page, shown), (name, shown, page.viewport_size)  # the whole drawing, on the screen
        assert in_view(page, pressed), (name, pressed)  # with the button just pressed
        if width >= 1000:  # beside the editor: the JSON's column on its left, the drawing level with it
            editor = box(page.locator(".cm-editor").filter(visible=True).first)
            assert shown["x"] >= editor["x"] + editor["width"] - 1 and shown["y"] < editor["y"] + editor["height"]
    src = drawn.get_attribute("src")
    page.wait_for_function(f"() => ({SHOWN_SRC})('Control map (what the ControlNet sees)') === {src!r}",
                           timeout=10_000)
    expect(page.get_by_label("A pose as OpenPose JSON (detected, edited or a preset)")).to_be_checked()
    context.close()


# ---------------------------------------------------------------- errors

def note_below(page, button, pattern: str):
    """The message matching `pattern` on the status line just under `button` (within 120 px, across its width)."""
    message = page.locator(".block.status-line").filter(has_text=re.compile(pattern)).filter(visible=True)
    expect(message).to_have_count(1, timeout=30_000)
    under, b = box(message.first), box(button)
    assert 0 <= under["y"] - (b["y"] + b["height"]) <= 120, (under, b)
    assert under["x"] < b["x"] + b["width"] and b["x"] < under["x"] + under["width"], (under, b)
    return message.first


def shown_anywhere(page, text: str) -> int:
    """How many elements on the screen (not in a hidden tab) show `text`."""
    return page.get_by_text(text).filter(visible=True).count()


def test_each_actions_error_shows_beside_it_and_in_its_tab_only(page):
    """Three actions fail in three tabs: each message is on its own action's status line, whole, with no pop-up that
    gathers them, and a tab shows none of another tab's messages."""
    empty, upload, width_bad = "pose JSON is empty", "Upload an image first", "width must be a multiple of 8, got 68"
    # the Prompt tab: a bad width, named under Generate
    width = page.get_by_label("number input for Width").first
    width.fill("68")
    width.press("Enter")
    generate = visible(page.get_by_role("button", name="Generate", exact=True))
    generate.click()
    note_below(page, generate, re.escape(width_bad))
    # the ControlNet tab: Mirror with no pose, named under the pose editor's buttons
    open_tab(page, "ControlNet")
    mirror = page.get_by_role("button", name="Mirror left-right")
    mirror.scroll_into_view_if_needed()
    mirror.click()
    note_below(page, mirror, empty)
    assert shown_anywhere(page, width_bad) == 0
    # the Latent inspector's VAE round trip with no image, named under its button
    open_tab(page, "Latent inspector")
    page.locator("button[role=tab]", has_text="VAE round trip").first.click()
    trip = page.get_by_role("button", name="Encode and decode")
    trip.scroll_into_view_if_needed()
    trip.click()
    note = note_below(page, trip, upload)
    assert empty not in note.inner_text() and shown_anywhere(page, empty) == 0 and shown_anywhere(page, width_bad) == 0
    # no pop-up gathers the three, nothing covers an output, and no server path or trace is shown
    assert page.locator(".toast-body").filter(visible=True).count() == 0
    for label in ("Original (fitted to a multiple of 8)", "Reconstruction (decoded latent)"):
        assert not page.evaluate(COVERED, label), label
    assert "Traceback" not in page.locator("body").inner_text() and "/tmp/" not in note.inner_text()
    # each tab kept its own message, and only its own
    open_tab(page, "ControlNet")
    note_below(page, page.get_by_role("button", name="Mirror left-right"), empty)
    assert shown_anywhere(page, upload) == 0 and shown_anywhere(page, width_bad) == 0
    open_tab(page, "Prompt")
    note_below(page, generate, re.escape(width_bad))
    assert shown_anywhere(page, upload) == 0 and shown_anywhere(page, empty) == 0
    # the action run again with a good value: its message goes
    width.fill("128")
    width.press("Enter")
    steps(page, 3)
    generate.click()
    page.get_by_text("model evaluations per image").wait_for(timeout=60_000)
    assert shown_anywhere(page, width_bad) == 0


# ---------------------------------------------------------------- the walk's strip

@pytest.mark.parametrize("width,height", [(1280, 720), (1600, 900), (1920, 1080)])
def test_the_walk_strips_buttons_sit_above_its_title_not_over_it(browser, url, width, height):
    """The strip's title is drawn along its top (whole: outputs.titled): the image's buttons are in a row above the
    picture, not over its title, on a projector and on a wide screen (where the strip fills its box's height)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    open_app(page, url)
    open_tab(page, "Walk")
    visible(page.get_by_label("number input for Steps")).fill("3")
    page.get_by_role("button", name="Walk", exact=True).click()
    page.get_by_text(" s a frame").first.wait_for(timeout=120_000)
    strip = page.locator(".block", has=page.get_by_text("Every frame, in order")).first
    strip.scroll_into_view_if_needed()
    image = strip.locator("img").first
    page.wait_for_function("(i) => i.complete && i.naturalWidth > 0", arg=image.element_handle(), timeout=30_000)
    # where the picture is drawn in its box (object-fit: contain), and the row of buttons
    drawn = image.evaluate("""i => { const r = i.getBoundingClientRect();
        const k = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);
        const w = i.naturalWidth * k, h = i.naturalHeight * k;
        return {x: r.x + (r.width - w) / 2, y: r.y + (r.height - h) / 2, width: w, height: h}; }""")
    for name in ("Fullscreen", "Download"):
        b = box(strip.get_by_role("button", name=name).first)
        apart = (b["y"] + b["height"] <= drawn["y"] + 1 or b["x"] >= drawn["x"] + drawn["width"] - 1
                 or b["x"] + b["width"] <= drawn["x"] + 1)
        assert apart, (name, b, drawn)  # not over the picture
    context.close()
