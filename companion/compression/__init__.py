"""Semantic image compression: variable-quality JPEG driven by a region-of-interest map, and its quality metrics.

- :mod:`~companion.compression.msroi`: the network that maps where the objects are (MS-ROI and CAM heads on
  one trunk), the fusion of class maps into one map, object recall and pixel AUC;
- :mod:`~companion.compression.jpeg`: IJG quantisation tables at continuous quality, the variable-quality JPEG
  of Algorithm 1 with one-sided size matching, the authors' released encoder, control maps, the baseline's
  rate-distortion curve;
- :mod:`~companion.compression.quality`: luma (BT.601) and RGB PSNR and SSIM inside and outside a region,
  PSNR-HVS(-M), VIFp and MS-SSIM, and one row of the paper's Table 2.1.
"""
from .jpeg import (
    ANNEX_K_CHROMA, ANNEX_K_LUMA, BLOCK, RULES, SemanticJPEG, at_equal_bytes, block_levels, decode, encode,
    ijg_scale, ijg_tables, level_mosaic, median_mosaic, quality_ladder, rd_curve, released_encoder, semantic_jpeg,
    shuffled_levels, uniform_levels,
)
from .msroi import SceneNet, class_maps, evidence, fuse, object_recall, pixel_auc, roi_map, unit_range
from .quality import (
    BT601_LUMA, MS_SSIM_MIN_SIDE, QUALITY_KEYS, luma, masked_psnr, masked_ssim, ms_ssim, psnr_hvs, quality_row, vifp,
)

__all__ = [
    "ANNEX_K_CHROMA", "ANNEX_K_LUMA", "BLOCK", "BT601_LUMA", "MS_SSIM_MIN_SIDE", "QUALITY_KEYS", "RULES",
    "SceneNet", "SemanticJPEG", "at_equal_bytes", "class_maps", "evidence", "fuse", "unit_range", "object_recall", "pixel_auc", "roi_map", "block_levels", "decode", "encode", "ijg_scale", "ijg_tables",
    "level_mosaic", "luma", "masked_psnr", "masked_ssim", "median_mosaic", "ms_ssim", "psnr_hvs",
    "quality_ladder", "quality_row", "rd_curve", "released_encoder", "semantic_jpeg", "shuffled_levels",
    "uniform_levels", "vifp",
]
