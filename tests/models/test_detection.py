import math

import torch
import torch.nn.functional as F

from boneage.models.detection import (
    AnchorGenerator,
    RegionProposalNetwork,
    batched_nms,
    box_area,
    box_iou,
    decode_boxes,
    encode_boxes,
    match_anchors,
    nms,
    roi_align,
    sample_labels,
)


def test_box_area_and_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [5.0, 0.0, 15.0, 10.0]])
    torch.testing.assert_close(box_area(b), torch.tensor([100.0, 100.0, 100.0]))
    # half overlap: intersection 50, union 150
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1.0, 0.0, 50.0 / 150.0]]))
    assert box_iou(b, a).shape == (3, 1)


def test_encode_decode_round_trip_and_hand_case():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(20, 2, generator=g) * 100
    anchors = torch.cat([xy, xy + 1 + torch.rand(20, 2, generator=g) * 50], dim=1)
    xy = torch.rand(20, 2, generator=g) * 100
    gt = torch.cat([xy, xy + 1 + torch.rand(20, 2, generator=g) * 50], dim=1)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        deltas = encode_boxes(gt, anchors, weights)
        torch.testing.assert_close(decode_boxes(deltas, anchors, weights), gt, atol=1e-4, rtol=1e-5)

    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])  # centre (5, 5), 10 x 10
    target = torch.tensor([[2.0, 4.0, 22.0, 14.0]])  # centre (12, 9), 20 x 10
    torch.testing.assert_close(encode_boxes(target, anchor), torch.tensor([[0.7, 0.4, math.log(2.0), 0.0]]))
    torch.testing.assert_close(
        encode_boxes(target, anchor, (10.0, 10.0, 5.0, 5.0)), torch.tensor([[7.0, 4.0, 5 * math.log(2.0), 0.0]])
    )
    # huge dw/dh are clamped at log(1000/16): width 10 * 62.5
    huge = decode_boxes(torch.tensor([[0.0, 0.0, 100.0, 100.0]]), anchor)
    torch.testing.assert_close(huge, torch.tensor([[5 - 312.5, 5 - 312.5, 5 + 312.5, 5 + 312.5]]))


def test_nms_greedy_hand_case_and_batched_classes():
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [2.0, 2.0, 12.0, 12.0], [50.0, 50.0, 60.0, 60.0]]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(0,1)=IoU(1,2)=81/119=0.68, IoU(0,2)=64/136=0.47: 1 is suppressed by 0; 2 survives because the
    # suppressed box 1 suppresses nothing.
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.4).tolist() == [3, 0]
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0

    same = batched_nms(boxes[:2], scores[:2], torch.tensor([0, 0]), 0.5)
    different = batched_nms(boxes[:2], scores[:2], torch.tensor([0, 1]), 0.5)
    assert same.tolist() == [0]
    assert different.tolist() == [0, 1]


def test_anchor_generator_count_centres_and_shapes():
    sizes, ratios, stride = (16.0, 32.0), (0.5, 1.0, 2.0), 8
    gen = AnchorGenerator(sizes, ratios, stride)
    height, width = 3, 5
    anchors = gen((height, width))
    num = len(sizes) * len(ratios)
    assert gen.num_anchors == num and anchors.shape == (height * width * num, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    torch.testing.assert_close(centres[0], torch.tensor([stride / 2, stride / 2]))
    # position-major, row by row: anchor (y * W + x) * A + a is centred on cell (x, y)
    y, x, a = 2, 3, 4
    expected_centre = torch.tensor([(x + 0.5) * stride, (y + 0.5) * stride])
    torch.testing.assert_close(centres[(y * width + x) * num + a], expected_centre)
    w, h = anchors[:num, 2] - anchors[:num, 0], anchors[:num, 3] - anchors[:num, 1]
    expected_sizes = torch.tensor([s for s in sizes for _ in ratios])
    expected_ratios = torch.tensor([r for _ in sizes for r in ratios])
    torch.testing.assert_close(torch.sqrt(w * h), expected_sizes)
    torch.testing.assert_close(h / w, expected_ratios)


def test_match_anchors_rules_low_quality_and_empty():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 120.0, 120.0], [200.0, 200.0, 210.0, 210.0]])
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0 -> fg
            [0.0, 0.0, 10.0, 6.0],  # IoU 0.6 -> ignore
            [50.0, 50.0, 60.0, 60.0],  # IoU 0 -> bg
            [100.0, 100.0, 120.0, 110.0],  # IoU 0.5, gt 1's best -> low-quality fg
            [100.0, 100.0, 120.0, 105.0],  # IoU 0.25 -> bg
        ]
    )
    # gt 2 overlaps nothing: it must not turn zero-IoU anchors into foreground.
    labels, matched = match_anchors(anchors, gt)
    assert labels.tolist() == [1, -1, 0, 1, 0]
    assert matched[labels == 1].tolist() == [0, 1]
    labels, _ = match_anchors(anchors, gt, allow_low_quality=False)
    assert labels.tolist() == [1, -1, 0, -1, 0]

    labels, matched = match_anchors(anchors, torch.zeros(0, 4))
    assert labels.tolist() == [0] * 5 and matched.tolist() == [-1] * 5


