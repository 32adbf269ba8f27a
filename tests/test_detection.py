"""Detectors (issue 16): presets equal to the reference, the analytic cost equal to fvcore,
anchors, decoding and NMS, detector scaling, the format and its schema, and bad input.

Reference numbers and their sources:

* parameter counts of ``efficientdet-d0`` .. ``d7``: effdet 0.4.1's ``tf_efficientdet_d0`` ..
  ``d7`` (``create_model(name, pretrained=False, pretrained_backbone=False)``, ``sum(p.numel())``
  over the model and over ``backbone``, ``fpn``, ``class_net``, ``box_net``), measured with
  ``HF_HUB_OFFLINE=1 /work/venvs/effdet/bin/python scripts/effdet_reference.py`` (torch 2.14.1,
  torchvision 0.29.1, timm 1.0.31; effdet needs torchvision, so it lives in its own venv and is
  not a test dependency).  The paper (EfficientDet Table 2) rounds them: 3.9M, 6.6M, 8.1M, 12.0M,
  20.7M, 33.7M, 51.9M, 51.9M.
* FLOPs: fvcore 0.1.5 on our own module (the convention of :mod:`nas.cost`).  The paper's
  2.54B, 6.10B, 11.0B, 24.9B, 55.2B, 130B, 226B, 325B are beside them, within 5 %.
* 49,104 anchors for D0 at 512 px: (64² + 32² + 16² + 8² + 4²) x 9, as in the issue.
"""
from __future__ import annotations

import functools
import io
import json
import math
import random
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jsonschema
import pytest
import torch

from nas.cost import count_params, fvcore_flops
from nas.detection import DetectorSpec, build_detector, detector_cost, detector_names, load_detector
from nas.detection.postprocess import anchor_boxes, batched_nms, decode_boxes, detect, flatten_outputs, nms
from nas.detection.spec import bifpn_nodes, Levels
from nas.schema import detector_schema
from nas.spec import SpecError
from nas.testing import random_spec

