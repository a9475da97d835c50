"""End to end in a real browser: the launched app driven by Playwright in Debian's Chromium.

Every tab: fill the inputs, click, wait for the outputs, assert on what the page shows. The pictures in the
README and the guides are taken by docs/screenshots.py, not here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections import Counter

import pytest
from PIL import Image

from playground.engine import Engine
from playground.loading import load_model, load_models
from playground.models import Models
from playground.settings import ASSETS, Settings
from playground.threads import off_main_thread

from conftest import free_port, launched, serving

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None

if sync_playwright is None or not shutil.which(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"browser tests need playwright and {CHROMIUM}; .ci/run installs both")
    pytest.skip(f"needs playwright and {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """The app as a user gets it on a CPU machine: the bundled model, default limits."""
    settings = Settings(model="bundled", device="cpu", port=free_port(), output_dir=tmp_path_factory.mktemp("out"))
    # loaded as app.py loads it, off the main thread (threads.py): the times the pages show are the app's
    with launched(off_main_thread(lambda: Engine(load_model(settings), settings)), settings) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_app(page, url)
    yield page
    context.close()


def open_app(page, url: str) -> None:
    """The app in `page`, on its Prompt tab."""
    page.goto(url)
    page.get_by_text("Diffusion Playground").first.wait_for()
    page.get_by_role("tab", name="Prompt", exact=True).click()


def visible(locator):
    return locator.filter(visible=True).first


# every image laid out on the page has arrived and decoded (images below the fold load when scrolled to)
IMAGES_LOADED = """() => Array.from(document.images)
    .filter(i => i.getBoundingClientRect().height > 0)
    .every(i => i.complete && i.naturalWidth > 0)"""


# the scale of every small image shown in a .pixels component: rendered width over its own width
PIXEL_SCALES = """() => Array.from(document.querySelectorAll('.pixels img'))
    .filter(i => i.complete && i.naturalWidth > 0 && i.naturalWidth <= 256 && i.getBoundingClientRect().width > 0)
    .map(i => [i.getBoundingClientRect().width / i.naturalWidth, getComputedStyle(i).imageRendering])"""


def settle(page, timeout: int = 20_000) -> None:
    """Wait (bounded) until every visible image has loaded, and fonts too: an image that never loads fails."""
    page.wait_for_function(IMAGES_LOADED, timeout=timeout)
    page.evaluate("document.fonts.ready")
    for close in page.locator(".toast-close").all():  # earlier errors: what is checked is the page itself
        if close.is_visible():
            close.click()
            close.wait_for(state="hidden", timeout=5_000)  # its fade-out done: no half-faded toast on a cell


def test_prompt_tab(page):
    banner_line = page.locator("#banner summary").inner_text()  # one line, the rest on demand
    assert banner_line.startswith("Model: playground-offline on cpu (float32)")
    assert "trained by the project" not in page.locator("#banner").inner_text()
    page.locator("#banner summary").click()
    banner = page.locator("#banner").inner_text()
    assert "trained by the project" in banner and "UNTRAINED" not in banner
    # an example prompt the offline model knows, picked as a user would
    visible(page.get_by_text("a large red square at the top left on a black background")).click()
    expect(visible(page.get_by_label("Prompt", exact=True))).to_have_value(re.compile("^a large red square"))
    page.get_by_text("14 / 77 tokens").wait_for()
    page.get_by_label("Negative prompt").first.fill("blurry")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("model evaluations per image").wait_for(timeout=60_000)
    assert page.locator("button.thumbnail-item img, .gallery img, [data-testid='detailed-image'] img").count() >= 1 \
        or page.locator("img[src*='seed']").count() >= 1
    seed = page.get_by_label("Seed used").input_value()
    assert seed.isdigit()
    page.mouse.wheel(0, 2000)  # lazily loaded images below the fold
    settle(page)
    # the 128 px image is shown whole at a whole-number scale, nearest-neighbour: its pixels as they are
    scales = page.evaluate(PIXEL_SCALES)
    assert scales and all(abs(k - round(k)) < 0.01 and k >= 1 and how == "pixelated" for k, how in scales), scales

    # too long a prompt: the counter warns and shows what CLIP drops
    visible(page.get_by_label("Prompt", exact=True)).fill(" ".join(["red circle"] * 40))
    page.get_by_text("CLIP only reads 77").wait_for()
    # a bad value: an error that names it, and the page keeps working
    width = page.get_by_label("number input for Width")
    width.fill("68")
    width.press("Enter")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("width must be a multiple of 8, got 68").first.wait_for(timeout=30_000)
    width.fill("128")
    width.press("Enter")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("Seed ").last.wait_for(timeout=60_000)


def test_grid_tab(page):
    page.get_by_role("tab", name="Grid").click()
    visible(page.get_by_label("Prompt", exact=True)).fill("a large orange cross at the bottom left on a black background")
    for name in ("DDIM", "Heun"):
        page.get_by_label(name, exact=True).check()
    scales = page.get_by_label("Column values")
    scales.fill("1, x")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("'x' in CFG scales").first.wait_for(timeout=30_000)
    scales.fill("1, 3, 7.5, 12")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("s in all").wait_for(timeout=120_000)
    assert page.get_by_text("4 schedulers x 4 CFG scales = 16 cells").is_visible()
    page.mouse.wheel(0, 3000)  # the table and the images below the fold render when scrolled to
    settle(page)
    # the cost table (a virtualised list, ~12 rows in view): DDIM's 4 rows, besides its checkbox
    assert page.get_by_text("DDIM", exact=True).filter(visible=True).count() >= 5

    # steps in the columns: one scheduler, three step counts, each compared with its 200-step run
    page.mouse.wheel(0, -6000)
    for name in ("Heun", "Euler a", "DPM++ 2M Karras"):
        page.get_by_label(name, exact=True).uncheck()
    page.get_by_label("Steps", exact=True).check()
    expect(scales).to_have_value("5, 10, 20, 50")  # the axis brings a list that suits it
    scales.fill("5, 10, 20")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("each cell compared with a 200-step run").wait_for(timeout=120_000)
    assert page.get_by_text("1 scheduler x 3 step counts = 3 cells").is_visible()
    # the distance plot draws its line, though a CFG grid (no distances) ran in this page before
    plot = page.locator(".block", has=page.get_by_text("Step columns: how close")).first
    plot.scroll_into_view_if_needed()
    line = plot.locator("g.mark-line path").first
    expect(line).to_be_attached(timeout=20_000)
    page.wait_for_timeout(1_000)  # the plot's transition
    drawn = line.evaluate("p => [p.getBBox().width, getComputedStyle(p).stroke]")
    assert drawn[0] > 50 and drawn[1] != "none", drawn  # a line across the step counts, in a colour
    page.mouse.wheel(0, 2000)
    settle(page)

    # where CFG stops in the columns: two objects at CFG 7.5, each cell compared with the run guided to the end
    page.mouse.wheel(0, -6000)
    visible(page.get_by_label("Prompt", exact=True)).fill(
        "a red circle on the left and a blue square on the right on a white background")
    page.get_by_label("CFG stops at", exact=True).check()
    expect(scales).to_have_value("0.2, 0.4, 0.6, 1")
    cfg = page.get_by_label("number input for CFG scale (unless the columns are CFG scales)")
    cfg.fill("7.5")
    cfg.press("Enter")
    page.get_by_label("Seed (-1 = random, one for all cells)").fill("1768158368")  # the Grid guide's picture
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("each cell compared with the run guided to the end").wait_for(timeout=120_000)
    assert page.get_by_text("1 scheduler x 4 CFG stops = 4 cells").is_visible()
    expect(page.get_by_text("CFG to 0.6").first).to_be_attached()  # the cells' captions
    assert not page.get_by_text("Step columns: how close").first.is_visible()  # the distance-by-steps plot is hidden
    page.mouse.wheel(0, 2000)
    settle(page)


def test_inspector_tab(page):
    page.get_by_role("tab", name="Latent inspector").click()
    # it starts with the offline model's attention example: two objects, each colour word lighting its own
    two = json.loads((ASSETS / "offline-model" / "playground.json").read_text())["attention_example"]
    expect(visible(page.get_by_label("Prompt", exact=True))).to_have_value(two)
    page.get_by_role("button", name="Generate and record").click()
    page.get_by_text("Recorded 25 model evaluations").wait_for(timeout=60_000)
    step = page.get_by_label("number input for Step (drag to scrub the trajectory)")
    step.fill("10")
    step.press("Enter")
    page.get_by_text("Step 10 of 25").wait_for(timeout=30_000)
    for k in range(4):
        assert page.get_by_text(f"channel {k}: min").is_visible()
    page.mouse.wheel(0, 4000)
    visible(page.locator("[data-testid='vega-lite'] svg, .vega-embed svg, canvas")).wait_for(timeout=20_000)
    settle(page)

    # cross-attention: the prompt as CLIP splits it, a token clicked, its maps at the step and over all steps
    heading = page.get_by_role("heading", name="Which word paints where")
    heading.scroll_into_view_if_needed()
    assert visible(page.get_by_text("<start>")).is_visible() and visible(page.get_by_text("<end>")).is_visible()
    page.get_by_role("radio", name="8x8", exact=True).click()
    page.get_by_text("Layers: 8x8").wait_for(timeout=30_000)
    page.get_by_role("radio", name="all", exact=True).click()
    page.get_by_text("Layers: all").wait_for(timeout=30_000)
    page.get_by_role("radio", name="red", exact=True).click()
    page.get_by_text("“red” (prompt) gets").wait_for(timeout=30_000)
    strip = page.locator(".block", has=page.get_by_text("every token, summed over all steps")).last
    assert all(strip.get_by_text(f"{word} ·").count() == 1 for word in ("red", "circle", "blue", "<start>"))
    assert strip.get_by_text("square ·").count() == 1
    page.mouse.wheel(0, 600)
    settle(page)

    page.get_by_role("tab", name="VAE round trip").click()
    page.locator("input[type=file]").last.set_input_files(str(ASSETS / "examples" / "scene.png"))
    visible(page.locator("img[src*='scene']")).wait_for(timeout=20_000)  # the upload is in, shown
    page.get_by_role("button", name="Encode and decode").click()
    page.get_by_text("Reconstruction PSNR").wait_for(timeout=60_000)
    assert page.get_by_text("48x smaller").is_visible()
    settle(page)


def test_controlnet_tab(page):
    page.get_by_role("tab", name="ControlNet").click()
    # Canny: the shapes example, its edges previewed, then generated
    page.locator("img[src*='shapes']").filter(visible=True).first.click()  # the example, as a user would
    expect(visible(page.get_by_label("Prompt", exact=True))).to_have_value(re.compile("yellow star"))
    page.get_by_role("button", name="Preview the control map").click()
    page.locator("img[src*='image.png']").filter(visible=True).first.wait_for(timeout=30_000)  # the map
    page.get_by_role("button", name="Generate").filter(visible=True).click()
    info = page.get_by_text("of the steps")
    info.wait_for(timeout=60_000)
    assert "controlnet-canny" in info.inner_text() and "at scale 1 from 0 to 1" in info.inner_text()
    # OpenPose: a pose preset sets the map, the mode, the ControlNet and a prompt
    page.locator("img[src*='pose-waving']").filter(visible=True).first.click()
    expect(visible(page.get_by_label("Prompt", exact=True))).to_have_value(re.compile("person"))
    page.get_by_role("button", name="Generate").filter(visible=True).click()
    expect(page.get_by_text("of the steps")).to_contain_text("controlnet-openpose", timeout=60_000)
    page.mouse.wheel(0, 2000)
    settle(page)


def test_pose_from_a_photo(page, tmp_path):
    """Upload a photo, detect the pose (offline: MediaPipe), see the skeleton, mirror it, generate."""
    from skimage import data as skimage_data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    page.get_by_role("tab", name="ControlNet").click()
    upload = page.locator(".block", has=page.get_by_text("Photo or control map", exact=True)).first
    upload.locator("input[type=file]").set_input_files(str(photo))
    visible(page.locator("img[src*='astronaut']")).wait_for(timeout=20_000)
    page.get_by_role("button", name="Detect the pose in the photo", exact=True).click()
    found = page.locator("p").filter(has_text="1 person found").first
    found.wait_for(timeout=60_000)
    assert "by mediapipe (chosen by auto" in found.inner_text()
    expect(page.get_by_label("A pose as OpenPose JSON (detected, edited or a preset)")).to_be_checked()
    assert "pose_keypoints_2d" in page.locator(".cm-content").first.inner_text()  # the JSON, editable
    skeleton = page.locator("img[src*='image.png']").first  # the map: the first image the server made
    skeleton.scroll_into_view_if_needed()
    skeleton.wait_for(timeout=20_000)
    before = skeleton.get_attribute("src")
    page.get_by_role("button", name="Mirror left-right").click()
    page.get_by_text("Mirrored left-right").wait_for(timeout=20_000)
    expect(skeleton).not_to_have_attribute("src", before, timeout=20_000)
    pixels = page.evaluate("""(src) => new Promise(ok => { const i = new Image(); i.onload = () => {
        const c = document.createElement('canvas'); c.width = i.width; c.height = i.height;
        const g = c.getContext('2d'); g.drawImage(i, 0, 0);
        const d = g.getImageData(0, 0, i.width, i.height).data; let lit = 0;
        for (let k = 0; k < d.length; k += 4) if (d[k] + d[k + 1] + d[k + 2] > 60) lit++;
        ok(lit / (d.length / 4)); }; i.src = src; })""", skeleton.get_attribute("src"))
    assert pixels > 0.005  # a skeleton, not a black map
    visible(page.get_by_label("Prompt", exact=True)).fill("a blue person on a white background")
    page.get_by_role("button", name="Generate").filter(visible=True).click()
    expect(page.get_by_text("of the steps")).to_contain_text("controlnet-openpose", timeout=60_000)
    page.mouse.wheel(0, 600)
    settle(page)


def test_anatomy_tab(page):
    page.get_by_role("tab", name="Model anatomy").click()
    page.get_by_text("U-Net 2.57B").wait_for(timeout=60_000)  # SDXL's, counted when the tab opens
    for text in ("loaded: playground-offline", "SD3 Medium", "T5-XXL (encoder) 4.76B", "12x"):
        assert visible(page.get_by_text(text)).is_visible(), text
    visible(page.locator("[data-testid='vega-lite'] svg, .vega-embed svg, canvas")).wait_for(timeout=20_000)
    # the noise schedules, filled when the tab opens: each 0 dB crossing, and every schedule in the legend
    page.get_by_text("SD3 flow, shift 3: 0 dB at t = 0.250 T").wait_for(timeout=30_000)
    legend = page.locator(".block", has=page.get_by_text("cosine (improved DDPM)")).filter(visible=True)
    assert legend.count() >= 1
    page.mouse.wheel(0, 2000)
    settle(page)


# ---------------------------------------------------------------- the moments: during a run, failing, resizing, stopping

# the first image in a block (by its label) as the user sees it: (painted width, height, its own width, height);
# with object-fit contain the picture is painted inside the element's box at its own aspect
SHOWN_SIZE = """(label) => { const b = [...document.querySelectorAll('.block')].find(x => x.innerText.includes(label));
    const i = b && [...b.querySelectorAll('img')].find(i => i.complete && i.naturalWidth > 0);
    if (!i) return null;
    const r = i.getBoundingClientRect(), fit = getComputedStyle(i).objectFit;
    const k = ['contain', 'scale-down'].includes(fit) ? Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight) : 0;
    return [k ? i.naturalWidth * k : r.width, k ? i.naturalHeight * k : r.height, i.naturalWidth, i.naturalHeight]; }"""
# whether a block (by its label) is covered by a progress or error overlay
COVERED = """(label) => { const b = [...document.querySelectorAll('.block')].find(x => x.innerText.includes(label));
    const t = b && b.querySelector('[data-testid="status-tracker"]');
    return !!t && !t.classList.contains('hide') && t.getBoundingClientRect().height > 0; }"""


def steps(page, n: int) -> None:
    box = page.get_by_label("number input for Steps").first
    box.fill(str(n))
    box.press("Enter")


def test_the_preview_stays_in_view_while_it_runs_and_stop_says_where(page):
    steps(page, 100)
    page.get_by_role("button", name="Generate", exact=True).first.click()
    page.get_by_text(re.compile(r"Running: denoising, step \d+ of 100")).wait_for(timeout=30_000)
    page.wait_for_function(SHOWN_SIZE, arg="Preview: the model", timeout=30_000)  # a preview arrived
    assert not page.evaluate(COVERED, "Preview: the model")  # the picture, not a progress cover
    page.get_by_role("button", name="Stop", exact=True).first.click()
    stopped = page.get_by_text(re.compile(r"Stopped at step \d+ of 100"))
    stopped.wait_for(timeout=30_000)
    # the half-done preview stays, and the line says why. A preview already on its way when Stop was clicked may
    # land just after the line (its image loading for a moment: CI caught one): the newest is shown and stays
    page.wait_for_function(SHOWN_SIZE, arg="Preview: the model", timeout=5_000)
    time.sleep(1.0)  # after stopped_again's second look: nothing took the picture away
    assert page.evaluate(SHOWN_SIZE, "Preview: the model")
    assert not page.get_by_label("Seed used").is_visible()  # no seed yet: nothing to reuse


def test_a_failure_is_named_beside_the_action_and_covers_nothing(page):
    steps(page, 5)
    page.get_by_role("button", name="Generate", exact=True).first.click()
    page.get_by_text("model evaluations per image").wait_for(timeout=60_000)
    width = page.get_by_label("number input for Width")
    width.fill("68")
    width.press("Enter")
    page.get_by_role("button", name="Generate", exact=True).first.click()
    page.get_by_text("width must be a multiple of 8, got 68").first.wait_for(timeout=30_000)
    for label in ("Preview: the model", "Images (PNG with settings inside)"):
        assert not page.evaluate(COVERED, label), label  # the last images stay in view, usable
    assert page.evaluate(SHOWN_SIZE, "Images (PNG with settings inside)")
    # the ControlNet tab: Mirror before any pose fails beside the pose tools; the choices stay clickable
    page.get_by_role("tab", name="ControlNet").click()
    page.get_by_role("button", name="Mirror left-right").click()
    page.get_by_text("pose JSON is empty").first.wait_for(timeout=30_000)
    for label in ("Control map (what the ControlNet sees)", "Control map\n"):
        assert not page.evaluate(COVERED, label), label
    page.get_by_label("OpenPose skeleton from the photo").check(timeout=5_000)  # not blocked by a cover
    nets = page.locator(".block", has=page.get_by_text("Canny edges need 'canny'")).first
    expect(nets.get_by_label("openpose", exact=True)).to_be_checked()  # the mode picked its ControlNet
    expect(page.get_by_label("Canny low threshold", exact=True)).to_be_hidden()  # no Canny here


def test_a_second_run_at_another_size_is_drawn_at_its_own_shape(page):
    steps(page, 3)
    for w, h in ((64, 128), (512, 128)):
        for name, value in (("Width", w), ("Height", h)):
            box = page.get_by_label(f"number input for {name}")
            box.fill(str(value))
            box.press("Enter")
        page.get_by_role("button", name="Generate", exact=True).first.click()
        page.get_by_text(f"{w}x{h}").first.wait_for(timeout=60_000)
        page.get_by_text("is not the 128x128 the model was trained at").first.wait_for(timeout=10_000)
        page.wait_for_function(f"""() => {{ const s = ({SHOWN_SIZE})("Preview: the model");
            return s && s[2] === {w} && s[3] === {h}; }}""", timeout=30_000)
        shown_w, shown_h, *_ = page.evaluate(SHOWN_SIZE, "Preview: the model")
        assert abs(shown_w / shown_h - w / h) < 0.05, (w, h, shown_w, shown_h)


def test_the_page_names_what_leaves_the_models_world(page):
    box = visible(page.get_by_label("Prompt", exact=True))
    assert box.input_value()  # the first run starts from a prompt the model knows, not an empty box
    box.fill("a cat in a hat on a red background")
    page.get_by_text("“cat” and “hat” are not words this model knows").wait_for(timeout=10_000)
    page.get_by_role("tab", name="Grid").click()
    assert visible(page.get_by_label("Prompt", exact=True)).input_value()
    page.get_by_text("This grid takes 40 model evaluations").wait_for(timeout=10_000)
    page.get_by_label("Steps", exact=True).check()
    page.get_by_text("including a 200-step reference run of each row").wait_for(timeout=10_000)
    page.get_by_role("tab", name="ControlNet").click()
    intro = page.get_by_text("ControlNets (loaded on first use").inner_text()
    assert "offline-model/controlnet-canny" in intro and str(ASSETS) not in intro  # no server path


def test_a_waiting_visitor_sees_its_place_in_the_queue_and_a_refusal_says_why(browser, page):
    """Two visitors on one model: the second's status line shows gradio's queue place ("queue: 1/1") in view;
    a visitor with SESSION_JOBS (3) jobs waiting or running is told why a fourth is refused, beside the action."""
    steps(page, 100)
    page.get_by_role("button", name="Generate", exact=True).first.click()  # the first visitor's long run
    page.get_by_text(re.compile(r"Running: denoising, step \d+ of 100")).wait_for(timeout=30_000)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    other = context.new_page()
    open_app(other, page.url)
    other.get_by_role("button", name="Generate", exact=True).first.click()
    place = other.locator(".status-line").first.get_by_text(re.compile(r"queue: \d+/\d+"))
    place.wait_for(timeout=10_000)
    line, text = other.locator(".status-line").first.bounding_box(), place.bounding_box()
    assert line["y"] - 2 <= text["y"] and text["y"] + text["height"] <= line["y"] + line["height"] + 2  # in view
    for tab, button in (("Grid", "Run grid"), ("Latent inspector", "Generate and record"),
                        ("ControlNet", "Generate")):
        other.get_by_role("tab", name=tab).click()
        visible(other.get_by_role("button", name=button, exact=True)).click()
        time.sleep(0.3)
    other.get_by_text(re.compile(r"You already have 3 jobs waiting or running \(at most 3")).first.wait_for(
        timeout=10_000)
    page.get_by_role("button", name="Stop", exact=True).first.click()
    context.close()


# ---------------------------------------------------------------- SD3 (a tiny random-weight one)

@pytest.fixture(scope="module")
def sd3_url(tmp_path_factory):
    """The app on a tiny random-weight SD3 (128 px native, 16x16x16 latents, 8x8 patches) built from configs."""
    from conftest import tiny_settings, write_tiny_sd3

    folder = write_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3-128"), sample_size=16)
    settings = tiny_settings(folder, port=free_port(), output_dir=tmp_path_factory.mktemp("out-sd3"), max_size=256)
    with launched(Engine(load_model(settings), settings), settings) as url:
        yield url


def test_sd3_in_the_prompt_tab_and_the_inspector(browser, sd3_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_app(page, sd3_url)
    prompt = visible(page.get_by_label("Prompt", exact=True))
    prompt.fill("a red circle on the left and a blue square on the right")
    page.get_by_text("T5: 14 / 256 tokens").wait_for(timeout=10_000)  # T5's own count beside CLIP's
    assert visible(page.get_by_label("Flow shift (0 = the model's own)")).is_visible()
    assert visible(page.get_by_label("Scheduler")).input_value() == "Flow Euler"

    page.get_by_role("tab", name="Latent inspector").click()
    visible(page.get_by_label("Prompt", exact=True)).fill("a red circle on the left and a blue square on the right")
    page.get_by_role("button", name="Generate and record").click()
    page.get_by_text("Recorded 25 model evaluations").wait_for(timeout=120_000)
    step = page.get_by_label("number input for Step (drag to scrub the trajectory)")
    step.fill("8")
    step.press("Enter")
    page.get_by_text("Step 8 of 25").wait_for(timeout=30_000)
    assert page.get_by_text("channel 15: min").is_visible()  # 16 latent channels
    heading = page.get_by_role("heading", name="Which word paints where: joint attention (MMDiT)")
    heading.scroll_into_view_if_needed()
    page.get_by_role("radio", name="red (T5)", exact=True).click()
    page.get_by_text("“red” (prompt) gets").wait_for(timeout=30_000)
    page.get_by_role("radio", name="block 1", exact=True).click()
    page.get_by_text("Layers: block 1 (1 joint-attention layer)").wait_for(timeout=30_000)
    page.mouse.wheel(0, 600)
    settle(page)
    context.close()


@pytest.fixture(scope="module")
def both_url(tmp_path_factory):
    """The app as a CPU user starts it with no --model: both offline models, loaded as app.py loads them."""
    settings = Settings(model="auto", device="cpu", port=free_port(), output_dir=tmp_path_factory.mktemp("out"))
    with launched(off_main_thread(lambda: Models([Engine(m, settings) for m in load_models(settings)])),
                  settings) as url:
        yield url


def test_both_offline_models_side_by_side(browser, both_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_app(page, both_url)
    page.locator("#banner summary").click()
    banner = page.locator("#banner").inner_text()
    assert "Models: playground-offline and playground-offline-mmdit" in banner
    # the Prompt tab on the MMDiT: the form follows it (flow schedulers and shift, the CFG the U-Net model's
    # playground.json set going back to the default), the PNG names it
    cfg = visible(page.get_by_label("number input for CFG scale"))
    expect(cfg).to_have_value("3")
    menu = visible(page.get_by_label("Model", exact=True))
    menu.click()
    page.get_by_role("option", name="playground-offline-mmdit (MMDiT, rectified flow; still learning its shapes)").click()
    expect(visible(page.get_by_label("Scheduler (sampler)"))).to_have_value("Flow Euler")
    expect(cfg).to_have_value("7.5")
    assert visible(page.get_by_label("Flow shift (0 = the model's own)")).is_visible()
    page.get_by_text("(each of its 2 CLIP text encoders)").first.wait_for()
    page.get_by_role("button", name="Generate", exact=True).first.click()
    page.get_by_text("Flow Euler, 25 steps").wait_for(timeout=60_000)

    # the Grid: rows from both models, steps in the columns, each model against its own 200-step run
    page.get_by_role("tab", name="Grid").click()
    visible(page.get_by_label("Prompt", exact=True)).fill("a large yellow triangle on the right on a gray background")
    page.get_by_label("playground-offline-mmdit (MMDiT, rectified flow; still learning its shapes)", exact=True).check()
    expect(page.get_by_label("Flow Euler", exact=True)).to_be_checked()  # the MMDiT's row, ticked for it
    for name in ("Euler a", "DPM++ 2M Karras"):
        page.get_by_label(name, exact=True).uncheck()
    page.get_by_label("DDIM", exact=True).check()
    page.get_by_label("Steps", exact=True).check()
    page.get_by_label("Column values").fill("5, 10, 20")
    visible(page.get_by_label("Seed (-1 = random, one for all cells)")).fill("7")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("each cell compared with a 200-step run of its model and scheduler").wait_for(timeout=180_000)
    assert page.get_by_text("2 rows x 3 step counts = 6 cells").is_visible()
    assert page.get_by_text("playground-offline-mmdit · Flow Euler", exact=True).filter(visible=True).count() >= 1
    page.mouse.wheel(0, 2000)
    settle(page)

    # the anatomy counts both loaded models beside the published ones
    page.mouse.wheel(0, -6000)
    page.get_by_role("tab", name="Model anatomy").click()
    page.get_by_text("loaded: playground-offline-mmdit").first.wait_for(timeout=60_000)
    assert visible(page.get_by_text("loaded: playground-offline", exact=False)).is_visible()
    context.close()


# ---------------------------------------------------------------- Live

LIVE_RED = "a large red square at the top left on a black background"


def live_note(page, prompt: str):
    """The Live note of the picture of `prompt` (it names the prompt its picture is of)."""
    return page.locator(".prose").filter(has_text=f"“{prompt}” in ").first


def preview_src(page) -> str:
    return page.locator(".pixels img").first.get_attribute("src") or ""


def test_live_draws_as_you_type(page):
    """Live on: typing a new word draws its picture with no click, the picture of the whole new prompt (not of a
    half-typed word), and nothing is saved."""
    prompt = visible(page.get_by_label("Prompt", exact=True))
    prompt.fill(LIVE_RED)
    page.get_by_label("Live: draw again at every edit", exact=False).check()
    expect(page.get_by_label("number input for Steps").first).to_have_value("8")  # Live's steps, set when turned on
    live_note(page, LIVE_RED).wait_for(timeout=30_000)
    first = preview_src(page)
    prompt.fill("")
    prompt.press_sequentially("a large (blue:1.2) circle in the center on a white background", delay=60)
    blue = "a large (blue:1.2) circle in the center on a white background"
    live_note(page, blue).wait_for(timeout=30_000)
    assert preview_src(page) != first
    assert page.get_by_role("button", name="Generate").first.is_enabled()
    gallery = page.locator(".gallery img, button.thumbnail-item img")
    assert gallery.count() == 0  # Live saves nothing: Generate keeps a picture as a PNG
    settle(page)
    # the picture is the model's, at its size, and blue on white as asked (the offline model knows this world)
    img = page.locator(".pixels img").first
    assert img.evaluate("i => i.naturalWidth") == 128
    blue, white = img.evaluate("""i => { const c = document.createElement("canvas"); c.width = c.height = 128;
        const g = c.getContext("2d"); g.drawImage(i, 0, 0); const d = g.getImageData(0, 0, 128, 128).data;
        let blue = 0, white = 0;
        for (let k = 0; k < d.length; k += 4) {
            if (d[k + 2] > 128 && d[k] < 110 && d[k + 1] < 110) blue++;
            if (d[k] > 200 && d[k + 1] > 200 && d[k + 2] > 200) white++;
        }
        return [blue / 16384, white / 16384]; }""")
    assert blue > 0.05 and white > 0.2, (blue, white)


def test_a_live_run_shows_its_progress_and_stop_stops_it(page):
    """A live run says where it is (the info line), and Stop ends it there: the preview keeps its last view, and no
    picture of it comes later."""
    prompt = visible(page.get_by_label("Prompt", exact=True))
    prompt.fill(LIVE_RED)
    page.get_by_label("Live: draw again at every edit", exact=False).check()
    live_note(page, LIVE_RED).wait_for(timeout=30_000)
    steps(page, 100)  # an edit too: a long live run starts
    page.get_by_text(re.compile(r"Live: denoising, step \d+ of 100")).wait_for(timeout=30_000)
    page.get_by_role("button", name="Stop", exact=True).first.click()
    page.get_by_text(re.compile(r"Stopped at step \d+ of 100")).wait_for(timeout=10_000)
    time.sleep(1.0)  # a preview already on its way when Stop was clicked may land just after the line
    after = preview_src(page)
    time.sleep(3)
    assert preview_src(page) == after  # nothing of the stopped run came later
    assert page.locator(".prose").filter(has_text=f"“{LIVE_RED}” in ").filter(has_text="100 steps").count() == 0
    assert page.get_by_text(re.compile(r"Stopped at step \d+ of 100")).count() >= 1


@pytest.fixture(scope="module")
def counted_app(tmp_path_factory):
    """The app on the bundled model, its Engine noting in order each generation it starts (by prompt)."""
    log: list[tuple[str, str]] = []

    class Counting(Engine):
        def generate(self, req, *args, **kwargs):
            log.append(("start", req.prompt))
            return super().generate(req, *args, **kwargs)

    settings = Settings(model="bundled", device="cpu", port=free_port(), output_dir=tmp_path_factory.mktemp("out"))
    with serving(off_main_thread(lambda: Counting(load_model(settings), settings)), settings) as (demo, url):
        yield demo, url, log


def holdings(demo) -> Counter:
    """How many jobs each session holds in the app's queue now, waiting or running (as fairness.held counts)."""
    queue = demo._queue
    waiting = [e.session_hash for q in queue.event_queue_per_concurrency_id.values() for e in list(q.queue)]
    running = [e.session_hash for job in list(queue.active_jobs) if job for e in job]
    return Counter(waiting + running)


