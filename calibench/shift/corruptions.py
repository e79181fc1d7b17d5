"""Generated corruptions: ImageNet-C's corruption families as batched tensor ops.

For datasets without official corrupted test sets (digits, MNIST, Fashion-MNIST, SVHN, or any
registered dataset). Each corruption maps a float batch (N, C, H, W) in [0, 1] and a severity
1..5 to a corrupted batch, drawing any randomness from a ``torch.Generator``; :func:`corrupt`
wraps them for uint8 images and :func:`corrupt_split` for a whole seeded split. The severity
tables are CIFAR-10-C's (Hendrycks and Dietterich, ICLR 2019); the definitions, the tables, how
pixel-sized parameters scale with the image and where calibench differs from the released code
are in docs/shift.md.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from calibench.data.base import Split

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

REFERENCE_SIZE = 32
"""The image size (CIFAR's) that the severity tables were written for."""

GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE = (500.0, 250.0, 100.0, 75.0, 50.0)
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)
SPECKLE_NOISE = (0.06, 0.10, 0.12, 0.16, 0.20)
GAUSSIAN_BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))
MOTION_BLUR = ((6.0, 1.0), (6.0, 1.5), (6.0, 2.0), (8.0, 2.0), (9.0, 2.5))
ZOOM_BLUR = (1.06, 1.11, 1.15, 1.20, 1.25)
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)
SATURATE = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))
JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
ELASTIC = (
    (0.0, 0.0, 0.08),
    (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06),
    (0.1, 0.04, 0.05),
    (0.1, 0.03, 0.03),
)
"""(alpha, sigma, affine jitter) of the elastic transform, as fractions of the image size."""

CHUNK = 1024
"""Images corrupted at a time by :func:`corrupt_split` (bounds memory; part of the seed's
meaning, so changing it changes the generated sets)."""


def blur_scale(x: torch.Tensor) -> float:
    """Factor on pixel-sized blur parameters: ``max(1, min(H, W) / 32)`` (docs/shift.md)."""
    return max(1.0, min(x.shape[-2:]) / REFERENCE_SIZE)


def zoom_factors(severity: int) -> list[float]:
    """The zoom factors averaged by :func:`zoom_blur`: 1.00, 1.01, ... up to the table's maximum."""
    steps = round((ZOOM_BLUR[severity - 1] - 1.0) * 100)
    return [1.0 + k / 100 for k in range(steps + 1)]


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Additive noise: ``x + N(0, c^2)`` per pixel and channel."""
    c = GAUSSIAN_NOISE[severity - 1]
    return x + c * torch.randn(x.shape, generator=generator)


def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Photon noise: ``Poisson(c * x) / c`` per pixel and channel."""
    c = SHOT_NOISE[severity - 1]
    return torch.poisson(x * c, generator=generator) / c


def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper: each pixel and channel becomes 0 or 1 (even odds) with probability c."""
    c = IMPULSE_NOISE[severity - 1]
    u = torch.rand(x.shape, generator=generator)
    return torch.where(u < c / 2, 0.0, torch.where(u < c, 1.0, x))


def speckle_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Multiplicative noise: ``x + x * N(0, c^2)``."""
    c = SPECKLE_NOISE[severity - 1]
    return x + x * c * torch.randn(x.shape, generator=generator)


def gaussian_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian filter of standard deviation ``c * blur_scale`` (truncated at 4 sigma, edges
    repeated)."""
    sigma = GAUSSIAN_BLUR[severity - 1] * blur_scale(x)
    return gaussian_filter(x, sigma, truncate=4.0, mode="nearest")


def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Convolution with :func:`disk_kernel` (radius and anti-alias blur times ``blur_scale``),
    edges mirrored."""
    radius, alias_blur = (v * blur_scale(x) for v in DEFOCUS_BLUR[severity - 1])
    kernel = disk_kernel(radius, alias_blur)
    r = (kernel.shape[0] - 1) // 2
    n, c, h, w = x.shape
    padded = pad(x.reshape(n * c, 1, h, w), r, r, "mirror")
    return F.conv2d(padded, kernel[None, None]).reshape(n, c, h, w)


def motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A one-sided Gaussian streak at a random angle in [-45, 45) degrees per image.

    Tap ``i = 0 .. 2 * ceil(radius)`` reads the pixel ``(round(i cos a), round(i sin a))`` away
    (edges repeated) with weight proportional to ``exp(-i^2 / (2 sigma^2))``, the kernel of
    ImageMagick's motion blur that the released code calls; radius and sigma times
    ``blur_scale``.
    """
    radius, sigma = (v * blur_scale(x) for v in MOTION_BLUR[severity - 1])
    n, c, h, w = x.shape
    taps = torch.arange(2 * math.ceil(radius) + 1, dtype=torch.float32)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights = weights / weights.sum()
    angle = torch.deg2rad(torch.rand(n, generator=generator) * 90 - 45)
    dx = torch.ceil(taps[None] * torch.cos(angle)[:, None] - 0.5).long()
    dy = torch.ceil(taps[None] * torch.sin(angle)[:, None] - 0.5).long()
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for i in range(len(taps)):
        rows = (torch.arange(h)[None] + dy[:, i : i + 1]).clamp(0, h - 1)
        cols = (torch.arange(w)[None] + dx[:, i : i + 1]).clamp(0, w - 1)
        index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w)
        out += weights[i] * flat.gather(2, index.expand(n, c, h * w))
    return out.reshape(n, c, h, w)


def zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """The mean of the image and its centre zooms by each of :func:`zoom_factors` (bilinear)."""
    factors = zoom_factors(severity)
    total = x.clone()
    for z in factors:
        total += zoom(x, z)
    return total / (len(factors) + 1)


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``(x - m) * c + m`` with ``m`` each image's per-channel mean."""
    c = CONTRAST[severity - 1]
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * c + mean


def brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """HSV value plus c: ``V' = min(V + c, 1)`` with hue and saturation kept.

    With ``V = max_channel(x)`` this is ``x * V' / V`` (``V'`` in every channel where V = 0);
    for one channel, ``min(x + c, 1)``.
    """
    c = BRIGHTNESS[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    shifted = (value + c).clamp(max=1.0)
    ratio = shifted / value.clamp(min=1e-12)
    return torch.where(value > 0, x * ratio, shifted.expand_as(x))


def saturate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """HSV saturation ``S' = clip(S * a + b, 0, 1)`` with hue and value kept (RGB only).

    With ``V = max``, ``S = (V - min) / V``: each channel becomes ``V - (V - x) * S' / S``. A gray
    pixel (S = 0) has hue 0, red, as in the HSV conversion of the released code: it becomes
    ``(V, V (1 - S'), V (1 - S'))``.
    """
    if x.shape[1] != 3:
        raise ValueError(f"saturate needs 3 channels (RGB), got {x.shape[1]}")
    a, b = SATURATE[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    spread = value - x.amin(dim=1, keepdim=True)
    sat = torch.where(value > 0, spread / value.clamp(min=1e-12), 0.0)
    new_sat = (sat * a + b).clamp(0.0, 1.0)
    coloured = value - (value - x) * new_sat / sat.clamp(min=1e-12)
    red = torch.ones_like(x)
    red[:, 1:] = 1 - new_sat
    return torch.where(sat > 0, coloured, value * red)


def jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Save and reload as JPEG at quality c with PIL, as the released code does (RGB images in
    colour with PIL's default 4:2:0 chroma subsampling; other channel counts one grayscale
    image per channel)."""
    quality = JPEG_QUALITY[severity - 1]
    images = to_uint8(x)
    n, c, h, w = images.shape
    if c == 3:
        planes = images.permute(0, 2, 3, 1).numpy()
    else:
        planes = images.reshape(n * c, h, w).numpy()
    decoded = np.stack([_jpeg_round_trip(plane, quality) for plane in planes])
    out = torch.from_numpy(decoded)
    out = out.permute(0, 3, 1, 2) if c == 3 else out.reshape(n, c, h, w)
    return out.float() / 255


def _jpeg_round_trip(pixels: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB" if pixels.ndim == 3 else "L"))


def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Box-filter down to ``int(c * size)`` pixels a side, then back up (:func:`box_resize`)."""
    factor = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    small = box_resize(x, max(1, int(h * factor)), max(1, int(w * factor)))
    return box_resize(small, h, w)


def elastic_transform(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """A random affine warp, then a smooth random displacement (Simard et al. 2003), both from
    :func:`elastic_warp`; bilinear sampling, edges mirrored."""
    n, _, h, w = x.shape
    affine, field = elastic_warp(n, h, w, severity, generator)
    out = sample(x, affine)
    if ELASTIC[severity - 1][0] > 0:
        out = sample(out, pixel_grid(h, w) + field)
    return out


def elastic_warp(
    n: int, h: int, w: int, severity: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where :func:`elastic_transform` reads each pixel from: (affine source, displacement).

    Affine: the points ``(c + s, c + s), (c + s, c - s), (c - s, c - s)`` (``c = size // 2``,
    ``s = max(1, size // 3)``) move by Uniform(-jitter, jitter) each; the first tensor
    (N, H, W, 2) holds, per output pixel, the (column, row) the warp maps to it. Elastic: two
    Uniform(-1, 1) fields smoothed by a Gaussian of ``sigma`` (truncated at 3 sigma, edges
    reflected), times ``alpha``; the second tensor (N, H, W, 2). alpha, sigma, jitter: the
    :data:`ELASTIC` fractions times the image size.
    """
    alpha, sigma, jitter = (v * min(h, w) for v in ELASTIC[severity - 1])
    cx, cy, s = w // 2, h // 2, max(1, min(h, w) // 3)
    points = torch.tensor(
        [[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=torch.float32
    )
    moved = points + (torch.rand((n, 3, 2), generator=generator) * 2 - 1) * jitter
    # [moved, 1] @ inverse = points: the affine map from output pixels back to their source
    inverse = torch.linalg.solve(
        torch.cat([moved, torch.ones(n, 3, 1)], -1), points.expand(n, 3, 2)
    )
    grid = pixel_grid(h, w)
    affine = torch.einsum("hwk,nkd->nhwd", torch.cat([grid, torch.ones(h, w, 1)], -1), inverse)
    field = torch.zeros(n, h, w, 2)
    if alpha > 0:
        noise = torch.rand((n, 2, h, w), generator=generator) * 2 - 1
        field = (gaussian_filter(noise, sigma, truncate=3.0, mode="reflect") * alpha).permute(
            0, 2, 3, 1
        )
    return affine, field


def pixel_grid(h: int, w: int) -> torch.Tensor:
    """The (column, row) coordinates of every pixel, (H, W, 2)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([xs, ys], -1)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "saturate": saturate,
}
"""The generated corruptions, in the order of CIFAR-10-C's files (standard ones, then extra)."""

COLOUR_ONLY = frozenset({"saturate"})


def corruption_names(channels: int) -> tuple[str, ...]:
    """The corruptions that apply to images with ``channels`` channels (saturate needs RGB)."""
    return tuple(name for name in CORRUPTIONS if channels == 3 or name not in COLOUR_ONLY)


def corrupt(
    images: torch.Tensor, corruption: str, severity: int, generator: torch.Generator
) -> torch.Tensor:
    """Apply one corruption at severity 1..5 to uint8 images (N, C, H, W); uint8 out, rounded."""
    if corruption not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in range(1, 6):
        raise ValueError(f"severity must be 1..5, got {severity}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
    return to_uint8(CORRUPTIONS[corruption](images.float() / 255, severity, generator))


def corruption_seed(seed: int, corruption: str, severity: int) -> int:
    """The generator seed of one (corruption, severity): mixed from the run's seed, the
    corruption's name (CRC-32) and the severity, so each set is reproducible on its own."""
    key = [seed, zlib.crc32(corruption.encode()), severity]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0])


def corrupt_split(split: Split, corruption: str, severity: int, seed: int) -> Split:
    """The split with every image corrupted, labels unchanged; deterministic for a seed."""
    generator = torch.Generator().manual_seed(corruption_seed(seed, corruption, severity))
    images = split.images.cpu()
    parts = [
        corrupt(images[i : i + CHUNK], corruption, severity, generator)
        for i in range(0, len(images), CHUNK)
    ]
    return Split(torch.cat(parts), split.labels)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to the nearest of 256 levels."""
    return (x.clamp(0.0, 1.0) * 255).round().to(torch.uint8)


def edge_index(n: int, before: int, after: int, mode: str) -> torch.Tensor:
    """Indices into ``range(n)`` for positions ``-before .. n + after - 1`` under an edge rule.

    ``nearest`` repeats the edge (a a | a b c), ``reflect`` mirrors including it (b a | a b c),
    ``mirror`` mirrors about it (c b | a b c); padding may exceed ``n``.
    """
    i = torch.arange(-before, n + after)
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i.remainder(2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)
    if mode == "mirror":
        i = i.remainder(2 * n - 2)
        return torch.where(i < n, i, 2 * n - 2 - i)
    raise ValueError(f"unknown edge mode {mode!r}")


def pad(x: torch.Tensor, rows: int, cols: int, mode: str) -> torch.Tensor:
    """Pad the last two dimensions by ``rows`` and ``cols`` a side, by :func:`edge_index`."""
    h, w = x.shape[-2:]
    return x[..., edge_index(h, rows, rows, mode)[:, None], edge_index(w, cols, cols, mode)[None]]


def gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    """Normalised ``exp(-i^2 / (2 sigma^2))`` for ``i = -radius .. radius``."""
    i = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float, mode: str) -> torch.Tensor:
    """Separable Gaussian filter over the last two dimensions, radius
    ``int(truncate * sigma + 0.5)`` (scipy.ndimage's rule); identity when sigma is 0."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return x
    k = gaussian_kernel(sigma, radius)
    shape = x.shape
    flat = pad(x.reshape(-1, 1, *shape[-2:]), radius, radius, mode)
    flat = F.conv2d(F.conv2d(flat, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return flat.reshape(shape)


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The defocus kernel: the pixels within ``radius`` of the centre, normalised, smoothed by a
    3x3 Gaussian of ``alias_blur`` (5x5 beyond radius 8) against aliasing."""
    size = 1 if radius <= 8 else 2
    r = math.ceil(radius) + size
    i = torch.arange(-r, r + 1, dtype=torch.float32)
    disk = ((i[:, None] ** 2 + i[None, :] ** 2) <= radius**2).float()
    disk = disk / disk.sum()
    g = gaussian_kernel(alias_blur, size)
    blurred = F.conv2d(disk[None, None], g.view(1, 1, 1, -1), padding=(0, size))
    return F.conv2d(blurred, g.view(1, 1, -1, 1), padding=(size, 0))[0, 0]


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Magnify about the image centre by ``factor`` >= 1, keeping the size (bilinear)."""
    n = x.shape[0]
    theta = torch.tensor([[1 / factor, 0.0, 0.0], [0.0, 1 / factor, 0.0]]).expand(n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``x`` at pixel coordinates ``where`` (N, H, W, 2) as (col, row),
    edges mirrored."""
    h, w = x.shape[-2:]
    size = torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=torch.float32)
    grid = where / size * 2 - 1
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def box_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize with a box filter as PIL's ``Image.BOX``: each output pixel is the mean of the input
    pixels whose centres lie within its footprint (widened to one input pixel when enlarging)."""
    rows = box_weights(x.shape[-2], height)
    cols = box_weights(x.shape[-1], width)
    return torch.einsum("ih,nchw,jw->ncij", rows, x, cols)


def box_weights(n_in: int, n_out: int) -> torch.Tensor:
    """The (n_out, n_in) averaging matrix of :func:`box_resize`, with PIL's bounds."""
    scale = n_in / n_out
    width = max(scale, 1.0)
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        centre = (j + 0.5) * scale
        lo = max(int(centre - width / 2 + 0.5), 0)
        hi = min(int(centre + width / 2 + 0.5), n_in)
        for i in range(lo, hi):
            if -0.5 < (i + 0.5 - centre) / width <= 0.5:
                weights[j, i] = 1.0
    return (weights / weights.sum(dim=1, keepdim=True)).float()
