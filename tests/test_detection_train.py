"""Detector training (issue 16, part 5): the pasted-item data, anchor assignment and loss, COCO mAP
(pycocotools), and training with checkpoints and resume."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nas.data import load_dataset
from nas.detection import load_detector
from nas.detection.data import INK, make_canvases, make_detection_data
from nas.detection.loss import assign, detection_loss, encode_boxes, focal_loss
from nas.detection.postprocess import anchor_boxes, decode_boxes

SMALL = Path(__file__).resolve().parent.parent / "results" / "detection" / "d0-small.json"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def items():
    return load_dataset("sample")


def test_canvases_are_deterministic_and_boxes_tight(items):
    a = make_canvases(items.train_x, items.train_y, 20, 64, seed=3)
    b = make_canvases(items.train_x, items.train_y, 20, 64, seed=3)
    assert torch.equal(a.images, b.images) and all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert not torch.equal(a.images, make_canvases(items.train_x, items.train_y, 20, 64, seed=4).images)
    for img, boxes in zip(a.images, a.boxes):
        ink = img[0] > INK
        inside = torch.zeros_like(ink)
        for x1, y1, x2, y2 in boxes.long().tolist():
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            inside[y1:y2, x1:x2] = True
            # tight: each edge row/column of the box holds ink (a later item may only add ink)
            assert ink[y1, x1:x2].any() and ink[y2 - 1, x1:x2].any()
            assert ink[y1:y2, x1].any() and ink[y1:y2, x2 - 1].any()
        assert not (ink & ~inside).any()  # no ink outside every box
    n_objects = [len(c) for c in a.classes]
    assert min(n_objects) >= 1 and max(n_objects) <= 3


def test_train_and_val_canvases_use_separate_splits(items):
    d = make_detection_data(items, 64, 8, 8, seed=0)
    assert d.num_classes == 10 and len(d.train) == 8 and len(d.val) == 8
    assert "8 train / 8 val" in d.summary()


def test_encode_is_the_inverse_of_decode():
    spec = load_detector(str(SMALL))
    anchors = anchor_boxes(spec)[:50]
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 4 + torch.rand(50, 2, generator=g) * 20], 1)
    assert torch.allclose(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes, atol=1e-4)


def test_assignment_rules():
    # two anchors (y1, x1, y2, x2) and one box (x1, y1, x2, y2) overlapping the first exactly
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 20.0, 10.0, 30.0], [0.0, 3.0, 10.0, 13.0]])
    cls, codes = assign(anchors, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([7]))
    # IoU 1 -> positive; 0 -> background; 7/13 = 0.54 -> positive
    assert cls.tolist() == [7, -1, 7]
    assert torch.allclose(codes[0], torch.zeros(4))
    # a box whose best IoU is below 0.4 still gets its best anchor (forced match)
    cls, _ = assign(anchors, torch.tensor([[0.0, 0.0, 3.0, 3.0]]), torch.tensor([2]))
    assert cls.tolist() == [2, -1, -1]
    # box x 0..9: IoU 0.9 with anchor 0 (positive), 60/130 = 0.46 with anchor 2 (ignored: in [0.4, 0.5))
    cls, _ = assign(anchors, torch.tensor([[0.0, 0.0, 9.0, 10.0]]), torch.tensor([5]))
    assert cls.tolist() == [5, -1, -2]


def test_focal_loss_matches_its_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = 0.0
    for z, t in zip(logits.flatten().tolist(), targets.flatten().tolist()):
        p = 1 / (1 + math.exp(-z))
        p_t = p if t else 1 - p
        a_t = 0.25 if t else 0.75
        expected += -a_t * (1 - p_t) ** 1.5 * math.log(p_t)
    assert abs(focal_loss(logits, targets).item() - expected) < 1e-6


def test_detection_loss_ignores_and_normalizes():
    cls_flat = torch.zeros(1, 3, 2)
    box_flat = torch.zeros(1, 3, 4)
    targets = torch.tensor([[1, -1, -2]])
    codes = torch.zeros(1, 3, 4)
    total, lc, lb = detection_loss(cls_flat, box_flat, targets, codes)
    # anchors 0 and 1 count (2 classes each), anchor 2 is ignored; p = 0.5 everywhere; 1 positive
    p_term = lambda a: a * 0.5 ** 1.5 * math.log(2)  # noqa: E731
    assert abs(lc.item() - (p_term(0.25) + 3 * p_term(0.75))) < 1e-6
    assert lb.item() == 0 and total.item() == lc.item()


def test_coco_map_perfect_and_shifted(items):
    pytest.importorskip("pycocotools")
    from nas.detection.evaluate import coco_map

    d = make_detection_data(items, 64, 1, 20, seed=0)
    perfect = [{"boxes": b, "scores": torch.ones(len(c)), "classes": c} for b, c in zip(d.val.boxes, d.val.classes)]
    assert coco_map(perfect, d.val.boxes, d.val.classes, 64) == {"map": 1.0, "map50": 1.0}
    half = [{"boxes": b + torch.tensor([0.0, 0.0, 0.0, 0.0]) if i % 2 else b + 100, "scores": torch.ones(len(c)),
             "classes": c} for i, (b, c) in enumerate(zip(d.val.boxes, d.val.classes))]
    # odd images exact, even images' boxes moved off every object: about half the objects found
    found = sum(len(c) for c in d.val.classes[1::2]) / sum(len(c) for c in d.val.classes)
    m = coco_map(half, d.val.boxes, d.val.classes, 64)
    assert 0.2 < m["map50"] <= found + 1e-9 and abs(m["map"] - m["map50"]) < 1e-9  # exact boxes: AP equal at every IoU
    away = [{"boxes": b + 100, "scores": torch.ones(len(c)), "classes": c} for b, c in zip(d.val.boxes, d.val.classes)]
    assert coco_map(away, d.val.boxes, d.val.classes, 64) == {"map": 0.0, "map50": 0.0}


def test_training_resumes_where_it_stopped(items, tmp_path, monkeypatch):
    pytest.importorskip("pycocotools")
    import nas.detection.train as tr

    spec = load_detector(str(SMALL))
    data = make_detection_data(items, 64, 32, 8, seed=0)
    full = tr.train_detector(spec, data, epochs=2, batch_size=8, output=tmp_path / "full", progress=False)
    assert len(full["history"]) == 2 and full["steps"] == 8
    for name in ("checkpoint.pt", "metrics.json", "weights.pt", "spec.json"):
        assert (tmp_path / "full" / name).exists()

    calls = {"n": 0}
    real = tr._evaluate

    def interrupt_in_epoch_2(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "_evaluate", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        tr.train_detector(spec, data, epochs=2, batch_size=8, output=tmp_path / "cut", progress=False)
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(tr, "_evaluate", real)
    logs = []
    resumed = tr.train_detector(spec, data, epochs=2, batch_size=8, output=tmp_path / "cut", progress=False,
                                log=logs.append)
    assert logs and "resuming after epoch 1" in logs[0]
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"])  # the same run, cut in two
    with pytest.raises(tr.CheckpointMismatch):
        tr.train_detector(spec, data, epochs=2, batch_size=8, lr=1e-3, output=tmp_path / "cut", progress=False)


def test_nas_train_dispatches_detectors(tmp_path):
    from nas.cli.train import main

    rc = main([str(SMALL), "--resolution", "48", "--output", str(tmp_path / "o")])
    assert rc == 2 and not (tmp_path / "o").exists()


def test_nas_train_detector_json_is_one_object(tmp_path, capsys):
    pytest.importorskip("pycocotools")
    from nas.cli.train import main

    rc = main([str(SMALL), "--train-images", "16", "--val-images", "4", "--batch-size", "8", "--json",
               "--output", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 0
    r = json.loads(out)
    assert r["steps"] == 2 and 0.0 <= r["map"] <= 1.0 and len(r["history"]) == 1
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["map"] == r["map"]