def test_a_visitor_typing_live_holds_one_place_in_the_queue_and_another_is_served_next(browser, counted_app):
    """The policy: a live run is a job in the one queue like any other, and a visitor holds at most one, however
    fast they type. Another visitor's generation, sent while the first types, is served after at most the one job
    the typist held when it was sent: not after one run a key press."""
    from gradio_client import Client

    demo, url, log = counted_app
    other = Client(url, verbose=False)
    ask = ("a small green ring at the bottom right on a gray background", "", 5, 25, 7.5, "DPM++ 2M Karras", 128, 128,
           1)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    open_app(page, url)
    prompt = visible(page.get_by_label("Prompt", exact=True))
    prompt.fill(LIVE_RED)
    page.get_by_label("Live: draw again at every edit", exact=False).check()
    live_note(page, LIVE_RED).wait_for(timeout=30_000)

    most: Counter = Counter()  # each session's most jobs held at once while the typist types
    typing = threading.Event()

    def watch():
        while typing.is_set():
            for session, n in holdings(demo).items():
                most[session] = max(most[session], n)
            time.sleep(0.005)

    def send():
        time.sleep(0.5)  # the typist is typing, a live run on its way
        log.append(("sent", ask[0]))
        other.predict(*ask, api_name="/generate")

    log.clear()
    typing.set()
    watcher, sender = threading.Thread(target=watch, daemon=True), threading.Thread(target=send, daemon=True)
    watcher.start()
    sender.start()
    text = " big red square"  # slower than the debounce: every key press asks for a picture
    try:
        prompt.press("End")
        prompt.press_sequentially(text, delay=180)
        sender.join(120)
        time.sleep(1.0)  # the run of the last key press has joined the queue
    finally:
        typing.clear()
    watcher.join()

    typist = [n for session, n in most.items() if session != other.session_hash]
    assert typist and max(typist) == 1, dict(most)  # the typist held one job at a time, however fast it typed
    # the order of service: after the other's request arrived, at most the typist's one job came before it
    sent, served = log.index(("sent", ask[0])), log.index(("start", ask[0]))
    ahead = [p for event, p in log[sent:served] if event == "start"]
    assert len(ahead) <= 1, ahead
    live_note(page, LIVE_RED + text).wait_for(timeout=60_000)  # the last edit is drawn
    context.close()
    live_runs = [p for event, p in log if event == "start" and p != ask[0]]
    assert 1 <= len(live_runs) <= len(text) and live_runs[-1] == LIVE_RED + text  # at most one run a key press


