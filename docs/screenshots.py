"""Drive the running app in headless Chromium and save the README's screenshots.

    python app.py &                       # the bundled model, on 127.0.0.1:7860
    python docs/screenshots.py http://127.0.0.1:7860/

Needs `pip install playwright` and Debian's chromium (/usr/bin/chromium); no browser download.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
DOCS = Path(__file__).resolve().parent
SCENE = DOCS.parent / "assets" / "examples" / "scene.png"


def prompt_tab(page, url: str) -> None:
    page.goto(url)
    page.get_by_label("Prompt", exact=True).fill("a red circle on a blue background, simple shapes")
    page.get_by_label("Negative prompt").fill("blurry")
    page.get_by_role("button", name="Generate").click()
    page.get_by_text("model evaluations per image").wait_for(timeout=60_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(DOCS / "prompt-tab.png"), full_page=True)


def grid_tab(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Grid").click()
    page.get_by_label("Prompt", exact=True).last.fill("a red circle on a blue background")
    for name in ("DDIM", "Heun"):
        page.get_by_label(name, exact=True).check()
    page.get_by_label("CFG scales (columns)").fill("1, 3, 7.5, 12")
    page.get_by_role("button", name="Run grid").click()
    page.get_by_text("model evaluations in all").wait_for(timeout=120_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(DOCS / "grid-tab.png"), full_page=True)


def inspector_tab(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Latent inspector").click()
    page.get_by_label("Prompt", exact=True).filter(visible=True).first.fill("a red circle on a blue background")
    page.get_by_role("button", name="Generate and record").click()
    page.get_by_text("Recorded").wait_for(timeout=120_000)
    step = page.get_by_label("number input for Step (drag to scrub the trajectory)")
    step.fill("10")
    step.press("Enter")
    page.get_by_text("Step 10 of").wait_for(timeout=30_000)
    page.mouse.wheel(0, 4000)  # images below the fold load lazily
    page.wait_for_timeout(2000)
    page.screenshot(path=str(DOCS / "inspector-step.png"), full_page=True)

    page.get_by_role("tab", name="VAE round trip").click()
    page.locator("input[type=file]").filter(visible=False).last.set_input_files(str(SCENE))
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Encode and decode").click()
    page.get_by_text("Reconstruction PSNR").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(DOCS / "inspector-roundtrip.png"), full_page=True)


def main(url: str = "http://127.0.0.1:7860/") -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        prompt_tab(page, url)
        grid_tab(page, url)
        inspector_tab(page, url)
        browser.close()
    print("saved", *sorted(p.name for p in DOCS.glob("*.png")))


if __name__ == "__main__":
    main(*sys.argv[1:])
