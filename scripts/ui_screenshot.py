"""Screenshot of the web UI with a result, for the README (docs/ui-screenshot.png).

    python scripts/ui_screenshot.py [--out docs/ui-screenshot.png] [--model PATH]

Starts the service (uvicorn on a free loopback port, a temporary data folder, the default model unless
--model), stores three other RSNA 512 px samples through the API so the list of past assessments is not
empty, then drives Debian's Chromium with Playwright: uploads ../shared/data/rsna-512px-samples/images/1437.png
(girl; the RSNA reference bone age is 136 months) with an age and a height, waits for the bone age, the
overlay (Grad-CAM for the default ResNet ensemble) and the chart, accepts the result as a reader would,
and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLES = SHARED / "rsna-512px-samples"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "ui-screenshot.png"))
    parser.add_argument("--model", default=None, help="model path (default: the shipped model)")
    parser.add_argument("--image", default=str(SAMPLES / "images" / "1437.png"))
    args = parser.parse_args(argv)
    if not Path(args.image).is_file():
        sys.exit(f"{args.image} not found (the screenshot uses a real RSNA sample from ../shared/data)")

    import httpx
    import uvicorn
    from playwright.sync_api import sync_playwright

    from boneage.service.app import create_app

    with open(SAMPLES / "labels.csv", newline="") as handle:
        sexes = {row["id"]: "M" if row["male"].strip().lower() in ("true", "1") else "F" for row in csv.DictReader(handle)}
    with tempfile.TemporaryDirectory(prefix="boneage-screenshot-") as data_dir:
        app = create_app(data_dir, model=args.model)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sys.exit("the service did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                for sample, age in (("1440", "3y4m"), ("1472", "5y5m"), ("1516", "10y9m")):
                    path = SAMPLES / "images" / f"{sample}.png"
                    if path.is_file():
                        response = client.post("/api/assessments",
                                               files={"image": (path.name, path.read_bytes(), "image/png")},
                                               data={"sex": sexes.get(sample, "F"), "chronological_age_months": age})
                        if response.status_code != 201:
                            sys.exit(f"{path.name}: {response.status_code} {response.text}")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
                page.goto(url + "/")
                page.wait_for_selector("#model-info:has-text('model ')")
                page.set_input_files("#file", args.image)
                page.select_option("#sex", "F")
                page.fill("#age-years", "11")
                page.fill("#age-months", "2")
                page.fill("#height", "145")
                page.click("#submit")
                page.wait_for_selector("#bone-age:has-text('years')", timeout=120_000)
                page.wait_for_selector("#overlay-image[data-loaded='true']")
                page.wait_for_selector("#chart-image[data-loaded='true']")
                page.fill("#reader-name", "Dr A. Reader")
                page.click("#accept")
                page.wait_for_selector("#reader-decision:has-text('accepted')")
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out, full_page=True)
                shown = page.eval_on_selector("#overlay-image", "img => [img.naturalWidth, img.naturalHeight, "
                                              "Math.round(img.getBoundingClientRect().width), "
                                              "Math.round(img.getBoundingClientRect().height)]")
                print(f"{args.out}: bone age {page.inner_text('#bone-age')}; {page.inner_text('#overlay-caption')}; "
                      f"picture {shown[0]}x{shown[1]} px shown in a {shown[2]}x{shown[3]} px box")
                browser.close()
        finally:
            server.should_exit = True
            thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
