"""Evaluation of the four-stage RUS-CHN pipeline (:mod:`boneage.models.rus_chn`): its box geometry, stages and errors.

* **Geometry** (:func:`measure_box_geometry`, :func:`measure_keypoint_geometry`, :func:`geometry_comparison`):
  the constants of :mod:`boneage.models.rus_chn.geometry` measured again from the Koitka et al. ossification
  boxes. Per image, the frame of the MCP row: the five MCP boxes sorted by centre x, descending (thumb,
  index, middle, ring, little in a left hand's PA view), origin the middle finger's MCP box centre, across
  unit ``t`` from the little to the index finger's MCP centre (their distance is ``W``), along unit ``p``
  perpendicular to it, pointing away from the middle finger's PIP box (PIP boxes sorted the same way,
  the third is the middle finger's; the first is the thumb's IP joint). Positions are in ``(t, p)``
  coordinates in units of ``W``, sizes are box widths (and heights) over ``W`` (joints: per image the median of its
  four finger boxes of a kind, then the median over images). The same frame built
  from keypoints (forefinger1, middle_finger1, pinky_finger1) places the middle finger's PIP and DIP
  keypoints: a cross-check that Koitka's boxes sit on the joints the keypoints mark.
* **Pictures**: :func:`draw_contact_sheet` (the 13 boxes, labelled, on a grid of images) and
  :func:`plot_stage_distribution` (mean stage against age, per bone and sex).
* **Stages and errors**: :func:`stage_distribution` (mean stage per bone and age group, Spearman's rho of
  stage with age, whether the group means rise) and :func:`age_group_table` (MAE and RMSE by the paper's
  age groups, :data:`RUS_AGE_GROUPS_YEARS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.keypoints import KEYPOINT_NAMES, HandKeypoints, OssificationBoxes
from ..data.rus_chn import BONES, stage_count
from ..utils import atomic_write

__all__ = ["BONE_LABELS", "RUS_AGE_GROUPS_YEARS", "age_group_table", "code_geometry", "draw_contact_sheet",
           "geometry_comparison", "measure_box_geometry", "measure_keypoint_geometry", "plot_stage_distribution",
           "stage_distribution", "summarise"]

# Short labels of the 13 bones in BONES order: radius, ulna, metacarpals, proximal, middle and distal phalanges.
BONE_LABELS = ("R", "U", "MC1", "MC3", "MC5", "PP1", "PP3", "PP5", "MP3", "MP5", "DP1", "DP3", "DP5")
# The age groups of the paper's Table 2, in years of reference bone age: [low, high). "16-18" is 16 up to 19
# years exclusive, so an image at 19 years or more (RSNA's 228 months) is in no group, only in "all".
RUS_AGE_GROUPS_YEARS = (("0-3", 0, 4), ("4-7", 4, 8), ("8-11", 8, 12), ("12-15", 12, 16), ("16-18", 16, 19))
_COMPLETE = {"DIP": 4, "PIP": 5, "MCP": 5, "Radius": 1, "Ulna": 1}
_KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
_COLOURS = {"R": "tab:red", "U": "tab:orange", "MC": "tab:blue", "PP": "tab:green", "MP": "tab:purple", "DP": "tab:cyan"}


# ------------------------------------------------------------------------------------------------ geometry
def _frame(index: np.ndarray, middle: np.ndarray, little: np.ndarray, pip: np.ndarray):
    """The MCP row's frame: ``(origin, t, p, W)``, ``p`` pointing away from ``pip`` (the middle finger's PIP)."""
    width = float(np.linalg.norm(index - little))
    t = (index - little) / max(width, 1e-9)
    p = np.array([-t[1], t[0]])
    if float(np.dot(pip - middle, p)) > 0:
        p = -p
    return middle, t, p, max(width, 1e-9)


def _in_frame(point: np.ndarray, frame) -> tuple[float, float]:
    origin, t, p, width = frame
    d = np.asarray(point, dtype=np.float64) - origin
    return float(np.dot(d, t) / width), float(np.dot(d, p) / width)


def _sorted_boxes(item: OssificationBoxes, label: str) -> np.ndarray:
    """The image's ``label`` boxes in pixels, sorted by centre x, descending."""
    scale = np.array([item.width, item.height, item.width, item.height], dtype=np.float64)
    boxes = np.asarray(item.boxes, dtype=np.float64)[[lab == label for lab in item.labels]] * scale
    return boxes[np.argsort(-(boxes[:, 0] + boxes[:, 2]), kind="stable")]


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def _box_values(item: OssificationBoxes) -> dict[str, list[float]] | None:
    """One image's measurements (see :func:`measure_box_geometry`), or None when a box is missing."""
    counts = {label: sum(lab == label for lab in item.labels) for label in _COMPLETE}
    if counts != _COMPLETE:
        return None
    mcp, pip, dip = (_sorted_boxes(item, label) for label in ("MCP", "PIP", "DIP"))
    frame = _frame(_centre(mcp[1]), _centre(mcp[2]), _centre(mcp[4]), _centre(pip[2]))
    width = frame[3]
    values: dict[str, list[float]] = {}
    for name in ("Radius", "Ulna"):
        box = _sorted_boxes(item, name)[0]
        across, along = _in_frame(_centre(box), frame)
        key = name.lower()
        values.update({f"{key}_t": [across], f"{key}_p": [along], f"{key}_w": [(box[2] - box[0]) / width],
                       f"{key}_h": [(box[3] - box[1]) / width]})
    sides = {"mcp": mcp[1:], "pip": pip[1:], "dip": dip, "thumb_mcp": mcp[:1], "thumb_ip": pip[:1]}
    for name, boxes in sides.items():
        values[f"{name}_size"] = [float(np.median(boxes[:, 2] - boxes[:, 0])) / width]  # the image's median
        values[f"{name}_height"] = [float(np.median(boxes[:, 3] - boxes[:, 1])) / width]
    for name, box in (("pip3", pip[2]), ("dip3", dip[1])):
        across, along = _in_frame(_centre(box), frame)
        values[f"{name}_t"], values[f"{name}_p"] = [across], [along]
    values["W_px"] = [width]
    return values


