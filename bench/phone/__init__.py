"""The phone-photo point of `make bench` (`python -m bench --only phone`): 12-megapixel JPEGs, as phones
send them, through convzoo's /classify, raw ONNX Runtime in-process (full decode, and convzoo's reduced-size
decode) and the peers, each twice: with its users' usual image path and with convzoo's preprocessing.

photos.py makes the inputs, limit.py measures the in-process rows, client.py drives a server with a fixed
number of photos, run.py runs the section and report.py renders it into docs/bench.md.
"""

from __future__ import annotations

PHOTO, LARGE = "efficientnet_lite0", "resnet50"  # the photo model (the default) and the bench's resnet50
MODELS = (PHOTO, LARGE)
CONCURRENCIES = (1, 4)
# Photos per load point: a few dozen keeps a point to seconds even at ~3 photos/s, and every photo of
# photos.py is sent the same number of times.
IMAGES_PER_POINT = 24
OURS = "convzoo's preprocessing"  # the image path of a peer's second row
