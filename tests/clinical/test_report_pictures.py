"""What a reader sees in a report: the radiograph at its own resolution in the PDF (its grey levels kept),
a rejected image as it is with the reason beside it, the growth chart's axes per sex, and names in any
script drawn without a missing-glyph warning. No model is needed: Assessments are built by hand."""

import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from boneage.clinical import Assessment, growth_chart, render_report, write_report
from boneage.clinical import report as report_module
from boneage.explain import DISPLAY_MAX_SIDE, display_image

needs_poppler = pytest.mark.skipif(shutil.which("pdfimages") is None,
                                   reason="pdfimages not installed (Debian poppler-utils; .ci/run installs it)")


def _assessed(picture: np.ndarray, **kw) -> Assessment:
    fields = dict(status="ok", source="/images/hand.png", sex="F", bone_age_months=130.0,
                  chronological_age_months=125.0, radiograph=picture)
    return Assessment(**{**fields, **kw})


def _rejected(picture: np.ndarray | None, reason="blank.png: image is blank (every pixel has the same value)"):
    return Assessment(status="rejected", source="/images/blank.png", sex="F", rejection=reason, radiograph=picture)


def _pdf_image_sizes(pdf: bytes) -> list[tuple[int, int]]:
    """(width, height) of every image XObject in a PDF, read from its dictionary."""
    sizes = []
    for match in re.finditer(rb"/Subtype\s*/Image", pdf):
        head = pdf[match.start() : match.start() + 200]
        width, height = re.search(rb"/Width\s+(\d+)", head), re.search(rb"/Height\s+(\d+)", head)
        sizes.append((int(width.group(1)), int(height.group(1))))
    return sizes


def _extract_images(pdf: bytes, tmp_path) -> list[np.ndarray]:
    """The images of a PDF as stored, extracted with poppler's pdfimages."""
    (tmp_path / "r.pdf").write_bytes(pdf)
    subprocess.run(["pdfimages", "-png", str(tmp_path / "r.pdf"), str(tmp_path / "img")], check=True)
    return [np.asarray(Image.open(path).convert("RGB")) for path in sorted(tmp_path.glob("img-*.png"))]


# ------------------------------------------------------------------------ the radiograph in the PDF
def test_pdf_embeds_the_radiograph_at_its_own_resolution():
    """matplotlib resamples images in vector output to the figure dpi unless interpolation is 'none':
    a 1024 px radiograph in the report's 3.5-inch box would otherwise come out at ~350 px."""
    radiograph = np.random.default_rng(0).integers(0, 256, (DISPLAY_MAX_SIDE, 700), dtype=np.uint8)
    assert _pdf_image_sizes(render_report(_assessed(radiograph), "pdf")) == [(700, DISPLAY_MAX_SIDE)]
    overlay = np.random.default_rng(1).integers(0, 256, (512, 394, 3), dtype=np.uint8)
    with_evidence = _assessed(radiograph[:512, :394], evidence=overlay, evidence_label="Grad-CAM")
    # page 1 the evidence overlay, page 2 the radiograph without it: both at their own resolution
    assert _pdf_image_sizes(render_report(with_evidence, "pdf")) == [(394, 512), (394, 512)]


@needs_poppler
def test_page_2_is_the_radiograph_without_the_overlay(tmp_path):
    radiograph = np.random.default_rng(3).integers(0, 256, (300, 240), dtype=np.uint8)
    overlay = np.random.default_rng(4).integers(0, 256, (300, 240, 3), dtype=np.uint8)
    a = _assessed(radiograph, evidence=overlay, evidence_label="Grad-CAM: test")
    pdf = render_report(a, "pdf")
    info = subprocess.run(["pdfinfo", "-"], input=pdf, capture_output=True).stdout.decode()
    assert re.search(r"Pages:\s+2", info), info
    first, second = _extract_images(pdf, tmp_path)
    np.testing.assert_array_equal(first[::-1], overlay)
    np.testing.assert_array_equal(second[::-1][..., 0], radiograph)
    html = write_report(a, tmp_path / "r.html").read_text()
    assert "Radiograph as read" in html and html.count("data:image/png;base64,") == 3  # overlay, chart, radiograph
    assert "The radiograph without it: below the results." in html
    assert _pdf_image_sizes(render_report(_assessed(radiograph), "pdf")) == [(240, 300)]  # no overlay: one page


