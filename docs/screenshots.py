"""The screenshots in the README and the guides (docs/*.png), taken in Chromium from the running app.

Each flow starts the app it shows (the bundled offline model; a tiny random-weight SD3 built from configs; both
offline models side by side), fills the inputs as a visitor does, waits for the outputs and takes its pictures.
The tests in tests/test_browser.py check what these pages show; this script only takes the pictures.

    python docs/screenshots.py                          # every screenshot, into docs/
    python docs/screenshots.py --only walk-tab live     # those (by file name, without .png)
    python docs/screenshots.py --out /tmp/shots         # somewhere else

Needs playwright (requirements-test.txt) and Chromium (PLAYGROUND_CHROMIUM, default /usr/bin/chromium). The
pictures are the bundled model's at the flows' seeds where a flow sets one; elsewhere the seed is random.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tiny SD3 and the launcher the tests use

from PIL import Image  # noqa: E402

from playground.engine import Engine  # noqa: E402
from playground.loading import load_model, load_models  # noqa: E402
from playground.models import Models  # noqa: E402
from playground.settings import ASSETS, Settings  # noqa: E402
from playground.threads import off_main_thread  # noqa: E402

from conftest import free_port, launched, tiny_settings, write_tiny_sd3  # noqa: E402

CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1400, "height": 1000}
WAIT = 180_000  # ms: the longest a run may take on a slow CPU before the flow gives up

# every image laid out on the page has arrived and decoded (images below the fold load when scrolled to)
IMAGES_LOADED = """() => Array.from(document.images)
    .filter(i => i.getBoundingClientRect().height > 0)
    .every(i => i.complete && i.naturalWidth > 0)"""


def visible(locator):
    return locator.filter(visible=True).first


def settle(page, timeout: int = 20_000) -> None:
    """Wait (bounded) until every visible image has loaded, and fonts too, with no message over the page: then a
    screenshot is whole."""
    page.wait_for_function(IMAGES_LOADED, timeout=timeout)
    page.evaluate("document.fonts.ready")
    for close in page.locator(".toast-close").all():
        if close.is_visible():
            close.click()
            close.wait_for(state="hidden", timeout=5_000)


def shoot(page, out: Path, name: str, scroll: int = 2000, **options) -> None:
    """Scroll (lazily loaded images below the fold), let the page settle, and save `name`.png (the full page
    unless a clip is given)."""
    if scroll:
        page.mouse.wheel(0, scroll)
    settle(page)
    if "clip" not in options:
        options["full_page"] = True
    page.screenshot(path=str(out / f"{name}.png"), **options)
    print(f"wrote {out / name}.png", flush=True)


def fill_number(page, label: str, value) -> None:
    box = visible(page.get_by_label(f"number input for {label}"))
    box.fill(str(value))
    box.press("Enter")


def run_info(page, words: str) -> None:
    """Wait for the ControlNet tab's run info ("... of the steps") to name `words` (its ControlNet)."""
    from playwright.sync_api import expect

    expect(page.get_by_text("of the steps")).to_contain_text(words, timeout=WAIT)


def axis_columns(page, values: str) -> None:
    """Wait for the Grid's columns to show the list a new axis brings (it would replace a list typed before it)."""
    from playwright.sync_api import expect

    expect(page.get_by_label("Column values")).to_have_value(values, timeout=20_000)


# ---------------------------------------------------------------- the flows (each on a fresh page)

def prompt_tab(page, out: Path) -> None:
    visible(page.get_by_text("a large red square at the top left on a black background")).click()  # an example
    page.get_by_label("Negative prompt").first.fill("blurry")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("model evaluations per image").wait_for(timeout=WAIT)
    shoot(page, out, "prompt-tab")


def prompt_weighting(page, out: Path) -> None:
    visible(page.get_by_label("Prompt", exact=True)).fill(
        "a large (red:1.6) square at the top left on a [black] background")
    page.get_by_text("14 / 77 tokens").wait_for(timeout=10_000)
    visible(page.get_by_label("Seed (-1 = random)")).fill("4")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("model evaluations per image").wait_for(timeout=WAIT)
    page.mouse.wheel(0, 2000)
    settle(page)
    page.evaluate("window.scrollTo(0, 0)")
    shoot(page, out, "prompt-weighting", scroll=0, clip={"x": 0, "y": 150, "width": 1400, "height": 750})


