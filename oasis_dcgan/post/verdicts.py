"""Every verdict the report prints, and the margins they are read with, fixed before any data.

A verdict compares an interval with a margin around what unseen brains score: inside the margin
the two are equivalent, wholly beyond it they differ, and an interval that straddles it is
"undetermined", never rounded to either side. docs/metrics.md states each margin.
"""
from __future__ import annotations

# copying.verdict
COPIES, NEAR_COPIES, NO_SIGN = "copies", "near copies", "no sign of copying"
UNDETERMINED = "undetermined"

# closeness to the training split against unseen brains' (median nearest-neighbour SSIM, samples minus held-out)
CLOSENESS_MARGIN = 0.02
CLOSER, LEVEL, FURTHER = "closer to training than unseen brains", "level with unseen brains", \
    "further from training than unseen brains"

# diversity: the samples' MS-SSIM ratio over the held-out set's own ratio (both against training slices)
DIVERSITY_MARGIN = 0.10
LESS_VARIED, AS_VARIED, MORE_VARIED = "less varied", "as varied", "more varied"

# the distribution metric: a classifier's balanced accuracy telling samples from unseen brains
DISTRIBUTION_MARGIN = 0.10
INDISTINGUISHABLE, DISTINGUISHABLE = "indistinguishable from unseen brains", "distinguishable from unseen brains"

def against(ci: list[float], centre: float, margin: float, below: str, level: str, above: str) -> str:
    """`level` when the interval lies inside centre +- margin, `below`/`above` when wholly beyond it,
    else UNDETERMINED."""
    lo, hi = ci
    if centre - margin <= lo and hi <= centre + margin:
        return level
    if hi < centre - margin:
        return below
    if lo > centre + margin:
        return above
    return UNDETERMINED
