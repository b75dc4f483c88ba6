"""Bucket assignment: known values, properties, and the options sd-scripts rejects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kohya_multiplier.dataset.buckets import BucketLayout, assign_buckets, make_bucket_resolutions
from kohya_multiplier.errors import UserError

# make_bucket_resolutions((512, 512)) with sd-scripts' defaults (checked against sd-scripts).
SD15_CANDIDATES = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576), (512, 512),
    (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
]


def layout(**kw) -> BucketLayout:
    options = dict(resolution=(512, 512), enable_bucket=True, min_bucket_reso=256, max_bucket_reso=1024, bucket_reso_steps=64,
                   bucket_no_upscale=False)
    options.update(kw)
    return BucketLayout.create(**options)


def test_candidates_for_sd15_defaults():
    assert make_bucket_resolutions((512, 512)) == SD15_CANDIDATES
    assert list(layout().candidates) == SD15_CANDIDATES


def test_known_assignments():  # expected values computed by sd-scripts' own BucketManager
    got = assign_buckets(
        [512, 100, 640, 1920, 768, 576], [512, 3000, 480, 1080, 320, 448],
        resolution=(512, 512), enable_bucket=True,
    )
    # exact candidate 768x320 and 576x448 keep their size (exact-size shortcut)
    assert got == [(512, 512), (256, 1024), (576, 448), (640, 384), (768, 320), (576, 448)]  # from sd-scripts


def test_bucketing_off_gives_the_resolution():
    got = assign_buckets([10, 4000, 512], [3000, 20, 512], resolution=(512, 768), enable_bucket=False,
                         min_bucket_reso=9999, bucket_reso_steps=0)  # ignored when bucketing is off
    assert got == [(512, 768)] * 3


def test_no_upscale_known_values():
    lay = layout(bucket_no_upscale=True)
    assert lay.candidates == ()
    assert lay.select(300, 200) == (256, 192)  # small image: cut down to the steps, never enlarged
    assert lay.select(512, 512) == (512, 512)
    assert lay.select(2000, 1000) == (640, 320)  # larger: scaled to the area, then cut down (sd-scripts' value)


def test_min_max_are_adjusted_to_steps_like_sd_scripts():
    lay = layout(min_bucket_reso=300, max_bucket_reso=1000)
    assert (lay.min_bucket_reso, lay.max_bucket_reso) == (256, 1024)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(min_bucket_reso=640), "datasets[0]: min_bucket_reso: 640 is larger than the shorter side of resolution 512x512; "
                                    "sd-scripts requires min_bucket_reso <= min(resolution)"),
        (dict(resolution=(1024, 1024), max_bucket_reso=768),
         "datasets[0]: max_bucket_reso: 768 is smaller than the longer side of resolution 1024x1024; "
         "sd-scripts requires max_bucket_reso >= max(resolution)"),
        (dict(bucket_reso_steps=0), "datasets[0]: bucket_reso_steps: must be a positive integer, not 0"),
        (dict(min_bucket_reso=32), "datasets[0]: min_bucket_reso: 32 rounds down to 0 with bucket_reso_steps 64; use at least 64"),
        (dict(resolution=(0, 512)), "datasets[0]: resolution: must be positive, not 0x512"),
    ],
)
def test_rejected_options(options, message):
    with pytest.raises(UserError) as info:
        layout(where="datasets[0]", **options)
    assert str(info.value) == message


def test_degenerate_no_upscale_bucket_is_an_error():
    lay = layout(bucket_no_upscale=True)
    with pytest.raises(UserError) as info:
        lay.assign([50, 512], [700, 512], paths=["/d/thin.png", "/d/ok.png"])
    assert str(info.value) == (
        "bucket_no_upscale: /d/thin.png: image of 50x700 pixels gets a zero-size bucket with bucket_no_upscale "
        "and bucket_reso_steps 64 (sd-scripts cannot train it); remove or enlarge it"
    )


def test_assign_ids_sorted_like_sd_scripts():
    ids, resos = layout().assign_ids([1920, 512, 100], [1080, 512, 3000])
    assert resos == [(256, 1024), (512, 512), (640, 384)]
    assert ids.tolist() == [2, 1, 0]


sizes = st.lists(st.tuples(st.integers(1, 6000), st.integers(1, 6000)), min_size=1, max_size=60)
options = st.fixed_dictionaries(
    dict(
        resolution=st.sampled_from([(512, 512), (768, 768), (1024, 1024), (512, 768), (832, 1216)]),
        bucket_reso_steps=st.sampled_from([8, 16, 32, 64]),
        min_bucket_reso=st.sampled_from([64, 128, 256]),
        max_bucket_reso=st.sampled_from([1280, 1536, 2048]),
    )
)


@settings(max_examples=150, deadline=None)
@given(options, sizes)
def test_vectorised_equals_reference_and_properties(opts, image_sizes):
    lay = layout(**opts)
    w = [s[0] for s in image_sizes]
    h = [s[1] for s in image_sizes]
    got = lay.assign(w, h)
    area = opts["resolution"][0] * opts["resolution"][1]
    for (iw, ih), (bw, bh) in zip(image_sizes, got.tolist()):
        assert (bw, bh) == lay.select(iw, ih)
        assert (bw, bh) in lay.candidates
        if (iw, ih) in lay.candidates:
            assert (bw, bh) == (iw, ih)
        # no other candidate has a strictly closer aspect ratio
        best = min(abs(cw / ch - iw / ih) for cw, ch in lay.candidates)
        assert abs(bw / bh - iw / ih) == best or (iw, ih) in lay.candidates
    for cw, ch in lay.candidates:
        assert cw % opts["bucket_reso_steps"] == 0 and ch % opts["bucket_reso_steps"] == 0
        assert cw * ch <= area


@settings(max_examples=150, deadline=None)
@given(options, sizes)
def test_no_upscale_properties(opts, image_sizes):
    lay = layout(bucket_no_upscale=True, **opts)
    steps = opts["bucket_reso_steps"]
    area = opts["resolution"][0] * opts["resolution"][1]
    for iw, ih in image_sizes:
        try:
            bw, bh = lay.select(iw, ih)
        except UserError:
            assert iw < steps or ih < steps or iw * ih > area  # only thin or tiny images
            with pytest.raises(UserError):
                lay.assign([iw], [ih])
            continue
        assert lay.assign([iw], [ih]).tolist() == [[bw, bh]]
        assert bw % steps == 0 and bh % steps == 0 and bw > 0 and bh > 0
        assert bw * bh <= area + 2 * steps * max(bw, bh)  # scaled to the area (rounding may add a sliver)
        if iw * ih <= area:
            assert bw <= iw and bh <= ih  # never upscaled


def test_many_images_fast():
    rng = np.random.default_rng(0)
    w = rng.integers(200, 4000, 200_000)
    h = rng.integers(200, 4000, 200_000)
    got = layout().assign(w, h)
    assert got.shape == (200_000, 2)
    sample = rng.integers(0, 200_000, 200)
    lay = layout()
    assert all(tuple(got[i]) == lay.select(int(w[i]), int(h[i])) for i in sample)
