"""Container images the components run in: one setting, read by components and manifests.

Override at compile time with ``DATAWHEEL_IMAGE`` / ``DATAWHEEL_TRAIN_IMAGE``;
the checked-in compiled pipeline uses the defaults below.
"""

from __future__ import annotations

import os

__all__ = ["CPU_IMAGE", "IMAGE_REPOSITORY", "IMAGE_TAG", "TRAIN_IMAGE"]

IMAGE_REPOSITORY = "ghcr.io/datawheel/datawheel"
IMAGE_TAG = "0.1.0"
CPU_IMAGE = os.environ.get("DATAWHEEL_IMAGE", f"{IMAGE_REPOSITORY}:{IMAGE_TAG}")
TRAIN_IMAGE = os.environ.get("DATAWHEEL_TRAIN_IMAGE", f"{IMAGE_REPOSITORY}-train:{IMAGE_TAG}-cuda")
