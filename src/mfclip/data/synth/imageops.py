"""Small vectorised numpy image operations used by the synthetic benchmark.

All functions take and return float32 arrays, ``(H, W)`` or ``(H, W, C)``, and are deterministic:
only element-wise arithmetic, fixed-order sums of shifted slices and numpy's FFT, never threaded
reductions, so the same input gives the same bits whatever the number of worker processes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _shift_sum(image: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``image`` with a 1-D odd-length kernel along ``axis`` (reflect padding)."""
    radius = len(taps) // 2
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="reflect")
    length = image.shape[axis]
    out = np.zeros_like(image)
    for offset, weight in enumerate(taps):
        if weight == 0.0:
            continue
        index = [slice(None)] * image.ndim
        index[axis] = slice(offset, offset + length)
        out += np.float32(weight) * padded[tuple(index)]
    return out


def separable_filter(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Filter rows and columns with the same 1-D kernel."""
    taps = np.asarray(taps, dtype=np.float32)
    return _shift_sum(_shift_sum(image, taps, 0), taps, 1)


@lru_cache(maxsize=64)
def gaussian_taps(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian kernel (radius ``ceil(2.2 sigma)``, at least 1)."""
    radius = max(1, int(np.ceil(2.2 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / max(sigma, 1e-3)) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; ``sigma`` is rounded to 0.05 px so kernels are cached and reproducible."""
    sigma = round(float(sigma) * 20.0) / 20.0
    if sigma <= 0.0:
        return image.copy()
    return separable_filter(image, gaussian_taps(sigma))


def unsharp_mask(image: np.ndarray, amount: float, sigma: float = 0.8) -> np.ndarray:
    """Classic sharpening: ``x + amount * (x - blur(x))``."""
    if amount <= 0.0:
        return image
    return image + np.float32(amount) * (image - gaussian_blur(image, sigma))


def area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks (height and width must be multiples of ``factor``)."""
    total = np.zeros_like(image[::factor, ::factor])
    for a in range(factor):
        for b in range(factor):
            total += image[a::factor, b::factor]
    return total * np.float32(1.0 / (factor * factor))


def phase_upsample(image: np.ndarray, phase_kernels: np.ndarray) -> np.ndarray:
    """Stride-``f`` transposed convolution written per output phase.

    ``phase_kernels`` has shape ``(f, f, k, k)`` (odd ``k``): output pixel ``(f*i + a, f*j + b)`` is the
    ``k x k`` neighbourhood of input pixel ``(i, j)`` weighted by ``phase_kernels[a, b]``. Bilinear,
    bicubic and learned decoder up-samplers are all of this form; phases whose kernels have unequal
    sums leave a periodic (checkerboard) pattern, overlapping kernels a periodic correlation.
    """
    factor, _, k, _ = phase_kernels.shape
    radius = k // 2
    h, w = image.shape[:2]
    pad = [(radius, radius), (radius, radius)] + [(0, 0)] * (image.ndim - 2)
    padded = np.pad(image, pad, mode="edge")
    out = np.empty((h * factor, w * factor, *image.shape[2:]), dtype=np.float32)
    shifted = [[padded[dy : dy + h, dx : dx + w] for dx in range(k)] for dy in range(k)]
    for a in range(factor):
        for b in range(factor):
            kernel = phase_kernels[a, b]
            acc = np.zeros((h, w, *image.shape[2:]), dtype=np.float32)
            for dy in range(k):
                for dx in range(k):
                    weight = kernel[dy, dx]
                    if weight != 0.0:
                        acc += np.float32(weight) * shifted[dy][dx]
            out[a::factor, b::factor] = acc
    return out


def interpolation_phase_kernels(factor: int, taps: np.ndarray) -> np.ndarray:
    """Phase kernels of a separable interpolating up-sampler.

    ``taps`` is the continuous kernel sampled at the ``factor`` sub-pixel offsets: an array of shape
    ``(factor, k)`` giving the 1-D weights for output phase ``a``. The 2-D kernel of phase ``(a, b)`` is
    the outer product of rows ``a`` and ``b``.
    """
    taps = np.asarray(taps, dtype=np.float32)
    return np.einsum("ai,bj->abij", taps, taps).astype(np.float32)


def linear_taps(factor: int) -> np.ndarray:
    """Bilinear (triangle) interpolation weights for each of the ``factor`` output phases (3 taps)."""
    rows = []
    for a in range(factor):
        offset = (a + 0.5) / factor - 0.5  # sub-pixel position relative to the input pixel centre
        rows.append([max(0.0, -offset), 1.0 - abs(offset), max(0.0, offset)])
    return np.asarray(rows, dtype=np.float32)


def cubic_taps(factor: int, a_coef: float = -0.5) -> np.ndarray:
    """Keys cubic convolution weights for each output phase (5 taps, centred)."""

    def keys(t: float) -> float:
        t = abs(t)
        if t <= 1:
            return (a_coef + 2) * t**3 - (a_coef + 3) * t**2 + 1
        if t < 2:
            return a_coef * t**3 - 5 * a_coef * t**2 + 8 * a_coef * t - 4 * a_coef
        return 0.0

    rows = []
    for a in range(factor):
        offset = (a + 0.5) / factor - 0.5
        row = [keys(offset - d) for d in (-2, -1, 0, 1, 2)]
        total = sum(row)
        rows.append([v / total for v in row])
    return np.asarray(rows, dtype=np.float32)


@lru_cache(maxsize=16)
def _radial_frequency(height: int, width: int) -> np.ndarray:
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0 / max(height, width)
    return radius


def _unit_variance(spectral_filter: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale a half-spectrum (``rfft2``) filter so that filtered unit white noise has unit variance."""
    weight = np.full(spectral_filter.shape[1], 2.0)
    weight[0] = 1.0
    if width % 2 == 0:
        weight[-1] = 1.0
    variance = float((np.abs(spectral_filter) ** 2 * weight).sum()) / (height * width)
    return spectral_filter / np.sqrt(variance)


@lru_cache(maxsize=256)
def _fractal_filter(height: int, width: int, beta: float) -> np.ndarray:
    spectral_filter = _radial_frequency(height, width) ** (-beta / 2.0)
    spectral_filter[0, 0] = 0.0
    return _unit_variance(spectral_filter, height, width).astype(np.float32)


@lru_cache(maxsize=16)
def _strand_filter(height: int, width: int, along: float) -> np.ndarray:
    fy = np.abs(np.fft.fftfreq(height)[:, None])
    fx = np.abs(np.fft.rfftfreq(width)[None, :])
    spectral_filter = np.exp(-((fy * along * 6.0) ** 2) - (fx * 2.0) ** 2)
    spectral_filter[0, 0] = 0.0
    return _unit_variance(spectral_filter, height, width).astype(np.float32)


def _filtered_noise(
    rng: np.random.Generator, height: int, width: int, spectral_filter: np.ndarray
) -> np.ndarray:
    """Filtered white noise, drawn directly in the frequency domain (one inverse FFT, no forward one)."""
    scale = np.float32(np.sqrt(height * width / 2.0))
    real = rng.standard_normal(spectral_filter.shape, dtype=np.float32)
    imag = rng.standard_normal(spectral_filter.shape, dtype=np.float32)
    spectrum = (real + 1j * imag) * (scale * spectral_filter)
    return np.fft.irfft2(spectrum, s=(height, width)).astype(np.float32)


def fractal_noise(
    rng: np.random.Generator,
    height: int,
    width: int,
    beta: float | tuple[float, ...],
    weights: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Zero-mean ``1/f^beta`` noise (natural-image-like texture) of shape ``(H, W)``, unit variance in
    expectation; several exponents with ``weights`` give the weighted sum of such fields (one FFT)."""
    betas = beta if isinstance(beta, tuple) else (beta,)
    weights = weights or (1.0,) * len(betas)
    # Exponents are rounded to 0.05 so their filters are cached and reproducible.
    spectral_filter = sum(
        np.float32(w) * _fractal_filter(height, width, round(b * 20.0) / 20.0)
        for b, w in zip(betas, weights, strict=True)
    )
    return _filtered_noise(rng, height, width, spectral_filter)


def strand_noise(rng: np.random.Generator, height: int, width: int, along: float) -> np.ndarray:
    """Unit-variance anisotropic noise: fine across columns, stretched ``along``-fold down the rows (hair)."""
    return _filtered_noise(rng, height, width, _strand_filter(height, width, float(along)))
