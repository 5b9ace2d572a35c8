"""Pure tensor operators of the MFCLIP vision encoder: 8-bit luma, GLCM homogeneity, grid patches,
richest-patch selection and the SRM noise residual. Batched, any device; imports nothing else of ours."""

from mfclip.ops.glcm import LUMA_WEIGHTS, glcm_homogeneity, to_gray_uint8
from mfclip.ops.patches import PATCH_MODES, patch_homogeneity, richest_patch, split_patches
from mfclip.ops.srm import INPUT_SCALES, SRM_CLIP, SRM_KERNELS, srm_conv_weight, srm_residual

__all__ = [
    "INPUT_SCALES",
    "LUMA_WEIGHTS",
    "PATCH_MODES",
    "SRM_CLIP",
    "SRM_KERNELS",
    "glcm_homogeneity",
    "patch_homogeneity",
    "richest_patch",
    "split_patches",
    "srm_conv_weight",
    "srm_residual",
    "to_gray_uint8",
]
