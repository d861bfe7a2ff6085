"""The model-randomisation sanity check of saliency maps (Adebayo et al., NeurIPS 2018).

A map that explains a model must change when the model's weights are replaced by random ones.
The check re-initialises the weights top-down, cascading block by block (the output layer first,
then the block below it as well, and so on), and compares the maps of each partly random model
with the trained model's maps: Spearman's rank correlation and SSIM, image by image, as in the
paper. Maps that keep a high rank correlation once the top blocks are random show the input
(edges, bright regions), whatever the model learned; a warning says so in plain words.

The randomised weights live in a copy of the model (``keras.models.clone_model`` and the trained
weights): the user's model, its optimizer and every random stream are untouched (Python's and
NumPy's global generators are saved and restored around the copy, whose layers draw default
seeds from Python's ``random``). The copy and its compiled gradient are kept for the next check,
so a later check costs one saliency pass per randomised block, plus the copy of the weights.

Public: :func:`sanity_check`, :class:`SanityResult`; :class:`SanityCheck` is what the callback
runs once per fit.
"""

from __future__ import annotations

import random
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import keras
import numpy as np
from scipy import ndimage

from keras_saliency_monitor.attribution import explain
from keras_saliency_monitor.signals import stability

__all__ = ["SanityCheck", "SanityResult", "layer_blocks", "sanity_check", "ssim"]

#: Blocks re-initialised by default (the top ones): the paper's curve is read from the top.
DEFAULT_MAX_BLOCKS = 4
#: Rank correlation with the trained maps, all blocks random, above which maps "survive"
#: randomisation. Set on the CNNs of tests/test_sanity.py (probe seed 1: the five gradient methods
#: end at rho <= 0.16 without pooling) and of the 24x24 max-pooling variants tried while designing
#: it (SmoothGrad up to 0.62, vanilla up to 0.20), with an edge map at 1.0: 0.7 leaves every
#: gradient method seen a margin. Reported on other cases: benchmarks/README.md (faithfulness).
DEFAULT_THRESHOLD = 0.7
# Layers that normalise the output of the layer before them join that layer's block.
_NORMALISATION = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
)


@dataclass(frozen=True)
class SanityResult:
    """The cascade of one sanity check; step ``k`` has ``blocks[0] .. blocks[k]`` random."""

    method: str  # the method's name (or the custom map function's __name__)
    blocks: tuple  # (B,) tuples of layer names re-initialised at each step, top block first
    rank_correlation: np.ndarray  # (B,) mean over images of Spearman's rho vs the trained maps
    ssim: np.ndarray  # (B,) mean over images of the SSIM vs the trained maps
    rank_correlation_per_image: np.ndarray = field(repr=False)  # (B, N)
    ssim_per_image: np.ndarray = field(repr=False)  # (B, N)
    threshold: float = DEFAULT_THRESHOLD  # rank correlation above which maps survive

    @property
    def survives(self) -> bool:
        """True when the maps of the fully randomised cascade still rank like the trained ones."""
        return bool(self.rank_correlation[-1] > self.threshold)

    @property
    def message(self) -> str | None:
        """The plain-words warning when the maps survive randomisation, else None."""
        if not self.survives:
            return None
        names = ", ".join("+".join(b) for b in self.blocks)
        return (
            f"Saliency sanity check: the {self.method!r} maps hardly change when the model's "
            f"top {len(self.blocks)} layer block(s) ({names}) are replaced by random weights: "
            f"rank correlation {self.rank_correlation[-1]:.2f} (SSIM {self.ssim[-1]:.2f}) with "
            f"the trained model's maps, above {self.threshold:g}. Maps that stay the same when "
            "the weights are random show the image itself (edges, bright areas), not what the "
            "model learned (Adebayo et al. 2018); do not read them as the model's reasons. "
            "Vanilla gradients, gradient x input, SmoothGrad, integrated gradients and Grad-CAM "
            "pass this check on a small CNN."
        )

    def numbers(self) -> dict:
        """The curve as ``saliency_sanity_*`` numbers: the last step, then one per step."""
        values = [self.rank_correlation[-1], self.ssim[-1]]
        for rho, s in zip(self.rank_correlation, self.ssim):
            values += [rho, s]
        return dict(zip(number_names(len(self.rank_correlation)), map(float, values)))


