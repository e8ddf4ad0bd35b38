"""Type aliases shared by the public signatures."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import IO, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

ImageInput = str | os.PathLike[str] | bytes | bytearray | IO[bytes] | Image.Image | npt.NDArray[np.uint8]
"""One image: a path, an http(s) URL, encoded file bytes, a binary file object, a PIL image, or a uint8 array
(HWC, or HW grayscale)."""
ImagesInput = ImageInput | Sequence[ImageInput]

ImageEncoding = Literal["png", "jpeg"]
PreprocessMode = Literal["server", "client"]
"""Where pixels are produced: the server's ensemble (send encoded images) or this process (send tensors)."""
Protocol = Literal["http", "grpc"]
Headers = Mapping[str, str]
