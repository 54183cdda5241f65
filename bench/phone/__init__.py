"""The phone-photo point of `make bench` (`python -m bench --only phone`): 12-megapixel JPEGs, as phones
send them, through convzoo's /classify, raw ONNX Runtime in-process (full decode, and convzoo's reduced-size
decode) and the peers, each twice: with its users' usual image path and with convzoo's preprocessing.

photos.py makes the inputs, limit.py measures the in-process rows, client.py drives a server with a fixed
number of photos, run.py runs the section and report.py renders it into docs/bench.md.
"""

from __future__ import annotations

import math

PHOTO, LARGE = "efficientnet_lite0", "resnet50"  # the photo model (the default) and the bench's resnet50
MODELS = (PHOTO, LARGE)
CONCURRENCIES = (1, 4)
# Photos per load point: at least a few dozen, which keeps a point to seconds even at ~2 photos/s, and
# at least MIN_POINT_S of them at the rate of the warm-up, so that the fast rows (~20 photos/s: 1.2 s for
# 24) are not a second's noise of the shared host; a multiple of the photos, each sent as often.
IMAGES_PER_POINT = 24
MIN_POINT_S = 4.0
OURS = "convzoo's preprocessing"  # the image path of a peer's second row


def images_for(
    warm_rate: float, photos: int, least: int = IMAGES_PER_POINT, seconds: float = MIN_POINT_S
) -> int:
    """A point's photos: `least`, or `seconds` at the warm-up's rate if more; in whole rounds of the photos."""
    wanted = max(least, math.ceil(seconds * warm_rate))
    return math.ceil(wanted / photos) * photos