# effdet 0.4.1 (see the module docstring): total, backbone, fpn, class_net, box_net
EFFDET = {
    "efficientdet-d0": (3_880_067, 3_595_388, 196_281, 69_354, 19_044),
    "efficientdet-d1": (6_625_898, 6_101_024, 390_972, 101_394, 32_508),
    "efficientdet-d2": (8_097_039, 7_202_562, 708_159, 136_890, 49_428),
    "efficientdet-d3": (12_032_296, 10_103_336, 1_559_474, 247_050, 122_436),
    "efficientdet-d4": (20_723_675, 16_742_216, 3_349_829, 402_890, 228_740),
    "efficientdet-d5": (33_653_315, 27_288_112, 5_405_893, 591_498, 367_812),
    "efficientdet-d6": (51_871_782, 39_403_992, 10_583_808, 1_090_986, 792_996),
    "efficientdet-d7": (51_871_782, 39_403_992, 10_583_808, 1_090_986, 792_996),
}
PAPER = {  # EfficientDet Table 2: params (M), FLOPs (B)
    "efficientdet-d0": (3.9, 2.54), "efficientdet-d1": (6.6, 6.10), "efficientdet-d2": (8.1, 11.0),
    "efficientdet-d3": (12.0, 24.9), "efficientdet-d4": (20.7, 55.2), "efficientdet-d5": (33.7, 130),
    "efficientdet-d6": (51.9, 226), "efficientdet-d7": (51.9, 325),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


@functools.lru_cache(maxsize=None)
def built(name: str):
    """Each preset is built once per process (tests only read the module)."""
    return build_detector(load_detector(name)).eval()


def test_presets_are_the_published_family():
    assert detector_names() == tuple(sorted(EFFDET))


@pytest.mark.parametrize("name", sorted(EFFDET))
def test_preset_params_equal_effdet(name):
    c = detector_cost(load_detector(name))
    assert (c.params, *[p.params for p in c.parts[:3]], c.parts[3].params) == EFFDET[name]
    params_m, flops_b = PAPER[name]
    assert round(c.params / 1e6, 1) == params_m
    assert abs(c.flops / 1e9 / flops_b - 1) < 0.05


@pytest.mark.parametrize("name,resolution", [("efficientdet-d0", 128), ("efficientdet-d1", 128),
                                             ("efficientdet-d2", 128), ("efficientdet-d3", 128)])
def test_module_params_and_fvcore_flops_equal_the_cost_model(name, resolution):
    # The formula is resolution-generic (every term is per pixel of a level's map), so the
    # larger presets are traced at 128 px to keep fvcore cheap on 2 cores.
    spec = load_detector(name)
    model = built(name)
    assert count_params(model) == EFFDET[name][0]
    assert fvcore_flops(model, resolution) == detector_cost(spec, resolution).flops


def test_reference_structure():
    spec = load_detector("efficientdet-d3")
    m = built("efficientdet-d3")
    n_levels, reps = spec.levels.count, spec.head.repeats
    for net in (m.class_net, m.box_net):
        assert len(net.convs) == reps  # shared across levels
        assert [len(b) for b in net.bns] == [n_levels] * reps  # a BN per level
    assert m.class_net.predict[1].out_channels == 9 * 90 and m.box_net.predict[1].out_channels == 9 * 4
    assert len(m.bifpn) == 6 and all(len(cell.nodes) == 8 for cell in m.bifpn)
    assert all(n.weights is None for n in build_detector(load_detector("efficientdet-d6")).bifpn[0].nodes)


def test_bifpn_topology_is_the_reference():
    # effdet's bifpn_config for P3-P7: (level, input offsets)
    assert [tuple(n) for n in bifpn_nodes(Levels(3, 7))] == [
        (6, (3, 4)), (5, (2, 5)), (4, (1, 6)), (3, (0, 7)),
        (4, (1, 7, 8)), (5, (2, 6, 9)), (6, (3, 5, 10)), (7, (4, 11))]


def random_detector(rng: random.Random) -> DetectorSpec:
    while True:
        backbone = random_spec(rng)
        stride = backbone.stem.stride * math.prod(s.stride for s in backbone.stages)
        top = stride.bit_length() - 1
        if top >= 2:
            break
    lo = rng.randint(2, top)
    hi = rng.randint(max(top, lo + 1), max(top, lo + 1) + 1)
    d = {"format": "nas-detector", "version": 1, "name": "random", "backbone": backbone.to_dict(),
         "resolution": (1 << hi) * rng.choice([1, 2]) if hi < 7 else 1 << hi, "num_classes": rng.randint(1, 5),
         "levels": {"min": lo, "max": hi},
         "bifpn": {"width": rng.choice([8, 12, 16, 24]), "repeats": rng.randint(1, 3),
                   "fusion": rng.choice(["fast_normalized", "sum"])},
         "head": {"repeats": rng.randint(1, 3)},
         "anchors": {"num_scales": rng.randint(1, 3),
                     "aspect_ratios": [[rng.choice([0.5, 1.0, 2.0]), rng.choice([0.5, 1.0])]
                                       for _ in range(rng.randint(1, 3))],
                     "anchor_scale": rng.choice([2.0, 4.0])},
         "activation": rng.choice(["swish", "relu", "relu6"]), "bn": {"eps": 1e-3, "momentum": 0.01}}
    return DetectorSpec.from_dict(d)


@pytest.mark.parametrize("seed", range(6))
def test_random_detectors_cost_equals_fvcore(seed):
    spec = random_detector(random.Random(seed))
    model = build_detector(spec)
    c = detector_cost(spec)
    assert count_params(model) == c.params
    assert fvcore_flops(model, spec.resolution, spec.backbone.in_channels) == c.flops
    model.eval()
    with torch.no_grad():
        cls, box = model(torch.randn(3, spec.backbone.in_channels, spec.resolution, spec.resolution))
    a = spec.anchors.per_location
    assert [tuple(t.shape) for t in cls] == [(3, a * spec.num_classes, spec.resolution >> l, spec.resolution >> l)
                                             for l in range(spec.levels.min, spec.levels.max + 1)]
    assert sum(t.shape[2] * t.shape[3] * a for t in box) == spec.num_anchors() == anchor_boxes(spec).shape[0]


def test_every_parameter_gets_a_gradient():
    spec = random_detector(random.Random(3))
    model = build_detector(spec).train()
    cls, box = model(torch.randn(2, spec.backbone.in_channels, spec.resolution, spec.resolution))
    (sum(c.sum() for c in cls) + sum(b.square().sum() for b in box)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


# ------------------------------------------------------------------ anchors, decoding, NMS


def test_d0_has_49104_anchors():
    spec = load_detector("efficientdet-d0")
    assert spec.num_anchors() == 49_104 == anchor_boxes(spec).shape[0]


def test_anchors_follow_the_reference_formula():
    spec = load_detector("efficientdet-d0")
    a = anchor_boxes(spec)
    # level 3, cell (0, 0), octave 0, ratio (1, 1): centre 4, side 4 * 8 = 32
    assert a[0].tolist() == [-12.0, -12.0, 20.0, 20.0]
    # same cell, ratio (1.4, 0.7): half sides x 32 * 1.4 / 2 = 22.4, y 32 * 0.7 / 2 = 11.2
    assert torch.allclose(a[1], torch.tensor([4 - 11.2, 4 - 22.4, 4 + 11.2, 4 + 22.4]))
    # octave 1 (2**(1/3)), ratio (1, 1): index 3
    h = 16 * 2 ** (1 / 3)
    assert torch.allclose(a[3], torch.tensor([4 - h, 4 - h, 4 + h, 4 + h]))
    # next cell along x: centre x = 12
    assert a[9].tolist() == [-12.0, -4.0, 20.0, 28.0]
    # first anchor of P7: stride 128, centre 64, side 512
    first_p7 = 9 * (64 ** 2 + 32 ** 2 + 16 ** 2 + 8 ** 2)
    assert a[first_p7].tolist() == [64 - 256.0, 64 - 256.0, 64 + 256.0, 64 + 256.0]


def test_decode_boxes():
    anchors = torch.tensor([[0.0, 10.0, 20.0, 50.0]])  # y1 x1 y2 x2: centre (30, 10), w 40, h 20
    assert decode_boxes(torch.zeros(1, 4), anchors).tolist() == [[10.0, 0.0, 50.0, 20.0]]
    codes = torch.tensor([[0.5, -0.25, math.log(2.0), 0.0]])  # centre (20, 20), h x 2 = 40, w 40
    assert torch.allclose(decode_boxes(codes, anchors), torch.tensor([[0.0, 0.0, 40.0, 40.0]]))


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_force_nms(boxes, scores, classes, thr):
    """Greedy NMS in plain Python, one class at a time, then merged by score."""
    kept = []
    for c in set(classes):
        idx = sorted((i for i in range(len(boxes)) if classes[i] == c), key=lambda i: -scores[i])
        mine = []
        for i in idx:
            if all(_iou(boxes[i], boxes[j]) <= thr for j in mine):
                mine.append(i)
        kept += mine
    return sorted(kept, key=lambda i: -scores[i])


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 300
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    boxes = torch.cat([xy, xy + wh], 1).double()
    scores = torch.randperm(n, generator=g).double() / n  # distinct: the order is unambiguous
    classes = torch.randint(0, 4, (n,), generator=g)
    for thr in (0.7, 0.5, 0.3):
        ref = _brute_force_nms(boxes.tolist(), scores.tolist(), classes.tolist(), thr)
        assert batched_nms(boxes, scores, classes, thr).tolist() == ref
        assert nms(boxes, scores, thr).tolist() == _brute_force_nms(boxes.tolist(), scores.tolist(), [0] * n, thr)
    assert len(ref) < n - 10  # at 0.3 many boxes were suppressed: the comparison exercised suppression


def test_detect_end_to_end():
    spec = load_detector("efficientdet-d0")
    model = built("efficientdet-d0")
    with torch.no_grad():
        cls, box = model(torch.randn(2, 3, 128, 128))
    cls_flat, box_flat = flatten_outputs(cls, box, spec.num_classes)
    assert cls_flat.shape == (2, spec.num_anchors(128), 90) and box_flat.shape == (2, spec.num_anchors(128), 4)
    out = detect(spec, cls, box, score_threshold=0.0, max_detections=50)
    assert len(out) == 2
    for r in out:
        assert r["boxes"].shape[0] == r["scores"].shape[0] == r["classes"].shape[0] == 50
        assert (r["scores"][:-1] >= r["scores"][1:]).all()


# ------------------------------------------------------------------ format, schema, bad input


def test_round_trip_is_byte_identical(tmp_path):
    for name in detector_names():
        spec = load_detector(name)
        text = spec.to_json()
        assert DetectorSpec.from_json(text).to_json() == text
    spec.save(tmp_path / "d.json")
    assert load_detector(str(tmp_path / "d.json")) == spec


def test_presets_regenerate():
    from scaling.detection import all_detector_presets

    for name, spec in all_detector_presets().items():
        assert spec.to_json() == load_detector(name).to_json(), name


@pytest.fixture(scope="module")
def validator():
    s = detector_schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


def _d0():
    return load_detector("efficientdet-d0").to_dict()


def _set(d, path, value):
    *keys, last = path
    for k in keys:
        d = d[k]
    d[last] = value


# (JSON path, value, path named in the error, also refused by the schema)
BAD = [
    (("bifpn", "width"), 0, "bifpn.width", True),
    (("bifpn", "width"), 4096, "bifpn.width", True),
    (("bifpn", "repeats"), 0, "bifpn.repeats", True),
    (("bifpn", "repeats"), 17, "bifpn.repeats", True),
    (("bifpn", "fusion"), "mean", "bifpn.fusion", True),
    (("head", "repeats"), 0, "head.repeats", True),
    (("anchors", "aspect_ratios"), [[1.0, 1.0], [1.4, 0.7, 2.0]], "anchors.aspect_ratios[1]", True),
    (("anchors", "aspect_ratios"), [[1.0]], "anchors.aspect_ratios[0]", True),
    (("anchors", "aspect_ratios"), [], "anchors.aspect_ratios", True),
    (("anchors", "num_scales"), 0, "anchors.num_scales", True),
    (("anchors", "anchor_scale"), 0, "anchors.anchor_scale", True),
    (("levels", "max"), 3, "levels.max", False),
    (("levels", "min"), 1, "levels.min", True),
    (("resolution",), 500, "resolution", False),
    (("num_classes",), 0, "num_classes", True),
    (("backbone", "stages", 0, "kernel"), 4, "backbone.stages[0].kernel", True),
    (("bifpn", "extra"), 1, "bifpn.extra", True),
    (("format",), "nas-spec", "format", True),
]


@pytest.mark.parametrize("path,value,where,schema_too", BAD, ids=[b[2] + "=" + json.dumps(b[1]) for b in BAD])
def test_bad_fields_name_their_path(path, value, where, schema_too, validator):
    d = _d0()
    _set(d, path, value)
    with pytest.raises(SpecError) as e:
        DetectorSpec.from_dict(d)
    assert e.value.path == where
    if schema_too:
        assert list(validator.iter_errors(d)), "the schema accepted what the validator refuses"


def test_backbone_too_shallow_or_too_deep():
    d = _d0()
    for s in d["backbone"]["stages"][3:]:
        s["stride"] = 1  # total stride 8: level 3 only
    d["levels"] = {"min": 4, "max": 7}
    with pytest.raises(SpecError, match="too shallow") as e:
        DetectorSpec.from_dict(d)
    assert e.value.path == "backbone"
    d = _d0()
    d["levels"] = {"min": 3, "max": 4}
    d["resolution"] = 512
    with pytest.raises(SpecError, match="beyond levels.max") as e:
        DetectorSpec.from_dict(d)
    assert e.value.path == "backbone"


def test_schema_accepts_presets_and_random_detectors(validator):
    for name in detector_names():
        assert not list(validator.iter_errors(load_detector(name).to_dict()))
    for seed in range(20):
        assert not list(validator.iter_errors(random_detector(random.Random(seed)).to_dict()))


# ------------------------------------------------------------------ scaling


def test_scaling_rules():
    from scaling.detection import scale_detector

    d0 = load_detector("efficientdet-d0")
    assert scale_detector(d0, 0) == d0
    widths = []
    for phi in range(8):
        s = scale_detector(d0, phi, 1.2, 1.1, 1.15)
        widths.append(s.bifpn.width)
        assert (s.bifpn.repeats, s.head.repeats, s.resolution) == (3 + phi, 3 + phi // 3, 512 + 128 * phi)
    # 64 * 1.35**phi = 64, 86.4, 116.6, 157.5, 212.6, 287.0, 387.5, 523.1 -> nearest multiple of 8
    assert widths == [64, 88, 120, 160, 216, 288, 384, 520]


def test_published_is_the_table():
    from scaling.detection import published_detector

    table = {0: (512, 64, 3, 3), 1: (640, 88, 4, 3), 2: (768, 112, 5, 3), 3: (896, 160, 6, 4),
             4: (1024, 224, 7, 4), 5: (1280, 288, 7, 4), 6: (1280, 384, 8, 5), 7: (1536, 384, 8, 5)}
    for i, row in table.items():
        s = published_detector(f"efficientdet-d{i}")
        assert (s.resolution, s.bifpn.width, s.bifpn.repeats, s.head.repeats) == row
        assert s.bifpn.fusion == ("sum" if i >= 6 else "fast_normalized")
        assert s.backbone == load_detector(f"efficientdet-d{min(i, 6)}").backbone


def test_searched_backbone_as_detector():
    from scaling.detection import detector_from_backbone

    det = detector_from_backbone(load_detector("efficientdet-d0").backbone)
    assert det == load_detector("efficientdet-d0")


# ------------------------------------------------------------------ CLI


def _run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_cli_show_json_gives_reference_params():
    from nas.cli.show import main

    for name, ref in EFFDET.items():
        rc, out, err = _run(main, [name, "--json"])
        assert rc == 0 and not err
        assert json.loads(out)["params"] == ref[0]
    rc, out, _ = _run(main, ["efficientdet-d0"])
    assert rc == 0 and "3,880,067" in out and "49,104" in out and "bifpn" in out


def test_cli_scale_and_show_file(tmp_path):
    from nas.cli.scale import main as scale
    from nas.cli.show import main as show

    rc, _, err = _run(scale, ["--base", "efficientdet-d0", "--phi", "3", "--alpha", "1.2", "--beta", "1.1",
                              "--gamma", "1.15", "--output", str(tmp_path / "d3-like.json")])
    assert rc == 0, err
    s = load_detector(str(tmp_path / "d3-like.json"))
    assert (s.resolution, s.bifpn.width, s.bifpn.repeats, s.head.repeats) == (896, 160, 6, 4)
    rc, out, _ = _run(show, [str(tmp_path / "d3-like.json"), "--json"])
    assert rc == 0 and json.loads(out)["params"] == detector_cost(s).params
    rc, _, err = _run(scale, ["--base", "efficientnet-b0", "--detector", "--phi", "0", "--output",
                              str(tmp_path / "det.json")])
    assert rc == 0, err
    assert load_detector(str(tmp_path / "det.json")) == load_detector("efficientdet-d0")
    rc, out, _ = _run(scale, ["--published", "efficientdet-d7"])
    assert rc == 0 and DetectorSpec.from_json(out) == load_detector("efficientdet-d7")


def test_cli_export_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from nas.cli.export import main

    out = tmp_path / "d0.onnx"
    rc, text, err = _run(main, ["efficientdet-d0", "--format", "onnx", "--output", str(out), "--resolution", "128",
                                "--json"])
    assert rc == 0, err
    report = json.loads(text)
    assert report["max_abs_output"] > 0.1  # a real comparison
    assert report["max_abs_diff"] <= report["atol"] + report["rtol"] * report["max_abs_output"]
    assert report["max_rel_diff"] <= report["rtol"] and (report["atol"], report["rtol"]) == (1e-4, 1e-3)
    assert report["outputs"] == [f"class_p{l}" for l in range(3, 8)] + [f"box_p{l}" for l in range(3, 8)]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": torch.randn(2, 3, 128, 128).numpy()})
    assert outs[0].shape == (2, 810, 16, 16) and outs[9].shape == (2, 36, 1, 1)


@pytest.mark.parametrize("cmd", [
    ["show", "efficientdet-d0", "--resolution", "500"],
    ["show", "efficientdet-d9"],
    ["scale", "--base", "efficientdet-d0", "--phi", "1.5", "--output", "OUT"],
    ["scale", "--base", "efficientdet-d0", "--detector", "--phi", "1", "--output", "OUT"],
    ["scale", "--base", "BADDET", "--phi", "1", "--output", "OUT"],
    ["scale", "--base", "efficientdet-d0", "--family", "0-2", "--output", "OUT"],
    ["export", "efficientdet-d0", "--format", "py", "--output", "OUT"],
    ["export", "efficientdet-d0", "--format", "onnx", "--resolution", "100", "--output", "OUT"],
    ["export", "BADDET", "--format", "onnx", "--output", "OUT"],
])
def test_cli_bad_input_is_one_line_exit_2_nothing_written(cmd, tmp_path):
    from nas.cli import export, scale, show

    bad = _d0()
    bad["anchors"]["aspect_ratios"][1] = [1.4, 0.7, 1.0]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    main = {"show": show.main, "scale": scale.main, "export": export.main}[cmd[0]]
    argv = [str(tmp_path / "OUT") if a == "OUT" else str(tmp_path / "bad.json") if a == "BADDET" else a
            for a in cmd[1:]]
    rc, out, err = _run(main, argv)
    assert rc == 2 and not out
    assert len(err.strip().splitlines()) == 1
    if "BADDET" in cmd:
        assert "anchors.aspect_ratios[1]" in err
    assert not (tmp_path / "OUT").exists()