def measure_box_geometry(boxes: Mapping[str, OssificationBoxes]) -> dict[str, np.ndarray]:
    """Per-box values over every image with DIP 4, PIP 5, MCP 5, radius and ulna (the others are skipped).

    Keys: ``radius_t/_p/_w/_h`` and ``ulna_...`` (centre in ``(t, p)`` units of ``W``, box width and height
    over ``W``), ``{mcp, pip, dip, thumb_mcp, thumb_ip}_size`` (box widths over ``W``, per image the median of
    its boxes of that kind, so every image counts once: MCP and PIP without the thumb's, all four DIP, the
    thumb's MCP and IP apart) and ``_height``, ``pip3_t/_p`` and ``dip3_t/_p`` (the middle
    finger's PIP and DIP box centres), ``W_px``; and ``n_images``.
    """
    collected: dict[str, list[float]] = {}
    used = 0
    for item in boxes.values():
        values = _box_values(item)
        if values is None:
            continue
        used += 1
        for key, v in values.items():
            collected.setdefault(key, []).extend(v)
    result = {key: np.asarray(v, dtype=np.float64) for key, v in collected.items()}
    result["n_images"] = np.asarray(used)
    return result


def measure_keypoint_geometry(keypoints: Mapping[str, HandKeypoints]) -> dict[str, np.ndarray]:
    """The middle finger's PIP (``pip3_t/_p``) and DIP (``dip3_t/_p``) keypoints in the MCP row's frame built
    from keypoints (origin middle_finger1, ``t`` from pinky_finger1 to forefinger1, ``p`` away from
    middle_finger2), in units of ``W``; every annotated hand counts (pixels: normalised x width, y height)."""
    collected: dict[str, list[float]] = {key: [] for key in ("pip3_t", "pip3_p", "dip3_t", "dip3_p", "W_px")}
    for item in keypoints.values():
        for hand in np.asarray(item.points, dtype=np.float64):
            pts = hand * np.array([item.width, item.height])
            frame = _frame(pts[_KP["forefinger1"]], pts[_KP["middle_finger1"]], pts[_KP["pinky_finger1"]],
                           pts[_KP["middle_finger2"]])
            for name, joint in (("pip3", "middle_finger2"), ("dip3", "middle_finger3")):
                across, along = _in_frame(pts[_KP[joint]], frame)
                collected[f"{name}_t"].append(across)
                collected[f"{name}_p"].append(along)
            collected["W_px"].append(frame[3])
    return {key: np.asarray(v, dtype=np.float64) for key, v in collected.items()}


