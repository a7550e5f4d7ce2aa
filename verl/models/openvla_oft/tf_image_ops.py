"""TensorFlow's image ops that the reference's observation pipelines use, reproduced without TensorFlow.

The released OpenVLA(-OFT) checkpoints were trained on images that went through TensorFlow, and the
reference evaluates them the same way; a pipeline that is merely "also Lanczos" moves pixels by up to
10 grey levels. Each function below follows one TF CPU kernel operation by operation in float32, so it
computes TF's floats, not an approximation of them:

- `jpeg_round_trip`: `tf.image.encode_jpeg` (quality 95, 4:2:0 chroma, libjpeg's accurate integer
  DCT), reproduced by PIL's encoder, then `tf.io.decode_image` (TF's default decoder: libjpeg's
  FAST integer DCT and "fancy" chroma upsampling), reproduced by libjpeg-turbo through `simplejpeg`
  with the same two settings. PIL's decoder (accurate DCT) is up to ~10 grey levels off.
- `resize_lanczos3`: `tf.image.resize(method="lanczos3", antialias=True)` (the ScaleAndTranslate
  kernel: per-output spans of kernel weights normalised to sum 1, rows first, then columns), then
  the reference's `round`, `clip` and uint8 cast.
- `crop_and_resize`: `tf.image.crop_and_resize` (bilinear) of one square box.
- `to_float` / `to_uint8`: `tf.image.convert_image_dtype` both ways (x * (1/255); x * 255.5 with a
  truncating, saturating cast).

tests/models/test_libero_observation.py compares every stage with arrays real TensorFlow made on
LIBERO frames (tests/models/fixtures/make_tf_observation_golden.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import logging
import math
from typing import Callable

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

JPEG_QUALITY = 95  # tf.image.encode_jpeg's default
LANCZOS3_RADIUS = np.float32(3.0)
_PI = np.float32(3.14159265359)  # the constant TF's Lanczos kernel uses
_F0, _F1, _HALF = np.float32(0.0), np.float32(1.0), np.float32(0.5)


# ------------------------------------------------------------------------------------------------ JPEG
def jpeg_round_trip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W, 3]: TF's JPEG encode (defaults) then TF's default decode."""
    import simplejpeg  # libjpeg-turbo's decoder with its DCT and upsampling switches exposed

    # PIL's encoder at quality 95 writes what TF's does (standard tables scaled to 95, 4:2:0, accurate
    # DCT); simplejpeg's own encoder quantises differently
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return simplejpeg.decode_jpeg(buffer.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False)


# ---------------------------------------------------------------------------------------- Lanczos-3
@functools.lru_cache(maxsize=1)
def _sinf() -> Callable[[np.ndarray], np.ndarray]:
    """float32 sine as TF's kernel gets it: the C library's `sinf`.

    glibc's sinf is not always correctly rounded (about 1 kernel weight in 15 of a 256 -> 224 resize
    would differ by an ulp from a float64 sine rounded to float32), and those ulps flip a few
    round-half-to-even results. Without a loadable C math library, the float64 sine is the fallback.
    """
    name = ctypes.util.find_library("m")
    try:
        libm = ctypes.CDLL(name or "libm.so.6")
        sinf = libm.sinf
    except (OSError, AttributeError):
        logger.warning("no C math library with sinf found: TF-style Lanczos weights may differ by an ulp")
        return lambda x: np.sin(x.astype(np.float64)).astype(np.float32)
    sinf.restype, sinf.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda x: np.array([sinf(float(v)) for v in np.ravel(x)], dtype=np.float32).reshape(np.shape(x))


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TF's Lanczos kernel of radius 3 on float32 [N] (its constant pi, its operation order)."""
    x = np.abs(x).astype(np.float32)
    px = _PI * x
    sin_px, sin_px3 = _sinf()(px), _sinf()(px / LANCZOS3_RADIUS)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = LANCZOS3_RADIUS * sin_px * sin_px3 / (_PI * _PI * x * x)
    value = np.where(x <= 1e-3, _F1, value)
    return np.where(x > LANCZOS3_RADIUS, _F0, value).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _lanczos3_spans(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts int64 [out], weights float32 [out, span]) of TF's ScaleAndTranslate with antialias.

    Zero weights pad spans shorter than `span`; taps past the image edge carry zero weight.
    """
    scale = np.float32(np.float32(out_size) / np.float32(in_size))
    inv_scale = np.float32(1.0 / float(scale))  # computed in double, stored as float
    kernel_scale = max(inv_scale, _F1)
    radius = np.float32(LANCZOS3_RADIUS * kernel_scale)
    span = min(2 * int(math.ceil(float(radius))) + 1, in_size)
    one_over_kernel_scale = np.float32(_F1 / kernel_scale)
    sample = (np.arange(out_size, dtype=np.float32) + _HALF) * inv_scale  # [out] input coordinates
    starts = np.clip(np.ceil(sample - radius - _HALF).astype(np.int64), 0, in_size - 1)
    ends = np.clip(np.floor(sample + radius - _HALF).astype(np.int64), 0, in_size - 1) + 1
    weights = np.zeros((out_size, span), dtype=np.float32)
    total = np.zeros(out_size, dtype=np.float32)
    for j in range(span):  # taps in order: TF sums the weights one by one in float32
        source = starts + j
        inside = source < ends
        position = (source.astype(np.float32) + _HALF - sample) * one_over_kernel_scale
        w = np.where(inside, _lanczos3(position), _F0)
        weights[:, j] = w
        total = (total + w).astype(np.float32)
    weights = weights * (_F1 / total)[:, None]  # TF multiplies by the reciprocal of the sum
    return starts, weights.astype(np.float32)


def _gather_rows(image: np.ndarray, starts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sums of rows of `image` float32 [H, ...] -> [len(starts), ...], accumulated tap by tap
    from 0 as TF does (two float32 roundings per tap: TF's CPU build has no FMA here)."""
    out = np.zeros((len(starts), *image.shape[1:]), dtype=np.float32)
    term = np.empty_like(out)
    weight_shape = (-1,) + (1,) * (image.ndim - 1)
    for j in range(weights.shape[1]):
        index = np.minimum(starts + j, image.shape[0] - 1)  # past the edge the weight is 0
        np.multiply(image[index], weights[:, j].reshape(weight_shape), out=term)
        out += term
    return out


