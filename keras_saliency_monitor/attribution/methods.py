"""Attribution methods, written against a gradient function rather than a model.

Every method receives ``grad(x, classes) -> GradientResult`` (see :mod:`gradients`), the probe
images ``x`` (N, H, W, C) and ``first``, the result of the one gradient call on the clean images
that every method needs anyway (it fixes the explained class per example and gives the logits).
Because methods only see a gradient function they can be tested on analytic functions with no
network.

A method returns attributions shaped like the input (signed, except SmoothGrad's mean magnitudes
and Grad-CAM's single-channel (N, H, W, 1) map); ``to_map`` reduces them to a non-negative
(N, H, W) saliency map. Method options are validated up front by
:func:`validate_options` so a typo fails in ``__init__``, not at the end of the first epoch.

Methods that evaluate the gradient at many perturbed images (SmoothGrad's noisy samples, IG's path
points) send them all through the same compiled ``grad`` in chunks of its ``batch_size``. The
perturbed images are built on the host one chunk at a time into one reused buffer, so host memory
is bounded by a chunk whatever ``samples`` or ``steps`` is.

Grad-CAM (``wrt="layer"``) receives a :class:`gradients.LayerGradient` instead: ``first`` then
holds a layer's activations and the gradient with respect to them.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import keras
import numpy as np

#: Rows per host block when ``grad`` has no ``batch_size`` (a plain function in tests).
DEFAULT_BLOCK_ROWS = 32


class Method(NamedTuple):
    """One attribution method."""

    name: str
    attribute: Callable  # (grad, x, first, **options) -> (attributions (N,H,W,C), extras dict)
    to_map: Callable  # attributions (N,H,W,C) -> saliency (N,H,W) >= 0
    defaults: dict  # option name -> default value; the only options the method accepts
    check: Callable | None = None  # options dict -> None, raising ValueError/TypeError
    wrt: str = "input"  # "input": grad is an InputGradient; "layer": a LayerGradient
    check_shape: Callable | None = None  # (options, input_shape (H, W, C)) -> None, at bind


# The channel reductions run over channel slices: numpy's reductions along a short last axis
# (C = 3) are some 10-25x slower than a few elementwise passes, and this runs every epoch.


def max_abs_over_channels(attributions: np.ndarray) -> np.ndarray:
    """Simonyan et al. 2013: the saliency of a pixel is max over channels of |attribution|."""
    a = np.asarray(attributions)
    out = np.abs(a[..., 0])
    for c in range(1, a.shape[-1]):
        np.maximum(out, np.abs(a[..., c]), out=out)
    return out


def abs_sum_over_channels(attributions: np.ndarray) -> np.ndarray:
    """|sum over channels|: keeps additive methods' per-pixel totals (gradient x input, IG)."""
    a = np.asarray(attributions)
    out = a[..., 0].copy()
    for c in range(1, a.shape[-1]):
        out += a[..., c]
    return np.abs(out, out=out)


def single_channel(attributions: np.ndarray) -> np.ndarray:
    """The one channel of an already non-negative (N, H, W, 1) map (Grad-CAM)."""
    return attributions[..., 0]


# ------------------------------------------------------------------------------------------------
# Option checks: errors name the option, what was expected and what was received.
# ------------------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _option_error(method, option, expected, value, error=ValueError):
    kind = "type" if error is TypeError else "value"
    shown = type(value).__name__ if error is TypeError else repr(value)
    return error(
        f"Invalid {kind} for option `{option}` of method={method!r}: expected {expected}, "
        f"received {shown}."
    )


def _check_int(method, options, option, low=1):
    """An int option >= ``low``: 1 for counts (samples, steps), 0 for a seed."""
    expected = "a positive int" if low == 1 else "a non-negative int"
    value = options[option]
    if not _is_int(value):
        raise _option_error(method, option, expected, value, TypeError)
    if value < low:
        raise _option_error(method, option, expected, value)


# ------------------------------------------------------------------------------------------------
# Blocks of perturbed images.
# ------------------------------------------------------------------------------------------------