def summarise(values: np.ndarray) -> dict[str, float]:
    """``{'median', 'q1', 'q3', 'n'}`` of a vector."""
    values = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.percentile(values, [25, 50, 75]) if values.size else (np.nan,) * 3
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "n": int(values.size)}


def code_geometry() -> dict[str, float]:
    """The constants of :mod:`boneage.models.rus_chn.geometry` under the keys of :func:`measure_box_geometry`."""
    from ..models.rus_chn.geometry import FOREARM, JOINT_SIZE

    out = {f"{name}_size": float(value) for name, value in JOINT_SIZE.items()}
    for bone, ((across, along), (w, h)) in FOREARM.items():
        key = bone.lower()
        out.update({f"{key}_t": float(across), f"{key}_p": float(along), f"{key}_w": float(w), f"{key}_h": float(h)})
    return out


def geometry_comparison(box_values: Mapping[str, np.ndarray],
                        keypoint_values: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """One row per measured quantity: ``{'key', 'code', 'median', 'q1', 'q3', 'n', 'keypoints'}`` (``code``: the
    constant in the code or None; ``keypoints``: the summary of the same quantity from keypoints, or None)."""
    code = code_geometry()
    rows = []
    for key, values in box_values.items():
        if key == "n_images":
            continue
        other = keypoint_values.get(key) if keypoint_values is not None else None
        rows.append({"key": key, "code": code.get(key), **summarise(values),
                     "keypoints": summarise(other) if other is not None else None})
    return rows


# ------------------------------------------------------------------------------------------------ pictures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_boxes(ax, boxes: np.ndarray, labels: Sequence[str], fontsize: float) -> None:
    from matplotlib.patches import Rectangle

    for (x1, y1, x2, y2), label in zip(np.asarray(boxes, dtype=float), labels):
        colour = _COLOURS.get(label.rstrip("0123456789"), "yellow")
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=0.8))
        ax.text(x1, y1, label, color=colour, fontsize=fontsize, va="bottom", ha="left")


def draw_contact_sheet(images, boxes, out_path: str | Path, titles: Sequence[str] | None = None, cols: int = 4, *,
                       points=None, cell_px: int = 300, labels: Sequence[str] = BONE_LABELS) -> Path:
    """Draw each image ``(N, H, W)`` with its 13 boxes ``(N, 13, 4)`` (x1, y1, x2, y2 in the image's pixels), labelled,
    on a grid of ``cols`` columns; optional ``points`` ``(N, K, 2)`` as dots. The PNG is exactly
    ``cols * cell_px`` wide and ``rows * cell_px`` high. Returns ``out_path``."""
    plt = _pyplot()
    images = np.asarray(images)
    boxes = np.asarray(boxes, dtype=float)
    if len(images) != len(boxes) or len(images) == 0:
        raise ValueError(f"{len(images)} images for {len(boxes)} box sets")
    cols = max(1, min(int(cols), len(images)))
    rows = -(-len(images) // cols)
    dpi = 100
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_px / dpi, rows * cell_px / dpi), dpi=dpi, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95 if titles else 0.99, wspace=0.03, hspace=0.12)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray")
        ax.set_xlim(-0.5, images[i].shape[1] - 0.5)  # boxes past the border are cut, not the image shrunk
        ax.set_ylim(images[i].shape[0] - 0.5, -0.5)
        _draw_boxes(ax, boxes[i], labels, fontsize=max(4.0, cell_px / 60))
        if points is not None:
            ax.scatter(np.asarray(points[i])[:, 0], np.asarray(points[i])[:, 1], s=3, c="yellow", linewidths=0)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=max(5.0, cell_px / 40))
    out_path = Path(out_path)
    atomic_write(out_path, lambda stream: fig.savefig(stream, format="png", dpi=dpi))
    plt.close(fig)
    return out_path


# ------------------------------------------------------------------------------------------ stages, errors
def _group_masks(ages_months, groups=RUS_AGE_GROUPS_YEARS) -> dict[str, np.ndarray]:
    years = np.asarray(ages_months, dtype=np.float64) / 12.0
    return {name: (years >= low) & (years < high) for name, low, high in groups}


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return round(float(spearmanr(x, y).statistic), 4)


def _group_means(values: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float | None]:
    return {name: round(float(values[m].mean()), 3) if m.any() else None for name, m in masks.items()}