def number_names(steps: int) -> list[str]:
    """The names of :meth:`SanityResult.numbers` for a check of ``steps`` blocks, in order."""
    names = ["saliency_sanity_rank_correlation", "saliency_sanity_ssim"]
    for k in range(1, steps + 1):
        names += [f"saliency_sanity_rank_correlation_top{k}", f"saliency_sanity_ssim_top{k}"]
    return names


# ------------------------------------------------------------------------------------------------
# Similarity of two sets of maps, image by image.
# ------------------------------------------------------------------------------------------------


def rank_correlations(a, b) -> np.ndarray:
    """(N,) Spearman's rho of map ``a[i]`` and ``b[i]`` over their pixels, ties at their average
    rank: ``scipy.stats.spearmanr`` per pair, computed as the callback's stability is
    (``stability.rank_maps``, vectorised: 32 maps 64x64 in 8 ms where 32 ``spearmanr`` calls took
    63 ms, more than the vanilla pass they judge). ``a`` or ``b`` may be ranked already
    (:class:`stability.RankedMaps`): the trained maps are ranked once per check.

    A constant map ranks nothing: its correlation is 0 (scipy would return NaN).
    """
    a = a if isinstance(a, stability.RankedMaps) else stability.rank_maps(np.asarray(a, np.float32))
    b = b if isinstance(b, stability.RankedMaps) else stability.rank_maps(np.asarray(b, np.float32))
    return np.nan_to_num(stability.rank_correlation_of(a, b), nan=0.0)