def test_sample_labels_fraction_and_total():
    labels = torch.cat([torch.ones(10), torch.zeros(100), -torch.ones(20)]).long()
    g = torch.Generator().manual_seed(0)
    mask = sample_labels(labels, batch_size_per_image=32, positive_fraction=0.25, generator=g)
    assert int((mask & (labels == 1)).sum()) == 8
    assert int((mask & (labels == 0)).sum()) == 24
    assert not bool((mask & (labels == -1)).any())

    few = labels.clone()
    few[3:10] = -1  # only 3 positives: negatives fill the batch
    mask = sample_labels(few, batch_size_per_image=32, positive_fraction=0.5, generator=g)
    assert int((mask & (few == 1)).sum()) == 3 and int(mask.sum()) == 32


def _constant_rpn(logit: float, dx: float) -> RegionProposalNetwork:
    """2x2 map, stride 16, anchors of size 16 and 16*sqrt(2): objectness == logit, deltas == (dx, 0, 0, 0)."""
    rpn = RegionProposalNetwork(
        4, stride=16, anchor_sizes=(16.0, 16.0 * math.sqrt(2)), aspect_ratios=(1.0,), batch_size_per_image=1000
    )
    with torch.no_grad():
        rpn.head.cls_logits.weight.zero_()
        rpn.head.cls_logits.bias.fill_(logit)
        rpn.head.bbox_pred.weight.zero_()
        rpn.head.bbox_pred.bias.zero_()
        rpn.head.bbox_pred.bias[0::4] = dx
    return rpn


def test_rpn_loss_known_answer():
    c = 0.3
    features = torch.randn(1, 4, 2, 2)
    gt = [torch.tensor([[0.0, 0.0, 16.0, 16.0]])]  # equals the first anchor
    # Labels: the equal anchor is fg, the sqrt(2)-sized anchor on the same cell (IoU 0.5) is ignored, the
    # other 6 anchors are bg (IoU 0 or < 0.1): 7 sampled anchors.
    _, _, losses = _constant_rpn(c, 0.0)(features, (32, 32), gt)
    expected_bce = (F.softplus(torch.tensor(-c)) + 6 * F.softplus(torch.tensor(c))) / 7
    torch.testing.assert_close(losses["rpn_objectness"], expected_bce)
    assert losses["rpn_box"].item() == 0.0

    # dx = 0.5 on the single positive: smooth-L1 (beta 1/9) linear part, normalised by the 7 sampled anchors
    _, _, losses = _constant_rpn(c, 0.5)(features, (32, 32), gt)
    torch.testing.assert_close(losses["rpn_box"], torch.tensor((0.5 - 0.5 / 9) / 7))


def test_rpn_unannotated_images_contribute_no_loss():
    torch.manual_seed(0)
    rpn = RegionProposalNetwork(8, stride=8, anchor_sizes=(8.0, 16.0), batch_size_per_image=10_000)
    features = torch.randn(2, 8, 4, 4)
    _, _, losses = rpn(features[:1], (32, 32), [torch.zeros(0, 4)])
    assert losses["rpn_objectness"].item() == 0.0 and losses["rpn_box"].item() == 0.0
    (losses["rpn_objectness"] + losses["rpn_box"]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in rpn.parameters())

    gt = torch.tensor([[4.0, 6.0, 20.0, 18.0]])
    _, _, mixed = rpn(features, (32, 32), [gt, torch.zeros(0, 4)])
    _, _, alone = rpn(features[:1], (32, 32), [gt])
    assert alone["rpn_objectness"].item() > 0 and alone["rpn_box"].item() > 0
    for key in ("rpn_objectness", "rpn_box"):
        torch.testing.assert_close(mixed[key], alone[key])


