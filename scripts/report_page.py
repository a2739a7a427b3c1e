"""The first page of a PDF report as PNG, for the README (docs/report-1437.png).

    python scripts/report_page.py [--out docs/report-1437.png] [--model PATH] [--dpi 110]

Assesses ../shared/data/rsna-512px-samples/images/1437.png (a girl; RSNA bone age 136 months) with the
default model unless --model, sex F, chronological age 10 y 10 m, height 140 cm, writes its PDF report
(kept beside the PNG with --keep-pdf) and renders the first page with Debian's ``pdftoppm``
(poppler-utils). Prints the page's size and the size of the radiograph embedded in the PDF
(``pdfimages -list``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BONEAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
IMAGE = SHARED / "rsna-512px-samples" / "images" / "1437.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "report-1437.png"))
    parser.add_argument("--model", default=None, help="model path (default: the shipped model)")
    parser.add_argument("--image", default=str(IMAGE))
    parser.add_argument("--dpi", type=int, default=110)
    parser.add_argument("--keep-pdf", action="store_true", help="also keep the PDF beside the PNG")
    args = parser.parse_args(argv)
    if not Path(args.image).is_file():
        sys.exit(f"{args.image} not found (the page uses a real RSNA sample from ../shared/data)")
    if shutil.which("pdftoppm") is None:
        sys.exit("pdftoppm not found: install Debian's poppler-utils (apt-get install -y poppler-utils)")

    from PIL import Image

    from boneage.api import assess
    from boneage.clinical import write_report

    assessment = assess(args.image, model=args.model, sex="F", age="10y10m", height_cm=140)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="boneage-report-page-") as work:
        pdf = write_report(assessment, Path(work) / "report.pdf")
        subprocess.run(["pdftoppm", "-png", "-r", str(args.dpi), "-f", "1", "-l", "1", "-singlefile",
                        str(pdf), str(Path(work) / "page")], check=True)
        shutil.copyfile(Path(work) / "page.png", out)
        if args.keep_pdf:
            shutil.copyfile(pdf, out.with_suffix(".pdf"))
        images = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True).stdout
    with Image.open(out) as page:
        size = page.size
    print(f"{out}: {size[0]}x{size[1]} px at {args.dpi} dpi; bone age {assessment.bone_age_text}; "
          f"radiograph {assessment.radiograph.shape[1]}x{assessment.radiograph.shape[0]} px")
    print(images.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