def live(page, out: Path) -> None:
    prompt = visible(page.get_by_label("Prompt", exact=True))
    prompt.fill("a large red square at the top left on a black background")
    page.get_by_label("Live: draw again at every edit", exact=False).check()
    prompt.fill("")
    blue = "a large (blue:1.2) circle in the center on a white background"
    prompt.press_sequentially(blue, delay=60)
    page.locator(".prose").filter(has_text=f"“{blue}” in ").first.wait_for(timeout=WAIT)
    shoot(page, out, "live", scroll=0, clip={"x": 0, "y": 150, "width": 1400, "height": 800})


def grid_tab(page, out: Path) -> None:
    page.get_by_role("tab", name="Grid").click()
    visible(page.get_by_label("Prompt", exact=True)).fill("a large orange cross at the bottom left on a black background")
    for name in ("DDIM", "Heun"):
        page.get_by_label(name, exact=True).check()
    columns = page.get_by_label("Column values")
    columns.fill("1, 3, 7.5, 12")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("s in all").wait_for(timeout=WAIT)
    shoot(page, out, "grid-tab", scroll=3000)

    # steps in the columns: one scheduler, three step counts, each against its 200-step run
    page.mouse.wheel(0, -6000)
    for name in ("Heun", "Euler a", "DPM++ 2M Karras"):
        page.get_by_label(name, exact=True).uncheck()
    page.get_by_label("Steps", exact=True).check()
    axis_columns(page, "5, 10, 20, 50")  # the list the axis brings, then ours
    columns.fill("5, 10, 20")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("each cell compared with a 200-step run").wait_for(timeout=WAIT)
    plot = page.locator(".block", has=page.get_by_text("Step columns: how close")).first
    plot.scroll_into_view_if_needed()
    plot.locator("g.mark-line path").first.wait_for(state="attached", timeout=20_000)
    page.wait_for_timeout(1_000)  # the plot's transition
    shoot(page, out, "grid-steps")

    # where CFG stops: two objects at CFG 7.5, each cell against the run guided to the end
    page.mouse.wheel(0, -6000)
    visible(page.get_by_label("Prompt", exact=True)).fill(
        "a red circle on the left and a blue square on the right on a white background")
    page.get_by_label("CFG stops at", exact=True).check()
    axis_columns(page, "0.2, 0.4, 0.6, 1")
    fill_number(page, "CFG scale (unless the columns are CFG scales)", 7.5)
    page.get_by_label("Seed (-1 = random, one for all cells)").fill("1768158368")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("each cell compared with the run guided to the end").wait_for(timeout=WAIT)
    shoot(page, out, "grid-cfg-stop")


def inspector_tab(page, out: Path) -> None:
    page.get_by_role("tab", name="Latent inspector").click()
    page.get_by_role("button", name="Generate and record").click()
    page.get_by_text("Recorded 25 model evaluations").wait_for(timeout=WAIT)
    fill_number(page, "Step (drag to scrub the trajectory)", 10)
    page.get_by_text("Step 10 of 25").wait_for(timeout=30_000)
    page.mouse.wheel(0, 4000)
    visible(page.locator("[data-testid='vega-lite'] svg, .vega-embed svg, canvas")).wait_for(timeout=20_000)
    shoot(page, out, "inspector-step", scroll=0)

    # cross-attention: one word's maps at the step and over all steps, from the heading to the summed strip
    heading = page.get_by_role("heading", name="Which word paints where")
    heading.scroll_into_view_if_needed()
    page.get_by_role("radio", name="red", exact=True).click()
    page.get_by_text("“red” (prompt) gets").wait_for(timeout=30_000)
    strip = page.locator(".block", has=page.get_by_text("every token, summed over all steps")).last
    page.mouse.wheel(0, 600)
    settle(page)
    top = heading.bounding_box()["y"] + page.evaluate("window.scrollY") - 10
    bottom = strip.bounding_box()["y"] + strip.bounding_box()["height"] + page.evaluate("window.scrollY") + 10
    shoot(page, out, "inspector-attention", scroll=0, full_page=True,
          clip={"x": 0, "y": top, "width": VIEWPORT["width"], "height": bottom - top})

    page.get_by_role("tab", name="VAE round trip").click()
    page.locator("input[type=file]").last.set_input_files(str(ASSETS / "examples" / "scene.png"))
    visible(page.locator("img[src*='scene']")).wait_for(timeout=20_000)
    page.get_by_role("button", name="Encode and decode").click()
    page.get_by_text("Reconstruction PSNR").wait_for(timeout=WAIT)
    shoot(page, out, "inspector-roundtrip", scroll=0)


