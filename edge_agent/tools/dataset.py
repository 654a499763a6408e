"""Read labelled face sets in the FER-2013 npz layout: ``images`` uint8 [N,H,W], ``labels`` [N]."""

import zipfile
from pathlib import Path

import numpy as np

from ..common.contract import EMOTIONS
from ..common.errors import EdgeAgentError


def load_faces(path):
    """Return ``(images, labels)`` from an npz file, or raise a message naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise EdgeAgentError(f"data file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise EdgeAgentError(f"data file {path} is not a readable npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("images", "labels") if key not in data.files]
            if missing:
                raise EdgeAgentError(
                    f"data file {path} has no {' or '.join(repr(k) for k in missing)} array "
                    f"(it has: {', '.join(data.files) or 'nothing'})"
                )
            images, labels = data["images"], data["labels"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise EdgeAgentError(f"data file {path} is not a readable npz file: {exc}") from None
    if images.ndim != 3 or images.dtype != np.uint8:
        raise EdgeAgentError(
            f"data file {path}: 'images' is {images.dtype} {images.shape}; expected uint8 [N, height, width]"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise EdgeAgentError(
            f"data file {path}: 'labels' has shape {labels.shape}; expected one label per image ({len(images)})"
        )
    if len(images) == 0:
        raise EdgeAgentError(f"data file {path} holds no faces")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= len(EMOTIONS):
        raise EdgeAgentError(
            f"data file {path}: 'labels' must be integers 0..{len(EMOTIONS) - 1} ({', '.join(EMOTIONS)})"
        )
    return images, labels.astype(np.int64)