# each tab's main action, the first of its inputs and where its main output starts: all on the first screen
FIRST_SCREENS = {
    "Lesson": (("link", "Open the inspector on one shape"), None, None),
    "Prompt": (("button", "Generate"), "Prompt", "#prompt-preview"),
    "Grid": (("button", "Run grid"), "Prompt", "#grid-sheet"),
    "ControlNet": (("button", "Generate"), "Prompt", "#control-gallery"),
    "Walk": (("button", "Walk"), "Prompt", "#walk-animation"),
    "Latent inspector": (("button", "Generate and record"), "Prompt", "#inspect-final"),
    "Model anatomy": (("button", "Count again (a ControlNet loaded since the tab opened is counted too)"), None,
                      "#anatomy-table"),
}


@pytest.mark.parametrize("width, height", [(1280, 720), (1400, 1000)])
@pytest.mark.parametrize("tab", list(FIRST_SCREENS))
def test_every_tabs_first_screen_holds_its_action_its_first_input_and_its_output(browser, url, tab, width, height):
    """On a projector (1280x720) and a laptop, with no scrolling: the tab's main action, its first input and the
    top of its main output."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    open_app(page, url)
    page.get_by_role("tab", name=tab, exact=True).first.click()
    (role, name), first_input, output = FIRST_SCREENS[tab]
    shown = [visible(page.get_by_role(role, name=name, exact=True))]
    shown += [visible(page.get_by_label(first_input, exact=True))] if first_input else []
    for target in shown:
        target.wait_for()
        box = target.bounding_box()
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height, (tab, width, height, box)
    if output:
        top = page.locator(output).filter(visible=True).first.bounding_box()
        assert top is not None and top["y"] + 60 <= height, (tab, output, top)  # at least its label and first lines
    context.close()


@pytest.mark.parametrize("width, height", [(1280, 720), (1400, 1000)])
def test_the_prompt_tabs_first_screen_holds_the_prompt_and_generate(browser, url, width, height):
    """On a projector (1280x720) and a laptop: the one-line banner, the tabs, the prompt and Generate all on the
    first screen, no scrolling."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    open_app(page, url)
    for target in (page.get_by_role("button", name="Generate", exact=True), page.get_by_label("Prompt", exact=True)):
        box = visible(target).bounding_box()
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= height, (width, height, box)
    assert page.locator("#banner").bounding_box()["height"] < 60  # one line: the details open on demand
    context.close()


def test_on_a_phone_the_banner_leaves_the_screen_to_the_prompt(browser, url):
    """At 390 px wide the banner is one folded line and the prompt box starts on the first screen."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    open_app(page, url)
    assert page.locator("#banner").bounding_box()["height"] < 120
    assert visible(page.get_by_label("Prompt", exact=True)).bounding_box()["y"] < 844
    context.close()
