"""The report of a per-bone (RUS-CHN) assessment: a table of the 13 bones with their stages and scores, the
total and the RUS-CHN bone age, in HTML and as a page of its own in the PDF; nothing of it for other models.
No model is needed: Assessments are built by hand."""

import html
import re

import numpy as np

from boneage.clinical import Assessment, render_report
from boneage.clinical.assessment import BONE_NAMES, RUS_CHN_SCALE
from boneage.data.rus_chn import BONES, stage_score


def _per_bone(**kw) -> Assessment:
    stages = [min(k % 7, 5) for k in range(13)]
    bones = [{"name": name, "box": [10.0 * k, 20.0, 10.0 * k + 8, 30.0], "stage": stage,
              "score": stage_score(name, stage, "F"), "stage_probability": 0.5, "box_score": 0.9}
             for k, (name, stage) in enumerate(zip(BONES, stages))]
    total = sum(bone["score"] for bone in bones)
    fields = dict(status="ok", source="/images/hand.png", sex="F", bone_age_months=130.0, chronological_age_months=125.0,
                  radiograph=np.full((200, 160), 90, np.uint8), bones=bones,
                  rus_chn={"total_score": total, "age_months": 123.0, "expected_total_score": total - 0.5,
                           "raw_months": 122.0, "scale": RUS_CHN_SCALE})
    return Assessment(**{**fields, **kw})


def _rows(page: str) -> list[list[str]]:
    """The cells of every row of the bones table."""
    table = re.search(r'<table class="bones">(.*?)</table>', page, re.S).group(1)
    return [[html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)] for row in re.findall(r"<tr>(.*?)</tr>", table)]


def test_html_report_has_a_row_per_bone_with_its_stage_and_score_and_the_total():
    a = _per_bone()
    page = render_report(a, "html").decode("utf-8")
    rows = _rows(page)
    assert rows[0] == ["Bone", "Stage", "Score"]
    assert len(rows) == 1 + 13 + 1
    for bone, row in zip(a.bones, rows[1:14]):
        assert bone["name"] in row[0] and row[1:] == [str(bone["stage"]), str(bone["score"])]
    assert rows[3][0] == f"{BONE_NAMES['MCPFirst']} (MCPFirst)" and rows[1][0] == "Radius"
    assert rows[-1] == ["Total score", "", str(a.rus_chn["total_score"])]
    assert "RUS-CHN bone age 10 years 3 months (123.0 months), Chinese standard" in html.unescape(page)
    for name in BONES:
        assert name in page


def test_no_bones_table_without_bones():
    page = render_report(_per_bone(bones=None, rus_chn=None), "html").decode("utf-8")
    assert 'class="bones"' not in page and "RUS-CHN" not in page and "MCPFirst" not in page


def test_a_stored_per_bone_result_gives_the_same_table():
    a = _per_bone()
    back = Assessment.from_dict(a.to_dict(), radiograph=a.radiograph)
    assert _rows(render_report(back, "html").decode("utf-8")) == _rows(render_report(a, "html").decode("utf-8"))


def _pages(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf))


def test_pdf_report_gives_the_bones_a_page_of_their_own():
    overlay = np.zeros((200, 160, 3), np.uint8)
    assert _pages(render_report(_per_bone(), "pdf")) == 2
    assert _pages(render_report(_per_bone(bones=None, rus_chn=None), "pdf")) == 1
    with_evidence = _per_bone(evidence=overlay, evidence_label="RUS-CHN bones and stages")
    assert _pages(render_report(with_evidence, "pdf")) == 3  # results, bones, the radiograph without the overlay