def resize_lanczos3(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [size, size, C]: TF's antialiased Lanczos-3 resize, rounded half to even."""
    height, width = image.shape[:2]
    rows = _lanczos3_spans(height, size)
    cols = _lanczos3_spans(width, size)
    x = _gather_rows(image.astype(np.float32), *rows)  # [size, W, C]: rows first, as the kernel does
    x = _gather_rows(np.ascontiguousarray(x.swapaxes(0, 1)), *cols).swapaxes(0, 1)  # [size, size, C]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ crop and dtype casts
def to_float(image: np.ndarray) -> np.ndarray:
    """`tf.image.convert_image_dtype(uint8 -> float32)`: x * float32(1 / 255)."""
    return image.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """`tf.image.convert_image_dtype(float32 -> uint8, saturate=True)`: x * 255.5, clamped, truncated."""
    return np.clip(image.astype(np.float32) * np.float32(255.5), 0, 255).astype(np.uint8)


def square_box(area_fraction: float, position: tuple[float, float] = (0.5, 0.5)) -> tuple[np.float32, ...]:
    """Normalised box (y1, x1, y2, x2) covering `area_fraction` of the image, in float32 as TF builds it.

    `position` (y, x) in [0, 1] places the box start at position * (1 - side); (0.5, 0.5) is the
    reference's centred box `(1 - side) / 2`.
    """
    side = np.float32(np.clip(np.sqrt(np.float32(area_fraction)), _F0, _F1))
    margin = np.float32(_F1 - side)
    if tuple(position) == (0.5, 0.5):
        y1 = x1 = np.float32(margin / np.float32(2))
    else:
        y1, x1 = np.float32(np.float32(position[0]) * margin), np.float32(np.float32(position[1]) * margin)
    return y1, x1, np.float32(y1 + side), np.float32(x1 + side)


def _sample_coords(start: np.float32, end: np.float32, length: int, size: int) -> np.ndarray:
    scale = np.float32(np.float32(end - start) * np.float32(length - 1) / np.float32(size - 1))
    return (start * np.float32(length - 1) + np.arange(size, dtype=np.float32) * scale).astype(np.float32)


def crop_and_resize(image: np.ndarray, box: tuple[np.float32, ...], size: int) -> np.ndarray:
    """`tf.image.crop_and_resize` (bilinear) of one normalised box: [H, W, C] -> float32 [size, size, C].

    Samples y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (size - 1); lerps `a + (b - a) * t` in float32,
    along x first (top and bottom rows), then along y. The x-lerp of a source row does not depend on
    which output row uses it, so it runs once per source row the box touches: the same float32
    operations on the same values as TF's kernel, in half the memory traffic.
    The box must lie inside the image (TF would fill outside samples with an extrapolation value).
    """
    height, width = image.shape[:2]
    y1, x1, y2, x2 = box
    ys = _sample_coords(y1, y2, height, size)
    xs = _sample_coords(x1, x2, width, size)
    if ys.min() < 0 or ys.max() > height - 1 or xs.min() < 0 or xs.max() > width - 1:
        raise ValueError(f"crop box {tuple(float(b) for b in box)} reaches outside the image")
    top, bottom = np.floor(ys).astype(np.int64), np.ceil(ys).astype(np.int64)
    left, right = np.floor(xs).astype(np.int64), np.ceil(xs).astype(np.int64)
    y_lerp = (ys - top.astype(np.float32))[:, None, None]
    x_lerp = (xs - left.astype(np.float32))[None, :, None]
    first = int(top[0])  # source rows first..last are the ones sampled
    rows = image[first:int(bottom[-1]) + 1].astype(np.float32)  # [R, W, C]
    row_left = rows[:, left]  # [R, size, C]
    along_x = rows[:, right]
    along_x -= row_left
    along_x *= x_lerp
    along_x += row_left  # left + (right - left) * x_lerp, per source row
    top_row, bottom_row = along_x[top - first], along_x[bottom - first]  # [size, size, C]
    bottom_row -= top_row
    bottom_row *= y_lerp
    bottom_row += top_row
    return bottom_row