def stage_distribution(stages, ages_months, sexes=None, groups=RUS_AGE_GROUPS_YEARS) -> dict:
    """Per bone, the mean predicted stage per age group (of ``ages_months``, the reference bone age) overall
    and per sex, Spearman's rho of stage with age (None for a constant stage), and ``monotone``: whether the
    group means (of the groups with images) never fall from one group to the next.

    Returns ``{'groups', 'n_by_group', 'by_bone': {bone: {'mean_by_group', 'by_sex', 'spearman', 'monotone'}}}``.
    """
    stages = np.asarray(stages, dtype=np.float64)
    ages = np.asarray(ages_months, dtype=np.float64)
    if stages.ndim != 2 or stages.shape != (len(ages), len(BONES)):
        raise ValueError(f"stages must be (N, {len(BONES)}) for {len(ages)} ages, got {stages.shape}")
    masks = _group_masks(ages, groups)
    sexes = None if sexes is None else np.asarray(sexes)
    by_bone = {}
    for b, bone in enumerate(BONES):
        means = _group_means(stages[:, b], masks)
        present = [v for v in means.values() if v is not None]
        by_sex = {}
        if sexes is not None:
            by_sex = {sex: _group_means(stages[:, b], {k: m & (sexes == sex) for k, m in masks.items()}) for sex in ("F", "M")}
        by_bone[bone] = {"mean_by_group": means, "by_sex": by_sex, "spearman": _spearman(stages[:, b], ages),
                         "monotone": bool(all(later >= earlier for earlier, later in zip(present, present[1:])))}
    return {"groups": [g[0] for g in groups], "n_by_group": {k: int(m.sum()) for k, m in masks.items()}, "by_bone": by_bone}


def plot_stage_distribution(distribution: dict, out_png: str | Path, title: str = "") -> Path:
    """13 small panels (one per bone, y over its whole stage range): mean stage per age group of a
    :func:`stage_distribution`, one line per sex (one overall without sexes). Returns ``out_png``."""
    plt = _pyplot()
    groups = distribution["groups"]
    fig, axes = plt.subplots(3, 5, figsize=(14, 8), sharex=True)
    x = np.arange(len(groups))
    for ax, (bone, label) in zip(axes.ravel(), zip(BONES, BONE_LABELS)):
        entry = distribution["by_bone"][bone]
        lines = entry["by_sex"] or {"all": entry["mean_by_group"]}
        for sex, means in lines.items():
            y = np.array([np.nan if means[g] is None else means[g] for g in groups], dtype=float)
            colour = {"M": "tab:blue", "F": "tab:red"}.get(sex, "k")
            ax.plot(x, y, "o-", color=colour, ms=3, lw=1, label={"M": "boys", "F": "girls"}.get(sex, sex))
        ax.set_ylim(-0.5, max(stage_count(bone, "F"), stage_count(bone, "M")) - 0.5)  # the bone's whole stage range
        rho = entry["spearman"]
        ax.set_title(f"{label} ({bone}) rho {'-' if rho is None else f'{rho:.2f}'}", fontsize=8)
        ax.set_xticks(x, groups, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(BONES):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.supxlabel("reference bone age group (years)")
    fig.supylabel("mean predicted stage (0-based)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    atomic_write(out_png, lambda stream: fig.savefig(stream, format="png", dpi=100))
    plt.close(fig)
    return out_png


def age_group_table(pred, truth, groups=RUS_AGE_GROUPS_YEARS) -> dict[str, dict]:
    """MAE and RMSE (months) of ``pred`` against ``truth`` (months) per age group of ``truth`` (years; the paper's
    0-3, 4-7, 8-11, 12-15, 16-18, 16-18 meaning [16, 19)) and ``'all'`` (every image, also those in no group).
    Each entry: ``{'n', 'mae', 'rmse'}``, None for an empty group."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"predictions {pred.shape} and labels {truth.shape} must be equal-length vectors")
    error = pred - truth
    masks = {**_group_masks(truth, groups), "all": np.ones(len(truth), dtype=bool)}
    return {name: {"n": int(m.sum()), "mae": float(np.abs(error[m]).mean()) if m.any() else None,
                   "rmse": float(np.sqrt((error[m] ** 2).mean())) if m.any() else None} for name, m in masks.items()}
