"""The spec format: one test per validation rule (exact JSON path and reason), JSON
round trips, equality and fingerprint, the JSON Schema, and the random generator.

Every rule is exercised on a copy of the efficientnet-b0 document with one field
broken, so each case fails for exactly the reason it names.
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from nas import atomic
from nas import spec as spec_mod
from nas.presets import load_preset, load_spec, preset_names
from nas.schema import schema
from nas.spec import ACTIVATIONS, OPS, SKIPS, Spec, SpecError, iter_layers, min_resolution, total_stride
from nas.testing import random_spec, random_spec_dict, specs
from reference import B0, MOBILENET_V2

N_RANDOM = 200


def b0_doc() -> dict:
    return load_preset("efficientnet-b0").to_dict()


def at(path: tuple, value):
    """A mutation: set ``doc[path...] = value``."""

    def mutate(d):
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return mutate


def drop(path: tuple):
    """A mutation: delete ``doc[path...]``."""

    def mutate(d):
        for key in path[:-1]:
            d = d[key]
        del d[path[-1]]

    return mutate


# (rule, mutation, expected str(SpecError)); the path is the part before ": ".
INVALID = [
    ("format", at(("format",), "nas-spec-x"), 'format: must be "nas-spec", got "nas-spec-x"'),
    ("version-unsupported", at(("version",), 2), "version: unsupported version 2 (this toolkit reads version 1)"),
    ("unknown-field-top", at(("kernel_size",), 3), "kernel_size: unknown field"),
    ("unknown-field-stage", at(("stages", 2, "dilation"), 2), "stages[2].dilation: unknown field"),
    ("missing-field-top", drop(("head",)), "head: missing required field"),
    ("missing-field-stage", drop(("stages", 1, "kernel")), "stages[1].kernel: missing required field"),
    ("missing-field-bn", drop(("bn", "momentum")), "bn.momentum: missing required field"),
    ("int-given-string", at(("stages", 3, "kernel"), "3"), 'stages[3].kernel: must be an integer, got "3"'),
    ("int-given-bool", at(("stages", 3, "repeats"), True), "stages[3].repeats: must be an integer, got true"),
    ("int-given-fraction", at(("stages", 3, "out_channels"), 80.5),
     "stages[3].out_channels: must be an integer, got 80.5"),
    ("number-given-string", at(("dropout",), "0.2"), 'dropout: must be a number, got "0.2"'),
    ("number-given-bool", at(("stages", 0, "se_ratio"), False), "stages[0].se_ratio: must be a number, got false"),
    ("string-given-number", at(("name",), 7), "name: must be a string, got number"),
    ("object-given-null", at(("stem",), None), "stem: must be an object, got null"),
    ("stage-not-object", at(("stages", 2), [3]), "stages[2]: must be an object, got array"),
    ("stages-not-array", at(("stages",), {}), "stages: must be an array, got object"),
    ("kernel-even", at(("stages", 3, "kernel"), 4), "stages[3].kernel: must be odd, got 4"),
    ("kernel-below-1", at(("stages", 3, "kernel"), 0), "stages[3].kernel: must be in [1, 15], got 0"),
    ("kernel-too-big", at(("stages", 3, "kernel"), 17), "stages[3].kernel: must be in [1, 15], got 17"),
    ("stem-kernel-even", at(("stem", "kernel"), 2), "stem.kernel: must be odd, got 2"),
    ("stride-3", at(("stages", 3, "stride"), 3), "stages[3].stride: must be in [1, 2], got 3"),
    ("stem-stride-0", at(("stem", "stride"), 0), "stem.stride: must be in [1, 2], got 0"),
    ("channels-0", at(("stages", 3, "out_channels"), 0), "stages[3].out_channels: must be in [1, 65536], got 0"),
    ("stem-channels-0", at(("stem", "out_channels"), 0), "stem.out_channels: must be in [1, 65536], got 0"),
    ("head-channels-0", at(("head", "out_channels"), 0), "head.out_channels: must be in [1, 65536], got 0"),
    ("in-channels-0", at(("in_channels",), 0), "in_channels: must be in [1, 65536], got 0"),
    ("channels-too-many", at(("stages", 0, "out_channels"), 65537),
     "stages[0].out_channels: must be in [1, 65536], got 65537"),
    ("repeats-0", at(("stages", 3, "repeats"), 0), "stages[3].repeats: must be in [1, 64], got 0"),
    ("repeats-too-many", at(("stages", 3, "repeats"), 65), "stages[3].repeats: must be in [1, 64], got 65"),
    ("resolution-0", at(("resolution",), 0), "resolution: must be in [1, 4096], got 0"),
    ("resolution-too-big", at(("resolution",), 4097), "resolution: must be in [1, 4096], got 4097"),
    ("num-classes-0", at(("num_classes",), 0), "num_classes: must be in [1, 1000000], got 0"),
    ("se-ratio-1", at(("stages", 3, "se_ratio"), 1.0), "stages[3].se_ratio: must be in [0.0, 1.0), got 1.0"),
    ("se-ratio-negative", at(("stages", 3, "se_ratio"), -0.25),
     "stages[3].se_ratio: must be in [0.0, 1.0), got -0.25"),
    ("expand-below-1", at(("stages", 1, "expand_ratio"), 0.5), "stages[1].expand_ratio: must be in [1, 16], got 0.5"),
    ("expand-too-big", at(("stages", 1, "expand_ratio"), 17), "stages[1].expand_ratio: must be in [1, 16], got 17"),
    ("unknown-op", at(("stages", 3, "op"), "fused_mbconv"),
     'stages[3].op: must be one of mbconv, dwconv, conv, identity; got "fused_mbconv"'),
    ("unknown-skip", at(("stages", 3, "skip"), "residual"),
     'stages[3].skip: must be one of identity, none, pool; got "residual"'),
    ("unknown-activation", at(("activation",), "gelu"), 'activation: must be one of swish, relu, relu6; got "gelu"'),
    ("unknown-stage-activation", at(("stages", 2, "activation"), "Swish"),
     'stages[2].activation: must be one of swish, relu, relu6; got "Swish"'),
    ("unknown-se-activation", at(("stages", 0, "se_activation"), "sigmoid"),
     'stages[0].se_activation: must be one of swish, relu, relu6; got "sigmoid"'),
    ("dwconv-with-expand", at(("stages", 0, "expand_ratio"), 6), "stages[0].expand_ratio: must be 1 for op dwconv, got 6"),
    ("stages-empty", at(("stages",), []), "stages: must have 1 to 32 stages, got 0"),
    ("stages-too-many", lambda d: d.__setitem__("stages", d["stages"][:1] * 33), "stages: must have 1 to 32 stages, got 33"),
    ("dropout-1", at(("dropout",), 1.0), "dropout: must be in [0.0, 1.0), got 1.0"),
    ("dropout-infinite", at(("dropout",), float("inf")), "dropout: must be finite, got inf"),
    ("drop-connect-1", at(("drop_connect_rate",), 1), "drop_connect_rate: must be in [0.0, 1.0), got 1"),
    ("bn-eps-0", at(("bn", "eps"), 0), "bn.eps: must be in (0.0, 1.0], got 0"),
    ("bn-momentum-above-1", at(("bn", "momentum"), 1.5), "bn.momentum: must be in [0.0, 1.0], got 1.5"),
    ("provenance-not-object", at(("provenance",), ["b0"]), "provenance: must be an object, got array"),
    ("provenance-nan", at(("provenance",), {"score": float("nan")}),
     "provenance: must contain only JSON values (no NaN or Infinity)"),
]

# Rules the JSON Schema cannot see (it validates parsed JSON; NaN is not JSON).
NOT_FOR_SCHEMA = {"dropout-infinite", "provenance-nan"}


@pytest.mark.parametrize("rule, mutate, message", INVALID, ids=[c[0] for c in INVALID])
def test_validation_rule_names_path_and_reason(rule, mutate, message):
    doc = b0_doc()
    mutate(doc)
    with pytest.raises(SpecError) as info:
        Spec.from_dict(doc)
    assert str(info.value) == message
    assert info.value.path == message.split(": ", 1)[0]
    assert info.value.reason == message.split(": ", 1)[1]
    assert isinstance(info.value, ValueError)


def test_top_level_not_an_object():
    with pytest.raises(SpecError) as info:
        Spec.from_json("[1, 2]")
    assert str(info.value) == "must be an object, got array" and info.value.path == ""


def test_integral_float_is_an_integer():
    doc = b0_doc()
    doc["stages"][3]["out_channels"] = 80.0  # what some JSON writers emit for 80
    doc["stages"][3]["expand_ratio"] = 6.0
    s = Spec.from_dict(doc)
    assert s == load_preset("efficientnet-b0")
    assert type(s.stages[3].out_channels) is int and type(s.stages[3].expand_ratio) is int


def test_nan_in_json_is_rejected():
    text = load_preset("efficientnet-b0").to_json().replace('"dropout": 0.2', '"dropout": NaN')
    assert "NaN" in text
    with pytest.raises(SpecError) as info:
        Spec.from_json(text)
    assert str(info.value) == "not valid JSON: NaN is not allowed"


def test_infinity_in_json_is_rejected():
    text = load_preset("efficientnet-b0").to_json().replace('"dropout": 0.2', '"dropout": -Infinity')
    with pytest.raises(SpecError, match=r"^not valid JSON: -Infinity is not allowed$"):
        Spec.from_json(text)


def test_malformed_json_gives_line_and_column():
    text = load_preset("efficientnet-b0").to_json().replace('"version": 1,', '"version": 1', 1)
    # the missing comma is noticed where "name" starts: line 4, column 3
    assert text.splitlines()[3].startswith('  "name"')
    with pytest.raises(SpecError) as info:
        Spec.from_json(text)
    assert str(info.value) == "not valid JSON: Expecting ',' delimiter at line 4 column 3"


def test_deeply_nested_json_is_a_spec_error():
    with pytest.raises(SpecError, match=r"^not valid JSON: nested too deeply$"):
        Spec.from_json("[" * 100_000)


def test_huge_number_in_provenance_is_rejected():
    # 1e400 parses as float('inf') without a parse_constant call; to_json would write Infinity
    text = load_preset("efficientnet-b0").replace(provenance={"x": 1}).to_json().replace('"x": 1', '"x": 1e400')
    with pytest.raises(SpecError, match=r"^provenance: must contain only JSON values \(no NaN or Infinity\)$"):
        Spec.from_json(text)


def test_malformed_file_names_file_line_and_column(tmp_path):
    p = tmp_path / "arch.json"
    p.write_text('{\n  "format": "nas-spec",\n  "version": }\n', encoding="utf-8")
    with pytest.raises(SpecError) as info:
        Spec.load(p)
    assert str(info.value) == f"{p}: not valid JSON: Expecting value at line 3 column 14"


def test_invalid_file_names_json_path(tmp_path):
    doc = b0_doc()
    doc["stages"][3]["kernel"] = 4
    p = tmp_path / "arch.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(SpecError, match=r"^stages\[3\]\.kernel: must be odd, got 4$"):
        Spec.load(p)


def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        Spec.load(tmp_path / "missing.json")
    with pytest.raises(SpecError, match="no such file"):
        load_spec(str(tmp_path / "missing.json"))


def test_replace_revalidates():
    b0 = load_preset("efficientnet-b0")
    with pytest.raises(SpecError, match=r"^resolution: must be in \[1, 4096\], got 0$"):
        b0.replace(resolution=0)
    stages = list(b0.stages)
    stages[2] = dict(stages[2].to_dict(), kernel=6)
    with pytest.raises(SpecError, match=r"^stages\[2\]\.kernel: must be odd, got 6$"):
        b0.replace(stages=stages)
    small = b0.replace(resolution=32, num_classes=10, name="b0-small")
    assert (small.resolution, small.num_classes, small.name) == (32, 10, "b0-small")
    assert small.stages == b0.stages


# ---------------------------------------------------------------- round trips


def _round_trip(s: Spec) -> None:
    text = s.to_json()
    back = Spec.from_json(text)
    assert back == s
    assert back.to_dict() == s.to_dict()  # includes name and provenance
    assert back.name == s.name and back.provenance == s.provenance
    assert back.to_json() == text  # byte-stable
    assert Spec.from_json(s.to_json(indent=None)).to_dict() == s.to_dict()
    assert back.fingerprint() == s.fingerprint()


@pytest.mark.parametrize("name", preset_names())
def test_preset_round_trip(name):
    _round_trip(load_preset(name))


def test_random_round_trip():
    for seed in range(N_RANDOM):
        _round_trip(random_spec(random.Random(seed)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_hypothesis_round_trip(s):
    _round_trip(s)


def test_save_and_load(tmp_path):
    s = load_preset("mnasnet-a1").replace(provenance={"run": "x", "score": [1, 2.5, None]})
    p = tmp_path / "a1.json"
    s.save(p)
    assert p.read_text(encoding="utf-8") == s.to_json()
    back = Spec.load(p)
    assert back.to_dict() == s.to_dict()
    assert [q.name for q in tmp_path.iterdir()] == ["a1.json"]  # no temporary file left behind


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "keep.json"
    p.write_text("old", encoding="utf-8")

    def failing_replace(src, dst):  # e.g. the disk fills up at the last step
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError):
        load_preset("efficientnet-b0").save(p)
    monkeypatch.undo()
    assert p.read_text(encoding="utf-8") == "old"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["keep.json"]  # the temporary file is gone
    with pytest.raises(OSError):
        atomic.atomic_write_text(tmp_path / "no-such-dir" / "x.json", "new")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["keep.json"]


def test_load_spec_sources(tmp_path):
    b0 = load_preset("efficientnet-b0")
    p = tmp_path / "b0.json"
    b0.save(p)
    for source in (b0, b0.to_dict(), "efficientnet-b0", b0.to_json(), str(p), p):
        got = load_spec(source)
        assert got == b0 and got.name == "efficientnet-b0"
    with pytest.raises(SpecError, match="cannot load a spec from int"):
        load_spec(3)


# ---------------------------------------------------------------- equality, fingerprint


def test_equality_and_fingerprint_ignore_name_and_provenance():
    b0 = load_preset("efficientnet-b0")
    other = b0.replace(name="renamed", provenance={"search": {"trial": 7}})
    assert other == b0 and hash(other) == hash(b0)
    assert other.fingerprint() == b0.fingerprint()
    assert other.to_dict() != b0.to_dict()


def test_fingerprint_changes_with_architecture():
    b0 = load_preset("efficientnet-b0")
    seen = {b0.fingerprint()}
    for change in ({"resolution": 240}, {"num_classes": 10}, {"dropout": 0.3}, {"in_channels": 1},
                   {"bn": {"eps": 1e-5, "momentum": 0.01}}):
        s = b0.replace(**change)
        assert s != b0
        seen.add(s.fingerprint())
    assert len(seen) == 6


def test_numeric_spelling_does_not_change_fingerprint():
    a, b = b0_doc(), b0_doc()
    a["stages"][0]["se_ratio"], b["stages"][0]["se_ratio"] = 0, 0.0
    a["stages"][1]["expand_ratio"], b["stages"][1]["expand_ratio"] = 6, 6.0
    a["dropout"], b["dropout"] = 0, 0.0
    sa, sb = Spec.from_dict(a), Spec.from_dict(b)
    assert sa == sb and sa.fingerprint() == sb.fingerprint() and sa.to_json() == sb.to_json()


def test_spec_is_immutable():
    b0 = load_preset("efficientnet-b0")
    with pytest.raises(AttributeError):
        b0.resolution = 10  # type: ignore[misc]
    with pytest.raises(AttributeError):
        b0.stages[0].kernel = 5  # type: ignore[misc]
    doc = {"a": [1]}
    s = b0.replace(provenance=doc)
    doc["a"].append(2)
    assert s.provenance == {"a": [1]}  # provenance is copied, not shared


def test_iter_layers_b0():
    b0 = load_preset("efficientnet-b0")
    layers = list(iter_layers(b0))
    assert len(layers) == b0.n_layers == 16
    assert [p.global_index for p in layers] == list(range(16))
    # the first layer of a stage has its stride and the previous width; the others stride 1
    assert [(p.stage_index, p.in_channels, p.stride) for p in layers if p.layer_index == 0] == [
        (0, 32, 1), (1, 16, 2), (2, 24, 2), (3, 40, 2), (4, 80, 1), (5, 112, 2), (6, 192, 1)]
    assert all(p.stride == 1 and p.in_channels == p.stage.out_channels for p in layers if p.layer_index > 0)
    # stochastic depth ramps linearly over the global index (torchvision's rule)
    assert [p.drop_path for p in layers] == [0.2 * g / 16 for g in range(16)]


def test_short_form():
    b0 = load_preset("efficientnet-b0")
    assert b0.stages[1].short() == "mbconv_k3_s2_e6_se0.25_identity_c24_r2"
    assert b0.stages[0].short() == "dwconv_k3_s1_se0.25_identity_c16_r1"
    assert len(b0.short().split()) == 7


# ---------------------------------------------------------------- JSON Schema


@pytest.fixture(scope="module")
def validator():
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


@pytest.mark.parametrize("name", preset_names())
def test_schema_accepts_preset(validator, name):
    validator.validate(load_preset(name).to_dict())


def test_schema_accepts_random_specs(validator):
    for seed in range(N_RANDOM):
        validator.validate(random_spec(random.Random(seed)).to_dict())


@pytest.mark.parametrize("rule, mutate, message", [c for c in INVALID if c[0] not in NOT_FOR_SCHEMA],
                         ids=[c[0] for c in INVALID if c[0] not in NOT_FOR_SCHEMA])
def test_schema_rejects_invalid(validator, rule, mutate, message):
    doc = b0_doc()
    mutate(doc)
    errors = list(validator.iter_errors(doc))
    assert errors, f"schema accepted a document the validator rejects ({message})"


def test_schema_accepts_integral_float_like_the_validator(validator):
    doc = b0_doc()
    doc["stages"][3]["out_channels"] = 80.0
    doc["stages"][0]["expand_ratio"] = 1.0  # dwconv: 1.0 is 1
    validator.validate(doc)
    Spec.from_dict(doc)


def test_schema_bounds_match_the_validator():
    """The schema documents the same limits and vocabularies as nas.spec (one source of truth to keep in step)."""
    s = schema()
    d = s["$defs"]
    stage = d["stage"]["properties"]
    assert tuple(stage["op"]["enum"]) == OPS
    assert tuple(stage["skip"]["enum"]) == SKIPS
    assert tuple(d["activation"]["enum"]) == ACTIVATIONS
    assert d["channels"]["maximum"] == spec_mod.MAX_CHANNELS
    assert d["kernel"]["maximum"] == spec_mod.MAX_KERNEL
    assert stage["repeats"]["maximum"] == spec_mod.MAX_REPEATS
    assert stage["expand_ratio"]["maximum"] == spec_mod.MAX_EXPAND
    assert s["properties"]["stages"]["maxItems"] == spec_mod.MAX_STAGES
    assert s["properties"]["resolution"]["maximum"] == spec_mod.MAX_RESOLUTION
    assert s["properties"]["num_classes"]["maximum"] == spec_mod.MAX_CLASSES
    assert set(s["required"]) == set(Spec.TOP_FIELDS)
    assert set(s["properties"]) == set(Spec.TOP_FIELDS) | {"provenance"}
    assert set(d["stage"]["required"]) == set(spec_mod.Stage.FIELDS)
    assert s["properties"]["format"]["const"] == spec_mod.FORMAT
    assert s["properties"]["version"]["const"] == spec_mod.VERSION


def test_schema_file_is_packaged():
    """The packaged file is the schema less what the op registry fills in (the op enum, its rules)."""
    import nas.schema

    path = Path(nas.schema.__file__).with_name("spec.schema.json")
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    full = schema()
    stage = full["$defs"]["stage"]
    stage.pop("allOf")
    stage["properties"]["op"] = on_disk["$defs"]["stage"]["properties"]["op"]
    assert on_disk == full
    assert "enum" not in on_disk["$defs"]["stage"]["properties"]["op"]  # the registry is its one source


def test_schema_op_rules_come_from_the_registry(validator):
    from nas.ops import OPS as OP_REGISTRY

    s = schema()
    rules = s["$defs"]["stage"]["allOf"]
    assert {r["if"]["properties"]["op"]["const"]: {k: v["const"] for k, v in r["then"]["properties"].items()}
            for r in rules} == {n: dict(op.fixed) for n, op in OP_REGISTRY.items() if op.fixed}
    for name, op in OP_REGISTRY.items():
        assert f"{name}: {op.description}" in s["$defs"]["stage"]["properties"]["op"]["description"]
        for key, value in op.fixed.items():  # each pinned field: another value is refused by both
            doc = b0_doc()
            doc["stages"][3].update(op.fixed, op=name)
            validator.validate(doc)
            Spec.from_dict(doc)
            doc["stages"][3][key] = {"kernel": 3, "expand_ratio": 6, "se_ratio": 0.25, "skip": "identity"}[key]
            assert list(validator.iter_errors(doc)), (name, key)
            with pytest.raises(SpecError, match=rf"^stages\[3\]\.{key}: must be .* for op {name}, got "):
                Spec.from_dict(doc)


# ---------------------------------------------------------------- the generator


def test_generator_is_deterministic_and_valid():
    for seed in range(20):
        a = random_spec(random.Random(seed))
        assert a == random_spec(random.Random(seed))
        assert random_spec_dict(random.Random(seed)) == random_spec_dict(random.Random(seed))
    assert len({random_spec(random.Random(s)).fingerprint() for s in range(50)}) == 50


def test_generator_covers_the_space():
    seen: dict[str, set] = {k: set() for k in ("op", "kernel", "stride", "expand", "skip", "act", "se_act", "in_ch",
                                                "stem_stride", "stem_kernel", "res", "special")}
    se_values = []
    for seed in range(N_RANDOM):
        s = random_spec(random.Random(seed))
        assert s.resolution <= 64
        seen["in_ch"].add(s.in_channels)
        seen["stem_stride"].add(s.stem.stride)
        seen["stem_kernel"].add(s.stem.kernel)
        seen["res"].add(s.resolution)
        seen["act"].add(s.activation)
        for p in iter_layers(s):
            st = p.stage
            seen["op"].add(st.op)
            seen["kernel"].add(st.kernel)
            seen["stride"].add(st.stride)
            seen["expand"].add(st.expand_ratio)
            seen["skip"].add(st.skip)
            seen["act"].add(st.activation)
            seen["se_act"].add(st.se_activation)
            se_values.append(st.se_ratio)
            if st.skip == "pool" and p.stride == 2 and p.in_channels != st.out_channels:
                seen["special"].add("pool-downsample-and-widen")
            if st.skip == "pool" and p.stride == 2 and p.in_channels == st.out_channels:
                seen["special"].add("pool-downsample-only")
            if st.skip == "pool" and p.stride == 1 and p.in_channels != st.out_channels:
                seen["special"].add("pool-widen-only")
            if st.skip == "identity" and p.stride == 1 and p.in_channels == st.out_channels:
                seen["special"].add("identity-adds")
            if st.op == "mbconv" and st.expand_ratio == 1:
                seen["special"].add("mbconv-no-expand")
            if st.op == "conv" and st.expand_ratio != 1:
                seen["special"].add("fused")
    assert seen["op"] == set(OPS)
    assert seen["skip"] == set(SKIPS)
    assert seen["act"] == seen["se_act"] == set(ACTIVATIONS)
    assert seen["kernel"] == seen["stem_kernel"] == {1, 3, 5, 7}
    assert seen["stride"] == seen["stem_stride"] == {1, 2}
    assert {1, 1.5, 2.5, 6} <= seen["expand"]
    assert seen["in_ch"] == {1, 3, 4}
    assert {1, 2, 3, 17, 33} <= seen["res"]
    assert min(se_values) == 0 and max(se_values) == 0.5 and all(0 <= v <= 0.5 for v in se_values)
    assert seen["special"] == {"pool-downsample-and-widen", "pool-downsample-only", "pool-widen-only",
                               "identity-adds", "mbconv-no-expand", "fused"}


def test_generator_large_mode_respects_max_resolution():
    for seed in range(20):
        s = random_spec(random.Random(seed), max_resolution=300, small=False)
        assert 1 <= s.resolution <= 300
    assert all(random_spec(random.Random(s), max_resolution=1).resolution == 1 for s in range(5))


def test_generated_docs_survive_corruption_checks():
    """random_spec_dict is the raw document: breaking one field makes it invalid with the right path."""
    doc = random_spec_dict(random.Random(3))
    doc["stages"][-1]["kernel"] = 2
    last = len(doc["stages"]) - 1
    with pytest.raises(SpecError, match=rf"^stages\[{last}\]\.kernel: must be odd, got 2$"):
        Spec.from_dict(doc)


def test_spec_module_does_not_mutate_input():
    doc = b0_doc()
    before = copy.deepcopy(doc)
    Spec.from_dict(doc)
    assert doc == before


# ---------------------------------------------------------------- schema == validator, fuzzed

_FUZZ_VALUES = [0, 1, 2, 3, 4, -1, 1.0, 2.0, 1.5, 0.5, 0.99, 1e-9, 15, 16, 17, 64, 65, 4096, 4097, 65536, 65537,
                1_000_000, 1_000_001, True, False, None, "", "x", "swish", "relu6", "mbconv", "dwconv", "conv", "pool",
                "none", "identity", "nas-spec", [], {}, [1], {"a": 1}]


def _paths(d, prefix=()):
    items = d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else ()
    for k, x in items:
        yield prefix + (k,)
        yield from _paths(x, prefix + (k,))


def test_schema_agrees_with_validator_on_mutated_documents(validator):
    """Random valid documents with one or two fields replaced by edge values (or deleted)."""
    rng = random.Random(0)
    verdicts = {True: 0, False: 0}
    disagreements = []
    for i in range(2000):
        doc = random_spec_dict(random.Random(i % 300))
        paths = list(_paths(doc))
        for _ in range(rng.choice([1, 1, 2])):
            path = rng.choice(paths)
            parent = doc
            try:
                for k in path[:-1]:
                    parent = parent[k]
                if rng.random() < 0.1 and isinstance(parent, dict):
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = copy.deepcopy(rng.choice(_FUZZ_VALUES))
            except (KeyError, IndexError, TypeError):
                pass  # an earlier mutation removed or replaced the container
        try:
            Spec.from_dict(doc)
            ours = True
        except SpecError:
            ours = False
        verdicts[ours] += 1
        if validator.is_valid(doc) != ours:
            disagreements.append((i, ours, doc))
    assert not disagreements[:3]
    assert min(verdicts.values()) > 100  # both verdicts are well represented (about 200 valid, 1800 not)


def test_duplicate_json_keys_are_refused():
    from nas.presets import load_preset
    text = load_preset("efficientnet-b0").to_json().replace('"resolution": 224,', '"resolution": 224, "resolution": 256,')
    with pytest.raises(SpecError, match="duplicate key 'resolution'"):
        Spec.from_json(text)


def test_empty_spec_source_is_refused():
    from nas.presets import load_spec
    with pytest.raises(SpecError, match="empty spec"):
        load_spec("   ")


def test_cost_accepts_what_load_spec_accepts():
    import nas
    assert nas.cost("efficientnet-b0").flops == B0.flops


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    from nas.presets import load_preset
    p = tmp_path / "b0.json"
    load_preset("efficientnet-b0").save(p)
    mask = os.umask(0o022)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_nas_cost_stays_the_function_after_the_module_is_imported():
    import importlib
    import nas
    importlib.import_module("nas.cost")
    import nas.cost  # noqa: F401  (binds nothing new: the package keeps the function)
    assert callable(nas.cost) and nas.cost("mobilenet-v2").params == MOBILENET_V2.params


def test_total_stride_and_min_resolution():
    b0 = load_preset("efficientnet-b0")
    # Tan & Le 2019, Table 1: 224 px in, 7x7 into the head
    assert total_stride(b0) == 224 // 7 == 32
    assert min_resolution(b0) == 8
    d = b0.to_dict()
    d["stem"]["stride"] = 1
    for stage in d["stages"]:
        stage["stride"] = 1
    assert total_stride(Spec.from_dict(d)) == 1
    assert min_resolution(Spec.from_dict(d)) == 2  # the floor