def control_tab(page, out: Path) -> None:
    page.get_by_role("tab", name="ControlNet").click()
    page.locator("img[src*='shapes']").filter(visible=True).first.click()  # the Canny example
    page.get_by_role("button", name="Preview the control map").click()
    page.locator("img[src*='image.png']").filter(visible=True).first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Generate").filter(visible=True).click()
    run_info(page, "controlnet-canny")
    page.locator("img[src*='pose-waving']").filter(visible=True).first.click()  # a pose preset
    page.get_by_role("button", name="Generate").filter(visible=True).click()
    run_info(page, "controlnet-openpose")
    shoot(page, out, "control-tab")


def control_pose(page, out: Path) -> None:
    from skimage import data as skimage_data

    photo = Path(tempfile.mkdtemp()) / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    page.get_by_role("tab", name="ControlNet").click()
    upload = page.locator(".block", has=page.get_by_text("Photo or control map", exact=True)).first
    upload.locator("input[type=file]").set_input_files(str(photo))
    visible(page.locator("img[src*='astronaut']")).wait_for(timeout=20_000)
    page.get_by_role("button", name="Detect the pose in the photo", exact=True).click()
    page.locator("p").filter(has_text="1 person found").first.wait_for(timeout=WAIT)
    page.get_by_role("button", name="Mirror left-right").click()
    page.get_by_text("Mirrored left-right").wait_for(timeout=20_000)
    visible(page.get_by_label("Prompt", exact=True)).fill("a blue person on a white background")
    page.get_by_role("button", name="Generate").filter(visible=True).click()
    run_info(page, "controlnet-openpose")
    shoot(page, out, "control-pose", scroll=600)


def walk_tab(page, out: Path) -> None:
    page.get_by_role("tab", name="Walk").click()
    visible(page.get_by_label("Prompt", exact=True)).fill("a red circle at the top left on a white background")
    visible(page.get_by_label("Prompt to walk to (between prompts)")).fill(
        "a blue square at the bottom right on a black background")
    fill_number(page, "Steps", 10)
    fill_number(page, "Frames", 6)
    visible(page.get_by_label("Seed (-1 = random)")).fill("5")
    page.get_by_role("button", name="Walk", exact=True).click()
    page.get_by_text("mixed into").first.wait_for(timeout=WAIT)
    visible(page.locator("img[src*='.gif']")).wait_for(timeout=20_000)
    visible(page.locator("img[src*='-walk.png']")).wait_for(timeout=20_000)
    shoot(page, out, "walk-tab", scroll=0)


def anatomy_tab(page, out: Path) -> None:
    page.get_by_role("tab", name="Model anatomy").click()
    page.get_by_text("U-Net 2.57B").wait_for(timeout=WAIT)
    page.get_by_text("SD3 flow, shift 3: 0 dB at t = 0.250 T").wait_for(timeout=30_000)
    visible(page.locator("[data-testid='vega-lite'] svg, .vega-embed svg, canvas")).wait_for(timeout=20_000)
    shoot(page, out, "anatomy-tab")


def inspector_sd3(page, out: Path) -> None:
    prompt = "a red circle on the left and a blue square on the right"
    page.get_by_role("tab", name="Latent inspector").click()
    visible(page.get_by_label("Prompt", exact=True)).fill(prompt)
    page.get_by_role("button", name="Generate and record").click()
    page.get_by_text("Recorded 25 model evaluations").wait_for(timeout=WAIT)
    fill_number(page, "Step (drag to scrub the trajectory)", 8)
    page.get_by_text("Step 8 of 25").wait_for(timeout=30_000)
    page.get_by_role("heading", name="Which word paints where: joint attention (MMDiT)").scroll_into_view_if_needed()
    page.get_by_role("radio", name="red (T5)", exact=True).click()
    page.get_by_text("“red” (prompt) gets").wait_for(timeout=30_000)
    page.get_by_role("radio", name="block 1", exact=True).click()
    page.get_by_text("Layers: block 1 (1 joint-attention layer)").wait_for(timeout=30_000)
    shoot(page, out, "inspector-sd3", scroll=600)