def _unit(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (maps are >= 0): [0, 1], as the paper compares them."""
    m = np.asarray(maps, np.float64)
    top = m.reshape(len(m), -1).max(axis=1)[:, None, None]
    return np.divide(m, top, out=np.zeros_like(m), where=top > 0)


class _Moments(NamedTuple):
    """Local Gaussian-weighted moments of maps scaled to [0, 1], for SSIM."""

    unit: np.ndarray  # (N, H, W) float32: the maps divided by their maximum
    mean: np.ndarray  # (N, H, W): local mean
    variance: np.ndarray  # (N, H, W): local variance


def _blur(t, sigma=1.5):
    """Each map on its own (no smoothing across the first axis), reflected at the borders."""
    return ndimage.gaussian_filter(t, (0, sigma, sigma), mode="reflect", truncate=3.5)


def _moments(maps) -> _Moments:
    x = _unit(maps).astype(np.float32)  # float32: half the filtering time of float64
    mean = _blur(x)
    return _Moments(x, mean, _blur(x * x) - mean * mean)


def ssim(a, b) -> np.ndarray:
    """(N,) structural similarity of maps ``a[i]`` and ``b[i]``, each scaled to [0, 1] first.

    Wang et al. 2004 (IEEE TIP), eq. 13, with their constants K1 = 0.01, K2 = 0.03, dynamic range
    1 and a Gaussian window of sigma 1.5 pixels (``scipy.ndimage.gaussian_filter``, reflected at
    the borders), averaged over all pixels. Written here because no SSIM library is a
    dependency (scikit-image's would be the only reason to install it). ``a`` may be the
    ``_moments`` of the trained maps, computed once per check.
    """
    p = a if isinstance(a, _Moments) else _moments(a)
    q = _moments(b)
    c1, c2 = 0.01**2, 0.03**2
    cov = _blur(p.unit * q.unit) - p.mean * q.mean
    top = (2 * p.mean * q.mean + c1) * (2 * cov + c2)
    s = top / ((p.mean**2 + q.mean**2 + c1) * (p.variance + q.variance + c2))
    return s.reshape(len(s), -1).mean(axis=1, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Blocks, the copy, re-initialisation.
# ------------------------------------------------------------------------------------------------


def _leaf_layers(model) -> list:
    """The layers holding weights, in the model's order (graph order for Functional and
    Sequential models), looking inside nested models."""
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_leaf_layers(layer))
        elif layer.weights:
            out.append(layer)
    return out


def layer_blocks(model) -> list[tuple]:
    """The model's layer blocks, top (output side) first: each a tuple of layers.

    A block is a layer with weights, together with the normalisation layers (BatchNorm,
    LayerNorm, GroupNorm) that directly follow it; nested models are looked into.
    """
    blocks = []
    for layer in _leaf_layers(model):
        if isinstance(layer, _NORMALISATION) and blocks:
            blocks[-1].append(layer)
        else:
            blocks.append([layer])
    return [tuple(b) for b in reversed(blocks)]


def _resolve_blocks(clone, blocks, max_blocks) -> list[tuple]:
    """``blocks`` (None, an int, or names) as tuples of the copy's layers, top first."""
    every = layer_blocks(clone)
    if blocks is None or isinstance(blocks, (int, np.integer)):
        count = max_blocks if blocks is None else int(blocks)
        return every[: max(1, count)]
    by_name = {layer.name: layer for layer in _leaf_layers(clone)}
    out = []
    for block in blocks:
        names = [block] if isinstance(block, str) else list(block)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(
                f"Invalid value for argument `blocks`: no layer with weights named {missing}. "
                f"The model's blocks, top first: {[[x.name for x in b] for b in every]}."
            )
        out.append(tuple(by_name[n] for n in names))
    return out


class CannotCopy(ValueError):
    """Keras cannot clone the model, so the check cannot randomise a copy of it."""


class _GlobalRandomState:
    """Saves Python's and NumPy's global random states and restores them on exit."""

    def __enter__(self):
        self._python, self._numpy = random.getstate(), np.random.get_state()
        return self

    def __exit__(self, *exc):
        random.setstate(self._python)
        np.random.set_state(self._numpy)
        return False


def copy_model(model):
    """A copy of ``model`` with its weights (and BatchNorm statistics), sharing no variable.

    Raises:
        CannotCopy: (a ValueError) when Keras cannot clone the model (a subclassed model without
            ``get_config``), saying what to do.
    """
    with _GlobalRandomState():
        try:
            clone = keras.models.clone_model(model)
        except Exception as err:  # noqa: BLE001 - any failure of cloning means the same here
            raise CannotCopy(
                f"The saliency sanity check needs a copy of the model, and Keras cannot clone "
                f"{model.name!r} ({type(err).__name__}: {err}). Build it with the Functional or "
                "Sequential API, or give the subclassed model get_config/from_config."
            ) from None
        if not clone.built:
            clone.build((None, *model.inputs[0].shape[1:]))
    clone.set_weights(model.get_weights())
    return clone


def _owner(layer, variable):
    """The (sub)layer that created ``variable`` (a MultiHeadAttention's query projection...)."""
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        own = list(sub._trainable_variables) + list(sub._non_trainable_variables)
        if any(v is variable for v in own):
            return sub
    return layer


def _fresh_value(layer, variable, seed: int) -> np.ndarray:
    """A re-initialised value for ``variable``: its layer's own initializer, seeded, or when it
    has none a normal draw with the trained variable's mean and standard deviation."""
    owner = _owner(layer, variable)
    name = variable.name.split("/")[-1]
    init = getattr(owner, f"{name}_initializer", None) or getattr(
        owner, f"_{name}_initializer", None
    )
    shape = tuple(variable.shape)
    if init is not None and callable(init):
        config = init.get_config()
        if "seed" in config:
            config["seed"] = seed
        value = init.__class__.from_config(config)(shape, dtype="float32")
        return np.asarray(keras.ops.convert_to_numpy(value), np.float32)
    trained = np.asarray(keras.ops.convert_to_numpy(variable.value), np.float64)
    rng = np.random.default_rng(seed)
    return (trained.mean() + trained.std() * rng.standard_normal(shape)).astype(np.float32)


def _randomise(block, seed: int) -> None:
    """Re-initialise every float variable of the layers of ``block`` (layers of the copy)."""
    k = 0
    for layer in block:
        for variable in layer.weights:
            if not keras.backend.is_float_dtype(variable.dtype):
                continue
            value = _fresh_value(layer, variable, seed * 100_003 + k)
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
            k += 1


# ------------------------------------------------------------------------------------------------
# The check.
# ------------------------------------------------------------------------------------------------


class SanityCheck:
    """A reusable sanity check of one method: its copy of the model and compiled gradient are
    kept, keyed weakly on the model, for the next run (the callback runs it once per fit).

    Args: those of :func:`sanity_check` but ``model`` and ``images``.
    """

    def __init__(
        self,
        method="vanilla",
        *,
        target="predicted",
        output=None,
        batch_size=32,
        blocks=None,
        max_blocks=DEFAULT_MAX_BLOCKS,
        seed=0,
        threshold=DEFAULT_THRESHOLD,
        **options,
    ):
        if callable(method):
            if options:
                raise TypeError(
                    f"Unknown option(s) {sorted(options)}: a custom map function takes none."
                )
            self.map_fn, self.name = method, getattr(method, "__name__", "custom")
        else:
            # Fixed classes after randomisation: the trained model's (or the user's) choice.
            fixed = "label" if isinstance(target, str) and target == "predicted" else target
            self._explainer_args = (method, fixed, output, batch_size, options)
            explain.Explainer(method, fixed, output, batch_size, **options)  # checks them now
            self.map_fn, self.name = None, method
        self.method, self.target, self.output = method, target, output
        self.batch_size, self.options = batch_size, options
        if blocks is not None and not isinstance(blocks, (int, np.integer, Sequence)):
            raise TypeError(
                "Invalid type for argument `blocks`: expected None, a number of top blocks, or "
                f"a list of layer names (or lists of names), received {type(blocks).__name__}."
            )
        if isinstance(blocks, (int, np.integer)) and blocks < 1:
            raise ValueError(
                f"Invalid value for argument `blocks`: expected at least 1, received {blocks}."
            )
        self.blocks, self.max_blocks, self.seed = blocks, int(max_blocks), int(seed)
        self.threshold = float(threshold)
        self._model_ref = None
        self._clone = self._explainer = None

    def __getstate__(self):
        """Copies (a deep-copied monitor, keras-tuner's per trial) hold no model of this one's:
        the copy of the model and its bound explainer are made again at the copy's first run.
        Without this, a copy run on the same model kept an unbound copy of the explainer."""
        return {**self.__dict__, "_model_ref": None, "_clone": None, "_explainer": None}

    def _prepare(self, model, x):
        """The copy with the trained weights, and its explainer (built once per model)."""
        if self._model_ref is None or self._model_ref() is not model:
            self._clone = copy_model(model)
            self._explainer = None
            self._model_ref = weakref.ref(model)
        else:
            self._clone.set_weights(model.get_weights())
        if self.map_fn is None and self._explainer is None:
            method, fixed, output, batch_size, options = self._explainer_args
            self._explainer = explain.Explainer(method, fixed, output, batch_size, **options)
            self._explainer.bind(self._clone, x.shape[1:], sample=x[:1])
        return self._clone

    def _maps(self, clone, x, labels):
        if self.map_fn is not None:
            return np.asarray(self.map_fn(clone, x), np.float32)
        return self._explainer.explain(x, labels).maps

    def run(self, model, images, trained_maps=None, classes=None, labels=None) -> SanityResult:
        """Run the cascade on ``images``; ``trained_maps`` and ``classes`` (the explained class
        of each image) from the trained model when already computed (the callback's epoch).

        The user's model is only read (its weights copied); it ends bit-identical.
        """
        x = explain._as_images(images)
        if trained_maps is None:
            if self.map_fn is not None:
                trained_maps = np.asarray(self.map_fn(model, x), np.float32)
            else:
                method, _, output, batch_size, options = self._explainer_args
                result = explain.explain(
                    model, x, method, self.target, labels, output, batch_size, **options
                )
                trained_maps, classes = result.maps, result.classes
        clone = self._prepare(model, x)
        fixed_labels = classes if self._fixed_by_classes() else labels
        steps = _resolve_blocks(clone, self.blocks, self.max_blocks)
        rhos, ssims = [], []
        trained_ranks = stability.rank_maps(np.asarray(trained_maps, np.float32))
        trained_moments = _moments(trained_maps)
        with _GlobalRandomState():
            for k, block in enumerate(steps):
                _randomise(block, self.seed + k)
                maps = self._maps(clone, x, fixed_labels)
                rhos.append(rank_correlations(trained_ranks, maps))
                ssims.append(ssim(trained_moments, maps))
        rhos, ssims = np.array(rhos), np.array(ssims)
        return SanityResult(
            method=self.name,
            blocks=tuple(tuple(layer.name for layer in b) for b in steps),
            rank_correlation=rhos.mean(axis=1),
            ssim=ssims.mean(axis=1),
            rank_correlation_per_image=rhos,
            ssim_per_image=ssims,
            threshold=self.threshold,
        )

    def number_names(self, model) -> list[str]:
        """The names of the numbers a run on ``model`` logs (its blocks are read, not changed);
        raises as :meth:`run` would when ``blocks`` names no layer of the model."""
        return number_names(len(_resolve_blocks(model, self.blocks, self.max_blocks)))

    def _fixed_by_classes(self) -> bool:
        return isinstance(self.target, str) and self.target == "predicted"


def sanity_check(
    model,
    images,
    method="vanilla",
    *,
    target="predicted",
    labels=None,
    output=None,
    batch_size=32,
    blocks=None,
    max_blocks=DEFAULT_MAX_BLOCKS,
    seed=0,
    threshold=DEFAULT_THRESHOLD,
    warn=True,
    **options,
) -> SanityResult:
    """Model-randomisation sanity check of a saliency method (Adebayo et al. 2018).

    The top blocks of a copy of ``model`` are re-initialised one after another (cascading: step
    k has the top k + 1 blocks random), each variable with its layer's own initializer (what a
    fresh layer starts from), seeded. At each step the maps of ``images`` are compared with the
    trained model's maps: Spearman's rank correlation and SSIM per image, averaged. The explained
    class stays the one the trained model explained. ``model`` is never changed.

    Args:
        model: a built Keras 3 model (Functional or Sequential; a subclassed one needs
            ``get_config``, to be cloned).
        images: (N, H, W, C) images, as the model sees them.
        method: a method name (see :func:`compute_saliency`), or a custom map function
            ``(model, images) -> (N, H, W)`` maps. Defaults to "vanilla".
        target: which class to explain, as for :func:`compute_saliency`. Defaults to
            "predicted".
        labels: (N,) class ids for ``target="label"``.
        output: the output to explain, for multi-output models.
        batch_size: images per compiled gradient call. Defaults to 32.
        blocks: None (the top ``max_blocks`` blocks of :func:`layer_blocks`: a layer with
            weights and the normalisation layers after it), a number of top blocks, or a list of
            layer names or lists of names, top block first.
        max_blocks: how many top blocks by default. Defaults to 4.
        seed: seed of the re-initialisation. Defaults to 0.
        threshold: rank correlation, after the last step, above which the maps count as
            surviving randomisation (and a warning is issued). Defaults to 0.7.
        warn: issue a ``UserWarning`` when the maps survive. Defaults to True.
        **options: the method's options.

    Returns:
        A :class:`SanityResult`; its ``numbers()`` are what the callback logs.

    Raises:
        ValueError, TypeError: for invalid arguments, naming them.

    Example:
        >>> result = sanity_check(model, x_val[:16], method="smoothgrad")
        >>> result.rank_correlation  # one value per randomised block, top first
    """
    check = SanityCheck(
        method,
        target=target,
        output=output,
        batch_size=batch_size,
        blocks=blocks,
        max_blocks=max_blocks,
        seed=seed,
        threshold=threshold,
        **options,
    )
    result = check.run(model, images, labels=labels)
    if warn and result.message is not None:
        warnings.warn(result.message, UserWarning, stacklevel=2)
    return result
