"""int8 encoders: static QDQ quantisation (per-channel int8 weights, uint8 activations) calibrated on photos.

Why static: ONNX Runtime's dynamic quantisation turns convolutions into ConvInteger, which ran
10x slower than fp32 on the 2-core machine; QDQ lets the CPU provider fuse int8 convolutions.
Only the encoder is quantised (the prototype and head graphs are a few percent of the time and
their cosines are where precision matters).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from sgone.errors import SgoneError


def calibration_feeds(images: list[np.ndarray], size: int, dynamic: bool) -> Iterator[dict[str, np.ndarray]]:
    """HxWx3 uint8 photos -> encoder feeds (one at a time), resized as the runtime will resize them."""
    from sgone.inputs import image_tensor, input_size

    for image in images:
        hw = input_size(*image.shape[:2], size) if dynamic else (size, size)
        yield {"image": image_tensor(image, hw).numpy()}


def quantize_encoder(encoder: bytes, images: list[np.ndarray], size: int, dynamic: bool) -> bytes:
    """fp32 encoder ONNX bytes -> int8 QDQ encoder bytes, calibrated (min/max) on `images`."""
    try:
        from onnxruntime import quantization as q
    except ImportError:
        from sgone.onnx.sessions import INSTALL_HINT

        raise SgoneError(INSTALL_HINT) from None
    if not images:
        raise SgoneError("int8: no calibration images")
    from tqdm import tqdm

    feeds = iter(tqdm(calibration_feeds(images, size, dynamic), total=len(images), desc="int8 calibration",
                      unit="photo", disable=len(images) < 8, leave=False))

    class Reader(q.CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    with tempfile.TemporaryDirectory(prefix="sgone-int8-") as tmp:
        src, pre, out = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "pre", "int8"))
        src.write_bytes(encoder)
        q.quant_pre_process(str(src), str(pre))  # shape inference + fusions the quantiser needs
        q.quantize_static(str(pre), str(out), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
        return out.read_bytes()
