"""Per-bone (RUS-CHN) results where the service shows them: the stored record and its report through the web
API, the result page of the browser UI (headless Chromium, skipped without it), and the DICOM node's
Structured Report and Secondary Capture text."""

from __future__ import annotations

import re

import pytest

from boneage.clinical import interpret
from boneage.clinical.assessment import BONE_NAMES, RUS_CHN_SCALE
from boneage.data.rus_chn import BONES, stage_score
from tests.conftest import export_tiny_model
from tests.service_helpers import ThreadServer, phantom_png, submit_in_browser


@pytest.fixture(scope="module")
def rus_chn_dir(tmp_path_factory):
    return export_tiny_model(tmp_path_factory.mktemp("tiny_rus_chn"), "tiny-rus-chn", "rus_chn")


def _per_bone_assessment():
    a = interpret(130.0, "M", chronological_age_months=125.0)
    a.model = {"name": "tiny-rus-chn", "version": "test"}
    a.bones = [{"name": name, "box": [1.0, 2.0, 3.0, 4.0], "stage": k % 4, "score": stage_score(name, k % 4, "M"),
                "stage_probability": 0.5, "box_score": 0.9} for k, name in enumerate(BONES)]
    a.rus_chn = {"total_score": sum(b["score"] for b in a.bones), "age_months": 100.0, "expected_total_score": 300.0,
                 "raw_months": 99.0, "scale": RUS_CHN_SCALE}
    return a


def _items(ds) -> dict[str, str]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in ds.ContentSequence}


def test_the_structured_report_has_an_item_per_bone_and_the_total():
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset

    from boneage.service.dicom_node.results import build_text_sr, identity_of, result_lines

    source = Dataset()
    source.PatientName, source.PatientID = "Bones^Boy", "P-13"
    a = _per_bone_assessment()
    items = _items(build_text_sr(a, identity_of(source)))
    for bone in a.bones:
        text = items[f"RUS-CHN {BONE_NAMES[bone['name']]}"]
        assert text == f"{bone['name']}: stage {bone['stage']}, score {bone['score']}"
    total = items["RUS-CHN total score"]
    assert total.startswith(f"RUS-CHN total score {a.rus_chn['total_score']}: RUS-CHN bone age 8 years 4 months")
    assert "Greulich & Pyle equivalent" in total
    codes = [item.ConceptNameCodeSequence[0].CodeValue for item in build_text_sr(a, identity_of(source)).ContentSequence]
    assert sum(code.startswith("RUS-") for code in codes) == 14 and all(len(code) <= 16 for code in codes)
    assert any(line.startswith("RUS-CHN total score") for line in result_lines(a))

    a.bones = a.rus_chn = None  # another model: no bone items
    plain = build_text_sr(a, identity_of(source))
    assert not any(item.ConceptNameCodeSequence[0].CodeValue.startswith("RUS-") for item in plain.ContentSequence)
    assert not any("RUS-CHN" in line for line in result_lines(a))


def test_the_web_api_stores_the_bones_and_its_report_shows_them(tmp_path, rus_chn_dir):
    import httpx

    with ThreadServer(tmp_path / "data", model=rus_chn_dir) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        response = client.post("/api/assessments", files={"image": ("hand.png", phantom_png(130, "F"), "image/png")},
                               data={"sex": "F"})
        assert response.status_code == 201, response.text
        record = client.get(response.json()["links"]["self"]).json()
        result = record["result"]
        assert [bone["name"] for bone in result["bones"]] == list(BONES)
        assert result["rus_chn_score"] == sum(bone["score"] for bone in result["bones"])
        assert result["evidence"]["label"].startswith("RUS-CHN bones and stages")
        pdf = client.get(record["links"]["report"])
        assert pdf.status_code == 200
        # results, the bones' page and the radiograph without the overlay
        assert len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf.content)) == 3


def test_the_result_page_shows_the_bones_table(browser, tmp_path, rus_chn_dir, tiny_model_dir):
    hand = tmp_path / "hand.png"
    hand.write_bytes(phantom_png(130, "F", size=320))
    with ThreadServer(tmp_path / "data", model=rus_chn_dir) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        submit_in_browser(page, server.url, "tiny-rus-chn", hand)
        page.wait_for_selector("#bone-age:has-text('years')", timeout=60_000)
        [record] = server.store.list()["items"]
        result = server.store.get(record["id"])["result"]
        assert page.is_visible("#bones")
        rows = page.locator("#bone-rows tr")
        assert rows.count() == 13
        for k, bone in enumerate(result["bones"]):
            cells = rows.nth(k).locator("th, td").all_inner_texts()
            assert bone["name"] in cells[0] and cells[1:] == [str(bone["stage"]), str(bone["score"])]
        assert page.inner_text("#bones-total") == str(result["rus_chn_score"])
        assert "Chinese standard" in page.inner_text("#rus-chn-line")
        assert problems == [], problems
        page.close()
    with ThreadServer(tmp_path / "data-plain", model=tiny_model_dir) as server:  # another model: no table
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        submit_in_browser(page, server.url, "tiny-test", hand)
        page.wait_for_selector("#bone-age:has-text('years')", timeout=60_000)
        assert not page.is_visible("#bones") and page.locator("#bone-rows tr").count() == 0
        page.close()