@needs_poppler
def test_pdf_radiograph_extracted_with_pdfimages_is_the_picture_pixel_for_pixel(tmp_path):
    rng = np.random.default_rng(2)
    levels = np.sort(rng.choice(256, 150, replace=False)).astype(np.uint8)  # so a palette index is no grey level
    radiograph = levels[rng.integers(0, 150, (800, 600))]
    listing = subprocess.run(["pdfimages", "-list", "-"], input=render_report(_assessed(radiograph), "pdf"),
                             capture_output=True).stdout.decode()
    assert re.search(r"image\s+600\s+800\s", listing), listing
    (image,) = _extract_images(render_report(_assessed(radiograph), "pdf"), tmp_path)
    grey = image if image.ndim == 2 else image[..., 0]
    # stored bottom row first (the page's transform turns it upright); every grey level kept
    np.testing.assert_array_equal(grey[::-1], radiograph)


@pytest.mark.realdata
@pytest.mark.slow
def test_default_model_report_of_1437_shows_the_radiograph_with_its_evidence(rsna512):
    """The default model crops to the hand (a 100 px input); its evidence is mapped back onto the whole
    radiograph at its own 394 x 512 px, and the PDF embeds that, not a blown-up model input."""
    from boneage.api import assess

    a = assess(rsna512 / "images" / "1437.png", sex="F", age="10y10m", height_cm=140)
    assert a.status == "ok" and a.radiograph.shape == (512, 394)
    assert a.evidence is not None and a.evidence.shape == (512, 394, 3) and a.evidence.dtype == np.uint8
    assert _pdf_image_sizes(render_report(a, "pdf")) == [(394, 512), (394, 512)]  # the overlay; the radiograph


# -------------------------------------------------------------------------- a rejected image as it is
@pytest.mark.parametrize("pixels,grey", [
    (np.full((300, 200), 255, np.uint8), 255),  # all white stays white (it was drawn black before)
    (np.full((300, 200), 90, np.uint8), 90),
    (np.full((300, 200), 65535, np.uint16), 255),  # 16-bit: over 0-65535
    (np.full((300, 200), 4095.0, np.float32), 255),  # DICOM values (12-bit) after their LUTs
    (np.full((300, 200, 3), 255, np.uint8), 255),
])
def test_a_constant_image_is_shown_at_its_own_grey_level(pixels, grey):
    shown = display_image(pixels)
    assert shown.dtype == np.uint8 and shown.shape == (300, 200) and np.all(shown == grey)


def test_display_image_downscales_only_to_fit():
    assert display_image(np.full((2048, 1536), 7, np.uint8)).shape == (1024, 768)
    ramp = np.tile(np.arange(394, dtype=np.uint16) * 100, (512, 1))
    assert display_image(ramp).shape == (512, 394)  # a small radiograph keeps its size