def grid_models(page, out: Path) -> None:
    page.get_by_role("tab", name="Grid").click()
    visible(page.get_by_label("Prompt", exact=True)).fill("a large yellow triangle on the right on a gray background")
    page.get_by_label("playground-offline-mmdit (MMDiT, rectified flow; still learning its shapes)", exact=True).check()
    for name in ("Euler a", "DPM++ 2M Karras"):
        page.get_by_label(name, exact=True).uncheck()
    page.get_by_label("DDIM", exact=True).check()
    page.get_by_label("Steps", exact=True).check()
    axis_columns(page, "5, 10, 20, 50")  # the list the axis brings, then ours
    page.get_by_label("Column values").fill("5, 10, 20")
    visible(page.get_by_label("Seed (-1 = random, one for all cells)")).fill("7")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("each cell compared with a 200-step run of its model and scheduler").wait_for(timeout=WAIT)
    shoot(page, out, "grid-models")


# ---------------------------------------------------------------- the apps

@contextlib.contextmanager
def bundled_app(folder: Path):
    """The app as a user gets it on a CPU machine: the bundled model, default limits."""
    settings = Settings(model="bundled", device="cpu", port=free_port(), output_dir=folder)
    with launched(off_main_thread(lambda: Engine(load_model(settings), settings)), settings) as url:
        yield url


@contextlib.contextmanager
def sd3_app(folder: Path):
    """A tiny random-weight SD3 (128 px native, 16x16x16 latents, 8x8 patches) built from configs."""
    model = write_tiny_sd3(folder / "tiny-sd3-128", sample_size=16)
    settings = tiny_settings(model, port=free_port(), output_dir=folder / "out", max_size=256)
    with launched(Engine(load_model(settings), settings), settings) as url:
        yield url


@contextlib.contextmanager
def both_app(folder: Path):
    """Both offline models, as app.py loads them with no --model on a CPU."""
    settings = Settings(model="auto", device="cpu", port=free_port(), output_dir=folder)
    with launched(off_main_thread(lambda: Models([Engine(m, settings) for m in load_models(settings)])),
                  settings) as url:
        yield url


# app -> its flows, each with the pictures it takes
FLOWS: dict[Callable, list[tuple[Callable, tuple[str, ...]]]] = {
    bundled_app: [(prompt_tab, ("prompt-tab",)), (prompt_weighting, ("prompt-weighting",)), (live, ("live",)),
                  (grid_tab, ("grid-tab", "grid-steps", "grid-cfg-stop")),
                  (inspector_tab, ("inspector-step", "inspector-attention", "inspector-roundtrip")),
                  (control_tab, ("control-tab",)), (control_pose, ("control-pose",)), (walk_tab, ("walk-tab",)),
                  (anatomy_tab, ("anatomy-tab",))],
    sd3_app: [(inspector_sd3, ("inspector-sd3",))],
    both_app: [(grid_models, ("grid-models",))],
}
NAMES = [name for flows in FLOWS.values() for _, names in flows for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default: docs/)")
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                        help=f"take only these (and the others their flows take): {', '.join(NAMES)}")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.only or NAMES)
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for app, flows in FLOWS.items():
            flows = [flow for flow, names in flows if wanted & set(names)]
            if not flows:
                continue
            with app(Path(tempfile.mkdtemp(dir=tmp))) as url:
                for flow in flows:
                    context = browser.new_context(viewport=VIEWPORT)
                    page = context.new_page()
                    page.goto(url)
                    page.get_by_text("Diffusion Playground").first.wait_for()
                    page.get_by_role("tab", name="Prompt", exact=True).click()  # where every flow starts
                    flow(page, args.out)
                    context.close()
        browser.close()


if __name__ == "__main__":
    main()