def _bilinear_reference(fmap: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Detectron2's ROIAlign bilinear sample of a (C, H, W) map, written as plain scalar code."""
    height, width = fmap.shape[1:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(math.floor(y)), int(math.floor(x))
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (
        hy * hx * fmap[:, y_low, x_low]
        + hy * lx * fmap[:, y_low, x_high]
        + ly * hx * fmap[:, y_high, x_low]
        + ly * lx * fmap[:, y_high, x_high]
    )


def _roi_align_reference(features, boxes, output_size, spatial_scale, sampling_ratio):
    out_h, out_w = output_size
    results = []
    for image, image_boxes in enumerate(boxes):
        for box in image_boxes.tolist():
            x1, y1, x2, y2 = (v * spatial_scale - 0.5 for v in box)
            bin_h, bin_w = (y2 - y1) / out_h, (x2 - x1) / out_w
            out = torch.zeros(features.shape[1], out_h, out_w, dtype=features.dtype)
            for ph in range(out_h):
                for pw in range(out_w):
                    total = torch.zeros(features.shape[1], dtype=features.dtype)
                    for iy in range(sampling_ratio):
                        for ix in range(sampling_ratio):
                            y = y1 + ph * bin_h + (iy + 0.5) * bin_h / sampling_ratio
                            x = x1 + pw * bin_w + (ix + 0.5) * bin_w / sampling_ratio
                            total = total + _bilinear_reference(features[image], y, x)
                    out[:, ph, pw] = total / sampling_ratio**2
            results.append(out)
    return torch.stack(results)


def test_roi_align_matches_loop_reference_and_backpropagates():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    boxes = [
        torch.tensor([[0.0, 0.0, 28.0, 24.0], [-6.0, -5.0, 10.0, 9.0], [3.3, 7.1, 19.9, 12.4]]),
        torch.tensor([[20.0, 15.0, 34.0, 30.0], [10.0, 2.0, 11.0, 3.0]]),  # past the border; tiny
    ]
    spatial_scale, output_size = 0.25, (3, 4)
    expected = _roi_align_reference(features, boxes, output_size, spatial_scale, 2)
    actual = roi_align(features, boxes, output_size, spatial_scale, sampling_ratio=2, aligned=True)
    assert actual.shape == (5, 3, 3, 4)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)

    features = features.float().requires_grad_()
    roi_align(features, boxes, output_size, spatial_scale).pow(2).sum().backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def test_rpn_proposals_bounded_inside_image_and_sorted():
    torch.manual_seed(0)
    rpn = RegionProposalNetwork(8, stride=8, anchor_sizes=(8.0, 16.0), post_nms_top_n=5, nms_thresh=0.5)
    with torch.no_grad():
        rpn.head.bbox_pred.weight.normal_(std=0.5)  # large deltas, so some boxes need clipping
    features = torch.randn(2, 8, 4, 5)
    height, width = 32, 40
    proposals, scores, losses = rpn(features, (height, width))
    assert losses == {} and len(proposals) == len(scores) == 2
    for boxes, image_scores in zip(proposals, scores):
        assert 0 < boxes.shape[0] <= 5 and image_scores.shape == (boxes.shape[0],)
        assert not boxes.requires_grad and not image_scores.requires_grad
        assert bool((boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= width).all())
        assert bool((boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= height).all())
        assert bool((boxes[:, 2:] > boxes[:, :2]).all())
        assert bool((image_scores[:-1] >= image_scores[1:]).all())
        assert float(box_iou(boxes, boxes).fill_diagonal_(0).max()) <= 0.5


def test_nms_max_output_is_the_prefix_of_a_full_run():
    from boneage.models.detection import nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 20], dim=1)
    scores = torch.rand(200, generator=g)
    full = nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5, max_output=7), full[:7])
    assert torch.equal(nms(boxes, scores, 0.5, max_output=10_000), full)
