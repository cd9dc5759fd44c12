"""Hostile configs (hypothesis): wrong types, out-of-range values, unknown keys, nested junk.

Whatever goes in, the config layer answers with a :class:`ConfigError` (or accepts it), never
another exception; and ``ijepa train`` answers with one line on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import TINY, one_thread_fixture  # noqa: F401

from ijepa.cli import main as cli_main
from ijepa.config import Config, ConfigError, apply_overrides, config_from_dict, validate

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
FIELDS = {
    name: list(typing.get_type_hints(type(getattr(Config(), name))))
    for name in (f.name for f in dataclasses.fields(Config))
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**400), max_value=2**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["stop", "skip", "retry", "vit_tiny", "l2", "$replace_this", "1e-3", ""]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
section_names = st.one_of(st.sampled_from(sorted(SECTIONS)), st.text(max_size=8))


@st.composite
def config_dicts(draw):
    raw = {}
    for sec in draw(st.lists(section_names, max_size=4, unique=True)):
        if sec in FIELDS and draw(st.booleans()):
            keys = st.one_of(st.sampled_from(FIELDS[sec]), st.text(max_size=8))
            raw[sec] = draw(st.dictionaries(keys, junk, max_size=5))
        else:
            raw[sec] = draw(junk)
    return raw


def _check(cfg: Config) -> None:
    try:
        validate(cfg)
    except ConfigError:
        return


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_dicts())
def test_config_dicts_give_config_errors_only(raw):
    try:
        cfg = config_from_dict(raw, source="fuzz.yaml")
    except ConfigError as err:
        assert str(err).startswith("fuzz.yaml")
        return
    _check(cfg)


@st.composite
def overrides(draw):
    sec = draw(section_names)
    key = draw(st.sampled_from(FIELDS[sec])) if sec in FIELDS else draw(st.text(max_size=8))
    value = draw(
        st.one_of(
            st.text(max_size=16),
            st.sampled_from(
                ["[1, 2]", "{a: 1}", "[[", "null", ".nan", ".inf", "-1", "1e400", "true", "- x"]
            ),
        )
    )
    sep = draw(st.sampled_from(["=", "=", ":", ""]))
    return f"{sec}.{key}{sep}{value}"


@settings(max_examples=300, deadline=None)
@given(st.lists(overrides(), min_size=1, max_size=4))
def test_overrides_give_config_errors_only(items):
    try:
        cfg = apply_overrides(Config(), items)
    except ConfigError as err:
        assert "override" in str(err)
        return
    _check(cfg)


@pytest.mark.parametrize(
    "item",
    [
        "data.crop_scale=[.nan, 1]",
        "optimization.ema=[.nan, 1]",
        "optimization.lr=.nan",
        "optimization.lr=.inf",
        "optimization.warmup=.nan",
        "optimization.ipe_scale=.nan",
        "meta.drop_path_rate=.nan",
    ],
)
def test_non_finite_numbers_are_refused(item):
    """NaN slips through range checks written as ``x < 0``; every float must be finite."""
    with pytest.raises(ConfigError, match=item.split("=")[0].split(".")[1]):
        validate(apply_overrides(Config(), [item]))


@pytest.mark.parametrize("how", ["dict", "override"])
def test_huge_integers_for_floats_are_refused(how):
    """float(10**400) overflows: a ConfigError naming the key, not an OverflowError."""
    with pytest.raises(ConfigError, match=r"optimization\.lr"):
        if how == "dict":
            config_from_dict({"optimization": {"lr": 10**400}})
        else:
            apply_overrides(Config(), ["optimization.lr=" + "9" * 400])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(overrides(), min_size=1, max_size=3))
def test_cli_train_with_hostile_overrides_exits_2_without_traceback(items, tmp_path, capsys):
    """Every run is pointed at a data folder that does not exist, so none starts training."""
    items = [i for i in items if not i.startswith(("logging.folder", "-"))]
    argv = ["train", *items, "data.dataset=imagefolder:/nonexistent/ijepa-fuzz"]
    argv += ["data.root_path=", "data.image_folder=", f"logging.folder={tmp_path / 'run'}"]
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    # one error line (a YAML parse error appends PyYAML's own multi-line pointer to it)
    assert captured.err.startswith(("ijepa train: error:", "usage:")), captured.err


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ("meta.parallel=xyz", "meta.parallel"),
        ("mask.patch_size=0", "mask.patch_size"),
        ("data.max_images=0", "0 images"),
        ("data.batch_size=100000", "too few"),
        # mask.geometry=auto (the CPU presets) lowers min_keep on small grids, and says so
        ("mask.geometry=fixed mask.min_keep=1000", "min_keep"),
        ("meta.enc_num_heads=0", "num_heads"),
        ("meta.pred_depth=0", "depth"),
        ("data.dataset=embedded:-5", "embedded:-5"),
        ("meta.device=tpu", "meta.device"),
        ("logging.checkpoint_every=-1", "checkpoint_every"),
        ("logging.keep_every=-5", "keep_every"),
        ("meta.seed=" + "9" * 30, "meta.seed"),
    ],
)
def test_cli_refuses_well_typed_invalid_values(item, named, tmp_path, capsys):
    """Values of the right type that no run can use: exit 2 and one line naming the setting."""
    argv = ["train", *TINY, f"logging.folder={tmp_path / 'run'}", "optimization.max_steps=1"]
    argv += item.split(" ")
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and named in err and len(err.strip().splitlines()) == 1