def test_rejected_report_shows_the_picture_and_the_reason_beside_it(tmp_path):
    white = display_image(np.full((600, 450), 255, np.uint8))
    a = _rejected(white)
    figure = report_module._pdf_figure(a, white)
    (image_ax,) = [ax for ax in figure.axes if ax.images]
    assert np.all(image_ax.images[0].get_array() == 255)  # white, not black
    reason = [t for t in figure.texts if t.get_text().startswith("Rejected: blank.png: image is blank")]
    assert reason, [t.get_text() for t in figure.texts]
    box = image_ax.get_position(original=True)  # the picture's box (the image is centred in it)
    left, bottom = box.x0, box.y0
    x, y = reason[0].get_position()
    assert x == pytest.approx(left) and 0 < bottom - y < 0.02  # right under the picture
    assert any("every pixel has the same value: shown at that grey level" in t.get_text().replace("\n", " ")
               for t in figure.texts)
    html = write_report(a, tmp_path / "r.html").read_text()
    figcaption = re.search(r'<figure><img alt="radiograph".*?<figcaption>(.*?)</figcaption>', html, re.S).group(1)
    assert "Rejected: blank.png: image is blank" in figcaption
    assert write_report(a, tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


@needs_poppler
@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm not installed (Debian poppler-utils)")
def test_rejected_white_image_is_white_on_the_page(tmp_path):
    """The page as a viewer shows it (pdftoppm): where a mid-grey image shows grey, an all-white one shows
    white (it was drawn black before). pdfimages is no judge here: it writes a one-colour image as a 1-bit
    mask, without its palette."""
    def page(grey: int) -> np.ndarray:
        pdf = tmp_path / f"{grey}.pdf"
        pdf.write_bytes(render_report(_rejected(display_image(np.full((120, 90), grey, np.uint8))), "pdf"))
        subprocess.run(["pdftoppm", "-gray", "-r", "40", "-png", "-singlefile", str(pdf), str(tmp_path / f"{grey}")],
                       check=True)
        return np.asarray(Image.open(tmp_path / f"{grey}.png").convert("L")).astype(int)

    grey_page, white_page = page(90), page(255)
    differ = np.abs(grey_page - white_page) > 100  # the two pages differ only in the picture
    rows, cols = np.nonzero(differ.sum(axis=1) >= 20)[0], np.nonzero(differ.sum(axis=0) >= 20)[0]
    assert rows.size > 60 and cols.size > 40, (rows.size, cols.size)  # large on the page (40 dpi)
    inside = (slice(rows.min() + 2, rows.max() - 1), slice(cols.min() + 2, cols.max() - 1))  # within the frame
    assert np.all(np.abs(grey_page[inside] - 90) <= 2)
    assert white_page[inside].min() >= 250


def test_rejected_without_a_picture_still_says_why(tmp_path):
    html = write_report(_rejected(None, reason="x.dcm: DICOM file is truncated"), tmp_path / "r.html").read_text()
    assert "No image can be shown." in html and "Rejected: x.dcm: DICOM file is truncated" in html


# ------------------------------------------------------------------------------------ chart per sex
@pytest.mark.parametrize("sex,x_max,y_max", [("F", 16, 17), ("M", 17, 20), (None, 17, 20)])
def test_chart_axes_follow_the_reference_of_that_sex(sex, x_max, y_max):
    """Greulich & Pyle tabulate girls to 192 months (16 y) and boys to 204 (17 y); the bone age axis goes
    to the top of the +2 SD band."""
    ax = growth_chart(Figure(), sex, 120, 126, interval_months=(118, 134))
    assert ax.get_xlim() == (0, x_max) and ax.get_ylim() == (0, y_max)
    assert not [t for t in ax.texts if "beyond" in t.get_text()]


def test_chart_shows_a_point_beyond_the_reference_and_says_so():
    ax = growth_chart(Figure(), "F", 210, 205)  # a girl of 17.5 years: past the girls' table
    assert ax.get_xlim()[1] >= 210 / 12 and ax.get_ylim()[1] >= 205 / 12
    point = ax.containers[0].lines[0].get_xydata()[0]  # the errorbar's marker
    assert tuple(point) == pytest.approx((210 / 12, 205 / 12))
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "beyond the Greulich & Pyle reference for girls (to 16 years)" in notes and "widened" in notes
    boy = growth_chart(Figure(), "M", 150, 246)  # a bone age above the boys' band (to 20 years)
    assert boy.get_xlim() == (0, 17) and boy.get_ylim()[1] >= 246 / 12
    assert any("bone age beyond" in t.get_text() for t in boy.texts)


def test_chart_without_an_age_draws_a_line_above_the_reference_too():
    ax = growth_chart(Figure(), "F", None, 216)
    assert ax.get_ylim()[1] >= 18 and any("chronological age unknown" in t.get_text() for t in ax.texts)


# ------------------------------------------------------------------------------------------- fonts
NAME = "hand-Jürgen-ÿ-中文.png"


def _font_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "Glyph" in str(w.message) or "font" in str(w.message).lower()]


def test_a_name_in_any_script_is_drawn_without_a_font_warning(tmp_path):
    a = _assessed(np.full((64, 48), 128, np.uint8), source=f"/uploads/{NAME}",
                  patient={"name": "山田^太郎", "id": "P-ÿ1"})
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        pdf = write_report(a, tmp_path / "r.pdf")
        write_report(a, tmp_path / "r.html")
    assert pdf.read_bytes().startswith(b"%PDF") and _font_warnings(record) == []
    figure = report_module._pdf_figure(a, a.radiograph)
    (shown,) = [t for t in figure.texts if t.get_text().startswith("hand-J")]
    if report_module._fallback_font("中") is None:  # no installed font has the characters: a visible placeholder
        assert shown.get_text() == "hand-Jürgen-ÿ-" + report_module.PLACEHOLDER * 2 + ".png"
    else:  # an installed font (e.g. a CJK font) draws them
        assert shown.get_text() == NAME and len(shown.get_fontfamily()) > 1
    assert NAME in (tmp_path / "r.html").read_text()  # the browser has its own fonts


def test_a_name_with_dollar_signs_is_text_not_mathtext(tmp_path):
    a = _assessed(np.full((64, 48), 128, np.uint8), source="/uploads/hand $x^2$ 50$.png")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        write_report(a, tmp_path / "r.pdf")
    figure = report_module._pdf_figure(a, a.radiograph)
    assert any(t.get_text() == "hand $x^2$ 50$.png" for t in figure.texts) and _font_warnings(record) == []
