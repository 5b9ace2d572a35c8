"""Make one benchmark image from ``(seed, plan entry)``: scene, camera or generator, final JPEG stage."""

from __future__ import annotations

import numpy as np

from mfclip.data.synth.camera import capture, finish
from mfclip.data.synth.face import (
    FaceParams,
    Identity,
    region_mask,
    render_face,
    sample_identity,
    sample_pose,
)
from mfclip.data.synth.generators import (
    EDIT_REGIONS,
    GENERATORS_BY_NAME,
    blend_region,
    edit_attribute,
    render_fn,
    swap_identity,
)
from mfclip.data.synth.plan import NAMESPACE_SWAP_SOURCE, REAL, PlanEntry, split_code

_STREAM_IDENTITY = 11
_STREAM_IMAGE = 13


def identity_for(seed: int, split: str, namespace: int, identity: int) -> Identity:
    """The synthetic person ``identity`` of ``namespace`` in ``split`` (split-disjoint by construction)."""
    rng = np.random.default_rng(
        np.random.SeedSequence([seed, _STREAM_IDENTITY, split_code(split), namespace, identity])
    )
    return sample_identity(rng)


def synthesize_array(entry: PlanEntry, seed: int, image_size: int) -> tuple[np.ndarray, np.random.Generator]:
    """The image of ``entry`` before the final stage (float32 RGB in [0, 1]) and its random stream."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_IMAGE, entry.index]))
    person = identity_for(seed, entry.split, entry.namespace, entry.identity)
    params = FaceParams(person, sample_pose(rng), texture_seed=int(rng.integers(2**31)))
    if entry.generator == REAL:
        return capture(render_face(params, image_size), rng), rng
    info = GENERATORS_BY_NAME[entry.generator]
    if info.forgery_type == "entire_synthesis":
        return info.decoder.decode(render_fn(params), image_size, rng), rng

    photo = capture(render_face(params, image_size), rng)
    feather = float(rng.uniform(0.03, 0.09))
    if info.forgery_type == "face_swap":
        source = identity_for(seed, entry.split, NAMESPACE_SWAP_SOURCE, entry.source_identity)
        forged = swap_identity(params, FaceParams(source, params.pose, params.texture_seed))
        region = "inner_face"
    else:
        region = EDIT_REGIONS[int(rng.integers(len(EDIT_REGIONS)))]
        if region == "hair" and person.hair_style == "shaved":
            region = "mouth"
        forged = edit_attribute(params, region, rng)
    generated = info.decoder.decode(render_fn(forged), image_size, rng)
    mask = region_mask(params, image_size, region, feather)
    if region == "mouth":  # an opened mouth may reach past the original outline
        mask = np.maximum(mask, region_mask(forged, image_size, region, feather))
    return blend_region(photo, generated, mask, float(rng.uniform(0.5, 1.0))), rng


def synthesize_jpeg(entry: PlanEntry, seed: int, image_size: int) -> bytes:
    """The final JPEG bytes of ``entry`` (identical for identical arguments)."""
    image, rng = synthesize_array(entry, seed, image_size)
    data, _quality = finish(image, rng)
    return data