def _block_rows(grad) -> int:
    """Rows per host block: one of ``grad``'s chunks.

    A block of exactly one chunk is sent through ``grad`` as one compiled call, so its results
    need no concatenation, and the block buffer is reused (it stays in cache): host memory is one
    chunk of images and one of gradients, whatever ``samples`` or ``steps`` is.
    """
    return int(getattr(grad, "batch_size", 0) or DEFAULT_BLOCK_ROWS)


def _segments(start: int, stop: int, n: int):
    """Split flat rows ``[start, stop)`` of a (repeats, n) layout into per-repeat runs.

    Yields ``(k, i0, i1, j)``: rows ``j .. j + i1 - i0`` of the block are examples ``i0 .. i1`` of
    repeat ``k`` (a SmoothGrad sample or an IG step).
    """
    for k in range(start // n, (stop - 1) // n + 1):
        i0 = max(start, k * n) - k * n
        i1 = min(stop, (k + 1) * n) - k * n
        yield k, i0, i1, k * n + i0 - start


def _perturbed_gradients(grad, x, classes, repeats, fill, consume):
    """Send ``repeats`` perturbed copies of ``x`` through ``grad`` in bounded host blocks.

    Rows are ordered repeat-major (row ``k * N + i`` is copy ``k`` of example ``i``), so every
    piece of work is a slice. ``fill(k, i0, i1, out)`` writes copy ``k`` of examples ``i0:i1``
    into ``out``; ``consume(k, i0, i1, result, j)`` reads rows ``j : j + i1 - i0`` of the block's
    :class:`gradients.GradientResult`.
    """
    n = len(x)
    total = n * repeats
    block = _block_rows(grad)
    rows = np.empty((min(block, total), *x.shape[1:]), np.float32)
    requested = np.empty((len(rows),), np.int32)
    for start in range(0, total, block):
        stop = min(start + block, total)
        segments = list(_segments(start, stop, n))
        for k, i0, i1, j in segments:
            fill(k, i0, i1, rows[j : j + i1 - i0])
            requested[j : j + i1 - i0] = classes[i0:i1]
        result = grad(rows[: stop - start], requested[: stop - start])
        for k, i0, i1, j in segments:
            consume(k, i0, i1, result, j)


# ------------------------------------------------------------------------------------------------
# vanilla, gradient x input
# ------------------------------------------------------------------------------------------------


def _vanilla(grad, x, first, **_):
    return first.grads, {}


def _gradient_x_input(grad, x, first, **_):
    return first.grads * x, {}


# ------------------------------------------------------------------------------------------------
# SmoothGrad (Smilkov et al. 2017)
# ------------------------------------------------------------------------------------------------


def smoothgrad_noise(seed: int, samples: int, image_shape) -> np.ndarray:
    """The unit-normal draws of SmoothGrad: ``(samples, H, W, C)`` float32.

    ``np.random.default_rng(seed).standard_normal((samples, *image_shape), dtype=np.float32)``:
    a private generator (NumPy's global RNG and Keras's seed generators are never used), the same
    draws on every call, so every epoch of a run perturbs the probes identically. The same
    ``samples`` draws are used for every probe (scaled by each probe's own range): each map is an
    average over its own probe's samples, so sharing the draws across probes biases nothing, and it
    keeps them independent of the number and order of probes and cheap to regenerate
    (``samples * H * W * C`` numbers, whatever N).
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((int(samples), *tuple(image_shape)), dtype=np.float32)


def _noisy_gradients(grad, x, first, samples, noise, seed, consume_block):
    """Send SmoothGrad's ``samples`` noisy copies of every probe through ``grad``.

    Sample k of probe i is ``x_i + sigma_i * eps_k`` with ``sigma_i = noise * (max(x_i) -
    min(x_i))`` and ``eps_k`` from :func:`smoothgrad_noise`: the draws of ``smoothgrad``,
    ``smoothgrad_squared`` and ``vargrad`` are the same for the same ``seed``. Every sample
    differentiates the class explained for the clean image (``first.classes``).
    ``consume_block(i0, i1, grads)`` receives the gradients (rows of examples ``i0:i1`` of one
    sample) as they come, so the samples are never all held at once.
    """
    eps = smoothgrad_noise(seed, samples, x.shape[1:])
    flat = x.reshape(len(x), -1)
    sigma = (np.float32(noise) * (flat.max(axis=1) - flat.min(axis=1))).astype(np.float32)
    sigma = sigma[:, None, None, None]

    def fill(k, i0, i1, out):
        np.multiply(eps[k], sigma[i0:i1], out=out)
        out += x[i0:i1]

    def consume(k, i0, i1, result, j):
        consume_block(i0, i1, result.grads[j : j + i1 - i0])

    _perturbed_gradients(grad, x, first.classes, samples, fill, consume)


def _smoothgrad(grad, x, first, *, samples, noise, seed):
    """SmoothGrad: the mean over noisy copies of |gradient|, per channel.

    Sample k of probe i is ``x_i + sigma_i * eps_k`` with ``sigma_i = noise * (max(x_i) -
    min(x_i))`` (the probe's own value range, so the option means the same for [0, 1], [0, 255]
    or standardised inputs) and ``eps_k`` from :func:`smoothgrad_noise`. Every sample
    differentiates the class explained for the clean image (``first.classes``).

    How samples combine: Smilkov et al. 2017 define SmoothGrad as the mean of a sensitivity map
    over noisy copies, ``(1/n) sum_k M(x + N(0, sigma^2))``. Taking for ``M`` the magnitude
    ``|g|`` that the vanilla map here is built from, this is the mean of ``|g|``: we average
    ``|g|`` per channel and, like vanilla, take the max over channels for the map. Averaging the
    signed gradient instead lets noise-induced sign flips cancel (the two agree wherever the sign
    is stable across samples); the mean of ``g**2`` (``smoothgrad_squared``) weighs rare large
    gradients more. With ``noise=0`` every sample
    is the clean image and the map is exactly the vanilla map (the sum is kept in float64, so the
    mean of identical values is that value).

    Returns:
        (N, H, W, C) float32 ``mean_k |g(x_i + sigma_i eps_k)|``, non-negative, and no extras.
    """
    total = np.zeros(x.shape, np.float64)  # float64: exact mean of identical samples
    scratch = np.empty((min(_block_rows(grad), len(x)), *x.shape[1:]), np.float32)

    def consume(i0, i1, grads):
        total[i0:i1] += np.abs(grads, out=scratch[: i1 - i0])

    _noisy_gradients(grad, x, first, samples, noise, seed, consume)
    return (total / samples).astype(np.float32), {}


def _noise_moments(grad, x, first, *, samples, noise, seed):
    """Per-channel mean of the squared gradient and variance of the gradient over SmoothGrad's
    noisy copies, from one pass over the draws: ``(mean_k g_k**2, var_k g_k)``, float64.

    The sums run over ``d_k = g_k - g_0``, the samples' gradients minus the clean image's (which
    ``first`` holds already): the variance ``mean(d**2) - mean(d)**2`` then loses no digits to
    cancellation when the gradient hardly varies, and ``noise=0`` gives exactly 0.
    """
    g0 = np.asarray(first.grads, np.float64)
    total = np.zeros(x.shape, np.float64)  # sum_k d_k
    total_sq = np.zeros(x.shape, np.float64)  # sum_k d_k**2
    scratch = np.empty((min(_block_rows(grad), len(x)), *x.shape[1:]), np.float64)

    def consume(i0, i1, grads):
        d = np.subtract(grads, g0[i0:i1], out=scratch[: i1 - i0])
        total[i0:i1] += d
        total_sq[i0:i1] += np.square(d, out=d)

    _noisy_gradients(grad, x, first, samples, noise, seed, consume)
    mean_d = total / samples
    variance = np.maximum(total_sq / samples - mean_d**2, 0.0)
    mean_square = variance + (g0 + mean_d) ** 2  # E[g**2] = Var[g] + E[g]**2
    return mean_square, variance


def _smoothgrad_squared(grad, x, first, *, samples, noise, seed):
    """SmoothGrad-Squared (Hooker et al. 2019): ``mean_k g(x_i + sigma_i eps_k)**2`` per channel.

    The same noisy copies as ``smoothgrad`` (same ``samples``, ``noise``, ``seed``: the same
    draws). One pass over the draws gives VarGrad too: ``extras["vargrad"]`` holds it, so both
    cost one method's samples. Map: max over channels, as for SmoothGrad.

    Returns:
        (N, H, W, C) float32, non-negative; extras ``{"vargrad": (N, H, W, C) float32}``.
    """
    mean_square, variance = _noise_moments(grad, x, first, samples=samples, noise=noise, seed=seed)
    return mean_square.astype(np.float32), {"vargrad": variance.astype(np.float32)}


def _vargrad(grad, x, first, *, samples, noise, seed):
    """VarGrad (Adebayo et al. 2018): the variance over SmoothGrad's noisy copies of the
    gradient, per channel, ``mean_k (g_k - mean_j g_j)**2`` (the 1/n population variance).

    The same noisy copies as ``smoothgrad``; ``extras["smoothgrad_squared"]`` holds
    SmoothGrad-Squared from the same pass. Map: max over channels. ``noise=0`` gives zeros.

    Returns:
        (N, H, W, C) float32, non-negative; extras ``{"smoothgrad_squared": (N, H, W, C)}``.
    """
    mean_square, variance = _noise_moments(grad, x, first, samples=samples, noise=noise, seed=seed)
    return variance.astype(np.float32), {"smoothgrad_squared": mean_square.astype(np.float32)}


def _noise_check(method):
    """The option check of a noise method (``smoothgrad`` and those sharing its draws)."""

    def check(options):
        _check_int(method, options, "samples")
        noise = options["noise"]
        if not _is_real(noise):
            raise _option_error(
                method, "noise", "a float >= 0 (a fraction of the input range)", noise, TypeError
            )
        if not math.isfinite(noise) or noise < 0:
            raise _option_error(
                method, "noise", "a finite float >= 0 (a fraction of the input range)", noise
            )
        _check_int(method, options, "seed", low=0)

    return check


# ------------------------------------------------------------------------------------------------
# Integrated gradients (Sundararajan et al. 2017)
# ------------------------------------------------------------------------------------------------


def blur_sigma(image_shape) -> float:
    """Gaussian sigma, in pixels, of the ``baseline="blur"`` of IG: max(H, W) / 16."""
    return max(int(image_shape[0]), int(image_shape[1])) / 16.0


def path_alphas(steps: int) -> np.ndarray:
    """Midpoint rule on [0, 1] with ``steps`` intervals: ``alphas[k] = (k + 0.5) / steps``."""
    return (np.arange(steps, dtype=np.float64) + 0.5) / steps


def _resolve_baseline(x, baseline) -> np.ndarray:
    """The baseline images (N, H, W, C) float32 for ``x``."""
    if baseline is None:
        return np.zeros_like(x)
    if isinstance(baseline, str):  # "blur", the only string _check_ig accepts
        from scipy import ndimage

        s = blur_sigma(x.shape[1:3])
        return ndimage.gaussian_filter(x, sigma=(0, s, s, 0), mode="nearest").astype(np.float32)
    if _is_real(baseline):
        return np.full_like(x, np.float32(baseline))
    value = baseline(x) if callable(baseline) else baseline
    value = np.asarray(value, dtype=np.float32)
    try:
        return np.ascontiguousarray(np.broadcast_to(value, x.shape))
    except ValueError:
        source = "the callable's result" if callable(baseline) else "the array"
        raise ValueError(
            "Invalid value for option `baseline` of method='integrated_gradients': "
            f"{source} has shape {value.shape}, which does not broadcast to the images' shape "
            f"{x.shape}."
        ) from None


def _integrated_gradients(grad, x, first, *, steps, baseline):
    """(x - x') times the midpoint-rule average of the gradient on the straight path x' -> x.

    ``steps`` gradient evaluations at ``alpha = (k + 0.5) / steps``, plus one at the baseline
    itself (alpha = 0) for f(x') in the completeness gap: ``steps + 1`` rows per image. The
    midpoint rule never evaluates the gradient exactly at the baseline, where a ReLU network
    with zero biases and a zero baseline has every unit at its kink (a zero gradient the
    trapezoid rule would weigh in), and its error for smooth paths is half the trapezoid's.

    Extras: ``completeness_gap`` (N,) = sum(attributions) - (f(x) - f(x')), and ``score_delta``
    (N,) = f(x) - f(x'), both float64, where f is the differentiated score (the explained class's
    logit).
    """
    base = _resolve_baseline(x, baseline)
    diff = x - base
    n = len(x)
    alphas = np.concatenate([[0.0], path_alphas(steps)]).astype(np.float32)  # row 0: x' itself
    total = np.zeros(x.shape, np.float64)  # sum of the path gradients
    base_scores = np.empty(n, np.float64)

    def fill(k, i0, i1, out):
        np.multiply(diff[i0:i1], alphas[k], out=out)
        out += base[i0:i1]

    def consume(k, i0, i1, result, j):
        if k == 0:
            base_scores[i0:i1] = _scores(result)[j : j + i1 - i0]
        else:
            total[i0:i1] += result.grads[j : j + i1 - i0]

    _perturbed_gradients(grad, x, first.classes, steps + 1, fill, consume)
    attributions = diff * (total / steps)  # float64
    delta = _scores(first).astype(np.float64) - base_scores
    gap = attributions.reshape(n, -1).sum(axis=1) - delta
    return attributions.astype(np.float32), {"completeness_gap": gap, "score_delta": delta}


def _scores(result) -> np.ndarray:
    """The differentiated score per example (logit of the class, when the result has none)."""
    if getattr(result, "scores", None) is not None:
        return np.asarray(result.scores)
    return np.asarray(result.logits)[np.arange(len(result.classes)), result.classes]


def _check_ig(options):
    _check_int("integrated_gradients", options, "steps")
    baseline = options["baseline"]
    expected = 'None (zeros), a float, "blur", an array broadcastable to the images, or a callable'
    if baseline is None or callable(baseline):
        return
    if isinstance(baseline, str):
        if baseline != "blur":
            raise _option_error("integrated_gradients", "baseline", expected, baseline)
        return
    if _is_real(baseline):
        if not math.isfinite(baseline):
            raise _option_error("integrated_gradients", "baseline", expected, baseline)
        return
    if isinstance(baseline, bool) or not isinstance(baseline, (np.ndarray, list, tuple)):
        raise _option_error("integrated_gradients", "baseline", expected, baseline, TypeError)
    array = np.asarray(baseline)
    if array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
        raise ValueError(
            "Invalid value for option `baseline` of method='integrated_gradients': expected a "
            f"finite numeric array, received an array of dtype {array.dtype}."
        )


def _check_ig_shape(options, input_shape):
    baseline = options["baseline"]
    if not isinstance(baseline, (np.ndarray, list, tuple)):
        return
    shape = np.shape(baseline)
    ok = len(shape) <= len(input_shape) + 1
    if ok:
        try:
            ok = np.broadcast_shapes(shape, (1, *input_shape))[1:] == tuple(input_shape)
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(
            "Invalid value for option `baseline` of method='integrated_gradients': an array of "
            f"shape {shape} does not broadcast to images of shape (N, *{tuple(input_shape)})."
        )


# ------------------------------------------------------------------------------------------------
# Grad-CAM (Selvaraju et al. 2017)
# ------------------------------------------------------------------------------------------------


def resize_bilinear(maps: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of (N, h, w) maps to (N, H, W): half-pixel centres, edges clamped, no
    antialiasing, as ``tf.image.resize``; ``keras.ops.image.resize`` on the active backend.

    Interpolation weights are non-negative and sum to 1, so non-negative maps stay non-negative.
    """
    resized = keras.ops.image.resize(
        np.asarray(maps, np.float32)[..., None],
        (int(size[0]), int(size[1])),
        interpolation="bilinear",
        antialias=False,
        data_format="channels_last",
    )
    return keras.ops.convert_to_numpy(resized)[..., 0]


def token_grid(num_tokens: int, image_hw, layer: str = "the layer") -> tuple[int, int, int]:
    """How a transformer layer's ``num_tokens`` tokens map onto the image: ``(extra, h, w)``.

    A ViT's tokens are ``extra`` leading tokens (a class token: 1; none for a pooled head: 0)
    followed by the ``h x w`` patch grid in row-major order, with ``h / w`` the image's aspect
    ratio ``H / W``. ``extra`` 0 is tried first, then 1, then 2 (a class and a distillation
    token, as in DeiT).

    Raises:
        ValueError: when no such grid exists, saying why Grad-CAM cannot read the layer.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    for extra in (0, 1, 2):
        patches = num_tokens - extra
        if patches < 2:
            continue
        # h * w = patches and h / w = H / W: w = sqrt(patches * W / H).
        w = int(round(math.sqrt(patches * width / height)))
        if w > 0 and patches % w == 0 and (patches // w) * width == w * height:
            return extra, patches // w, w
    raise ValueError(
        f"Invalid value for option `layer` of method='gradcam': {layer} outputs {num_tokens} "
        f"tokens, which are not a patch grid of the image's aspect ratio {height}x{width} after "
        "0, 1 or 2 leading class tokens, so Grad-CAM cannot place them on the image. Name a "
        "layer whose output is (N, h, w, k), or a transformer block whose tokens are a grid."
    )


def layer_grid(first, image_shape):
    """A layer's activations and gradients as (N, h, w, k) grids, with the grid's extras.

    4-D outputs are returned as they are. A transformer block's (N, tokens, d) output has its
    leading class token(s) dropped and its patch tokens laid out on the patch grid
    (:func:`token_grid`); ``extras["dropped_tokens"]`` says how many were dropped.
    """
    activations = np.asarray(first.activations, np.float32)
    grads = np.asarray(first.grads, np.float32)
    if activations.ndim == 4:
        return activations, grads, {}
    n, tokens, k = activations.shape
    extra, h, w = token_grid(tokens, image_shape[:2])
    patch_grads = grads[:, extra:]
    if extra and not patch_grads.any() and grads[:, :extra].any():
        warnings.warn(
            "Grad-CAM: the class score depends on this block's class token only, not on its "
            "patch tokens (the last block of a class-token ViT: the head reads the class token "
            "and nothing reads the patch tokens after it), so the map is empty. Name an earlier "
            "block as `layer`, e.g. the one before the last.",
            UserWarning,
            stacklevel=4,
        )
    grid = activations[:, extra:].reshape(n, h, w, k)
    return grid, patch_grads.reshape(n, h, w, k), {"dropped_tokens": extra}


def _gradcam(grad, x, first, **_):
    """ReLU(sum_k alpha_k A_k), alpha_k = spatial mean of d score / d A_k, resized to the input.

    ``first`` is a :class:`gradients.LayerGradientResult`. The attributions are the map itself
    as (N, H, W, 1): Grad-CAM has no per-channel input attribution. A transformer block's tokens
    are first laid out on their patch grid (:func:`layer_grid`).
    """
    activations, grads, extras = layer_grid(first, x.shape[1:])  # (N, h, w, k) each
    n, h, w, k = activations.shape
    alpha = grads.mean(axis=(1, 2), dtype=np.float64)  # (N, k)
    weighted = activations.reshape(n, h * w, k) @ alpha.astype(np.float32)[:, :, None]
    cam = np.maximum(weighted.reshape(n, h, w), 0.0)  # (N, h, w)
    return resize_bilinear(cam, x.shape[1:3])[..., None].astype(np.float32), extras


def _gradcam_plus_plus(grad, x, first, **_):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018): ReLU(sum_k w_k A_k), resized to the input.

    With ``g = d S / d A`` (S the class logit) and the paper's exponential score ``Y = exp(S)``,
    whose derivatives are ``exp(S) g``, ``exp(S) g**2`` and ``exp(S) g**3`` wherever the network
    after A is piecewise linear (the paper's eq. 19)::

        alpha_ij^k = g_ij^k**2 / (2 g_ij^k**2 + sum_ab A_ab^k g_ij^k**3)   (0 where g = 0)
        w_k = sum_ij alpha_ij^k ReLU(g_ij^k)

    The paper's weights carry a further factor ``exp(S)`` (``ReLU(d Y / d A)``), one positive
    number per image: it scales the map and changes nothing in its shape, and overflows float32
    for logits above 88, so it is left out. Unlike tf-keras-vis, alpha is not renormalised to
    sum to 1 per channel (the paper does not). Tokens of a transformer block are laid out on
    their patch grid first (:func:`layer_grid`).
    """
    activations, grads, extras = layer_grid(first, x.shape[1:])  # (N, h, w, k) each
    n, h, w, k = activations.shape
    # Only positions with g > 0 weigh in (ReLU(g)), and there alpha * g = g / (2 + S_k g) with
    # S_k = sum_ab A_ab^k: the formula above with g**2 cancelled, in float32 and 3 passes over
    # the activations instead of 10 in float64 (measured, 32 probes 64x64, last conv 16x16x64:
    # 8.6x -> 1.3x Grad-CAM's time). For g <= 0 the term is 0 / 2 = 0.
    totals = activations.sum(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    positive = np.maximum(grads, 0.0)
    denominator = positive * totals
    denominator += 2.0
    terms = np.divide(positive, denominator, out=np.zeros_like(positive), where=denominator != 0)
    weights = terms.sum(axis=(1, 2), dtype=np.float64).astype(np.float32)  # (N, k)
    weighted = activations.reshape(n, h * w, k) @ weights[:, :, None]
    cam = np.maximum(weighted.reshape(n, h, w), 0.0)
    return resize_bilinear(cam, x.shape[1:3])[..., None].astype(np.float32), extras


def _layer_check(method):
    """The option check of a layer method (``gradcam``, ``gradcam_plus_plus``)."""

    def check(options):
        layer = options["layer"]
        if layer is None:
            return
        if not isinstance(layer, str):
            raise _option_error(method, "layer", "a layer name (str) or None", layer, TypeError)
        if not layer:
            raise _option_error(method, "layer", "a non-empty layer name or None", layer)

    return check


_NOISE_DEFAULTS = {"samples": 25, "noise": 0.15, "seed": 0}

METHODS: dict[str, Method] = {
    "vanilla": Method("vanilla", _vanilla, max_abs_over_channels, {}),
    "gradient_x_input": Method("gradient_x_input", _gradient_x_input, abs_sum_over_channels, {}),
    "smoothgrad": Method(
        "smoothgrad",
        _smoothgrad,
        max_abs_over_channels,
        dict(_NOISE_DEFAULTS),
        _noise_check("smoothgrad"),
    ),
    "smoothgrad_squared": Method(
        "smoothgrad_squared",
        _smoothgrad_squared,
        max_abs_over_channels,
        dict(_NOISE_DEFAULTS),
        _noise_check("smoothgrad_squared"),
    ),
    "vargrad": Method(
        "vargrad", _vargrad, max_abs_over_channels, dict(_NOISE_DEFAULTS), _noise_check("vargrad")
    ),
    "integrated_gradients": Method(
        "integrated_gradients",
        _integrated_gradients,
        abs_sum_over_channels,
        {"steps": 64, "baseline": None},
        _check_ig,
        check_shape=_check_ig_shape,
    ),
    "gradcam": Method(
        "gradcam", _gradcam, single_channel, {"layer": None}, _layer_check("gradcam"), wrt="layer"
    ),
    "gradcam_plus_plus": Method(
        "gradcam_plus_plus",
        _gradcam_plus_plus,
        single_channel,
        {"layer": None},
        _layer_check("gradcam_plus_plus"),
        wrt="layer",
    ),
}


def get_method(name) -> Method:
    """Look a method up by name, with an error that lists the valid names."""
    if not isinstance(name, str):
        raise TypeError(
            f"Invalid type for argument `method`: expected one of {sorted(METHODS)} as a str, "
            f"received {type(name).__name__}."
        )
    if name not in METHODS:
        raise ValueError(
            f"Invalid value for argument `method`: expected one of {sorted(METHODS)}, "
            f"received method={name!r}."
        )
    return METHODS[name]


def validate_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Return the method's full option dict (defaults filled in), rejecting unknown options."""
    method = get_method(name)
    unknown = sorted(set(options) - set(method.defaults))
    if unknown:
        allowed = sorted(method.defaults) or "none"
        raise TypeError(
            f"Unknown option(s) {unknown} for method={name!r}; its options are: {allowed}."
        )
    merged = {**method.defaults, **options}
    if method.check is not None:
        method.check(merged)
    return merged
