"""The browser UI in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright) against a
real uvicorn server: upload a radiograph, see the bone age and the overlay, accept it, correct it, and find
the decisions in the store. Skipped, with the reason, when Chromium or Playwright is missing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import RSNA_512
from tests.service_helpers import ThreadServer, phantom_png, submit_in_browser


@pytest.fixture
def radiograph(tmp_path) -> Path:
    """A real 512 px RSNA sample when ../shared/data is there, else a synthetic phantom."""
    real = RSNA_512 / "images" / "1437.png"
    if real.exists():
        return real
    path = tmp_path / "phantom.png"
    path.write_bytes(phantom_png(130, "F", size=320))
    return path


def test_upload_see_result_accept_and_correct(browser, radiograph, tiny_model_dir, tmp_path):
    with ThreadServer(tmp_path / "data", model=tiny_model_dir) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(server.url + "/")
        page.wait_for_selector("#model-info:has-text('tiny-test')")
        assert "does not replace, a qualified reader" in page.inner_text("#disclaimer")

        page.set_input_files("#file", str(radiograph))
        page.wait_for_selector(f"#drop-text:has-text('{radiograph.name}')")
        page.select_option("#sex", "F")
        page.fill("#age-years", "10")
        page.fill("#age-months", "10")
        page.fill("#height", "141")
        page.click("#submit")

        bone_age = page.wait_for_selector("#bone-age:has-text('years')", timeout=60_000)
        assert re.fullmatch(r"\d+ years? \d+ months? \(\d+\.\d months\)", bone_age.inner_text()), bone_age.inner_text()
        page.wait_for_selector("#overlay-image[data-loaded='true']", timeout=30_000)
        page.wait_for_selector("#chart-image[data-loaded='true']", timeout=30_000)
        assert page.eval_on_selector("#overlay-image", "img => img.naturalWidth") > 100
        assert page.inner_text("#overlay-caption").startswith("Evidence overlay: Grad-CAM")  # the tiny ResNet's
        assert page.eval_on_selector("#chart-image", "img => img.naturalWidth") > 100
        numbers = page.inner_text("#numbers")
        for label in ("95% interval", "Chronological age", "SDS", "Centile", "Reading", "Predicted adult height"):
            assert label in numbers, label
        assert page.locator("#history-rows tr").count() == 1

        [record] = server.store.list()["items"]
        assert record["source"] == "ui" and record["chronological_age_months"] == 130.0 and record["height_cm"] == 141.0

        page.fill("#reader-name", "Dr UI")
        page.click("#accept")
        page.wait_for_selector("#reader-decision:has-text('accepted')")
        assert "Dr UI" in page.inner_text("#reader-decision")
        assert server.store.get(record["id"])["latest_decision"]["decision"] == "accepted"

        page.fill("#reader-years", "11")
        page.fill("#reader-months", "3")
        page.fill("#reader-comment", "radius epiphysis looks older")
        page.click("#correct")
        page.wait_for_selector("#reader-decision:has-text('corrected to 11 years 3 months')")
        stored = server.store.get(record["id"])
        assert [d["decision"] for d in stored["decisions"]] == ["accepted", "corrected"]
        assert stored["latest_decision"]["reader_bone_age_months"] == 135.0
        assert stored["latest_decision"]["comment"] == "radius epiphysis looks older"
        assert stored["bone_age_months"] == record["bone_age_months"]  # the model's result stays
        page.wait_for_selector("#history-rows tr:has-text('corrected')")
        page.wait_for_selector("#decisions li:has-text('radius epiphysis looks older')")
        assert problems == [], problems
        page.close()


def test_rejected_upload_and_history_paging(browser, tiny_model_dir, tmp_path):
    import numpy as np

    from boneage.api import validate_inputs
    from tests.service_helpers import png_bytes

    blank = tmp_path / "blank.png"
    blank.write_bytes(png_bytes(np.full((300, 300), 90, np.uint8)))
    with ThreadServer(tmp_path / "data", model=tiny_model_dir) as server:
        for k in range(11):  # more than one page of history (10 per page)
            server.app.state.service.assess_upload(phantom_png(100, "M", seed=k), f"p{k}.png",
                                                   validate_inputs("M"), "api")
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url + "/")
        page.wait_for_selector("#page-info:has-text('1–10 of 11')")
        page.click("#next-page")
        page.wait_for_selector("#page-info:has-text('11–11 of 11')")
        page.click("#history-rows tr")
        page.wait_for_selector("#result-id:has-text('p0.png')")

        page.set_input_files("#file", str(blank))
        page.click("#submit")
        page.wait_for_selector("#upload-status:has-text('Choose the sex')")
        page.select_option("#sex", "M")
        page.click("#submit")
        page.wait_for_selector("#upload-status:has-text('image is blank')", timeout=60_000)
        assert "not estimated" in page.inner_text("#bone-age")
        assert page.inner_text("#overlay-caption") == "The image as read; the model rejected it"
        assert page.is_disabled("#accept")
        assert server.store.count() == 12
        page.close()


def test_the_radiograph_is_shown_large_with_a_full_size_link_and_a_rejection_beside_it(browser, tiny_model_dir, tmp_path):
    """The picture fills its column up to 80% of the window's height (a reader checks the bones on it), says
    its own size in pixels and opens full size; a rejected image is shown as it is with the reason under it."""
    import numpy as np

    from tests.service_helpers import png_bytes

    hand = tmp_path / "hand.png"
    hand.write_bytes(phantom_png(130, "F", size=320))
    white = tmp_path / "white.png"
    white.write_bytes(png_bytes(np.full((400, 300), 255, np.uint8)))
    with ThreadServer(tmp_path / "data", model=tiny_model_dir) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        submit_in_browser(page, server.url, "tiny-test", hand)
        page.wait_for_selector("#overlay-image[data-loaded='true']", timeout=60_000)
        page.wait_for_selector("#overlay-size:has-text('px')")
        assert page.inner_text("#overlay-size") == "(320 × 320 px)"
        box = page.eval_on_selector("#overlay-image", "img => img.getBoundingClientRect().toJSON()")
        assert box["width"] > 500 and box["height"] <= 0.8 * 1000 + 1, box  # larger than the image, within 80vh
        assert page.get_attribute("#image-full", "href").startswith("blob:")
        assert page.is_hidden("#overlay-reason")

        page.set_input_files("#file", str(white))
        page.click("#submit")
        page.wait_for_selector("#overlay-reason:has-text('image is blank')", timeout=60_000)
        page.wait_for_selector("#overlay-size:has-text('300 × 400 px')")  # written once the picture is loaded
        assert page.inner_text("#overlay-reason").startswith("Rejected: white.png: image is blank")
        server_picture = page.evaluate("""async () => {
            const img = document.getElementById('overlay-image');
            const canvas = document.createElement('canvas');
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0);
            return Array.from(context.getImageData(0, 0, 4, 4).data.slice(0, 3));
        }""")
        assert server_picture == [255, 255, 255]  # shown white, as it is
        page.close()
