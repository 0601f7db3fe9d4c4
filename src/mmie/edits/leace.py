"""LEACE concept erasure: a streaming fitter and a frozen, device-movable eraser.

LEACE (LEAst-squares Concept Erasure, Belrose et al. 2023, https://arxiv.org/abs/2306.03819)
finds the affine map ``r(x) = x - W⁺ U Uᵀ W (x - μ)`` that makes the representation ``x``
linearly uncorrelated with a concept ``z`` (``Cov(r(X), Z) = 0``, so no linear classifier
beats a constant predictor on the erased features) while moving ``x`` as little as possible
in the least-squares sense. Here ``μ`` is the mean of ``x``, ``W = Σ_XX^{-1/2}`` whitens
``x`` and ``U`` spans the left singular vectors of ``W Σ_XZ``. The ``orth`` variant uses
``W = I`` (an orthogonal projection away from the cross-covariance directions).

This module is pure maths: :class:`LeaceFitter` accumulates mean, covariance and
cross-covariance statistics in float64 from batches of features and labels, and hands back a
:class:`LeaceEraser`, an immutable object that stores the rank-``k`` update as two thin
factors and is applied with ``__call__``. Model plumbing lives in :mod:`mmie.edits.scrubber`.

Definitions follow the reference implementation (the ``concept-erasure`` package): Bessel
corrected covariances, optional Ledoit-Wolf-style linear shrinkage of ``Σ_XX``, an
eigenvalue cutoff like ``torch.linalg.pinv``'s for the whitening, and singular values of
``W Σ_XZ`` at or below ``svd_tol`` discarded.

The defaults differ from ``concept-erasure``'s (no shrinkage, no trace constraint); see
:class:`LeaceFitter`.

Example:
    >>> import torch
    >>> from mmie.edits.leace import LeaceFitter
    >>> g = torch.Generator().manual_seed(0)
    >>> z = torch.randint(0, 2, (500,), generator=g)
    >>> x = torch.randn(500, 8, generator=g) + 2.0 * z[:, None]
    >>> eraser = LeaceFitter(8, 2).update(x, z).fit()
    >>> xe = eraser(x)
    >>> bool((xe[z == 1].mean(0) - xe[z == 0].mean(0)).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from mmie._io import read_checkpoint_config, read_safetensors, write_checkpoint
from mmie._validation import integer, positive_int
from mmie.errors import CheckpointError

__all__ = ["ErasureMethod", "LeaceEraser", "LeaceFitter"]

logger = logging.getLogger(__name__)

ErasureMethod = Literal["leace", "orth"]

_FORMAT = "mmie.leace_eraser"
_FORMAT_VERSION = 1
_WEIGHTS_FILE = "eraser.safetensors"
_CONFIG_FILE = "eraser.json"
_KEYS = ("proj_left", "proj_right", "bias")


@dataclass(frozen=True, eq=False)
class LeaceEraser:
    """A frozen affine concept eraser ``r(x) = x - ((x - bias) @ proj_rightᵀ) @ proj_leftᵀ``.

    The full map is ``x ↦ P x + (I - P) bias`` with ``P = I - proj_left @ proj_right``; the
    low-rank factors make applying it cost ``O(d_model · rank)`` per vector. For plain LEACE
    ``proj_left = W⁺U`` and ``proj_right = UᵀW``, where ``rank <= k`` (the concept
    dimension); when the trace constraint of :class:`LeaceFitter` engages, the factors mix
    LEACE with the orthogonal projection and ``rank <= 2k``.

    Build one with :meth:`LeaceFitter.fit` (or :meth:`LeaceEraser.fit` for in-memory
    tensors); move it with :meth:`to`; persist it with :meth:`save` / :meth:`load`.

    Attributes:
        proj_left: ``[d_model, rank]`` left factor.
        proj_right: ``[rank, d_model]`` right factor.
        bias: ``[d_model]`` centre of the erasure (the fitted mean of ``x``).
    """

    proj_left: Tensor
    proj_right: Tensor
    bias: Tensor

    def __post_init__(self) -> None:
        for name in _KEYS:
            if not isinstance(getattr(self, name), Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(getattr(self, name))}")
        left, right, bias = self.proj_left, self.proj_right, self.bias
        if left.ndim != 2 or right.ndim != 2 or bias.ndim != 1:
            raise ValueError(
                "expected proj_left [d_model, rank], proj_right [rank, d_model] and "
                f"bias [d_model], got shapes {tuple(left.shape)}, {tuple(right.shape)}, "
                f"{tuple(bias.shape)}"
            )
        d, k = left.shape
        if right.shape != (k, d) or bias.shape != (d,):
            raise ValueError(
                f"inconsistent eraser shapes: proj_left {tuple(left.shape)} needs proj_right "
                f"{(k, d)} and bias {(d,)}, got {tuple(right.shape)} and {tuple(bias.shape)}"
            )
        if not (left.dtype == right.dtype == bias.dtype) or not left.is_floating_point():
            raise ValueError(
                "proj_left, proj_right and bias must share one floating dtype, got "
                f"{left.dtype}, {right.dtype}, {bias.dtype}"
            )
        if not (left.device == right.device == bias.device):
            raise ValueError(
                "proj_left, proj_right and bias must be on one device, got "
                f"{left.device}, {right.device}, {bias.device}"
            )

    @classmethod
    def fit(cls, x: Tensor, z: Tensor, **kwargs: Any) -> LeaceEraser:
        """Fit an eraser on in-memory tensors in one call.

        Args:
            x: ``[n, d_model]`` features.
            z: ``[n]`` integer class labels, or ``[n, k]`` one-hot / continuous concept.
            **kwargs: options of :class:`LeaceFitter` (``method``, ``shrinkage``,
                ``constrain_cov_trace``, ``svd_tol``, ``num_classes``, ``dtype``,
                ``device``).

        Returns:
            The fitted eraser.
        """
        num_classes = kwargs.pop("num_classes", None)
        if num_classes is None:
            num_classes = _infer_num_classes(z)
        if x.ndim != 2:
            raise ValueError(f"x must be [n, d_model], got shape {tuple(x.shape)}")
        kwargs.setdefault("device", x.device)
        return LeaceFitter(x.shape[1], num_classes, **kwargs).update(x, z).fit()

    @property
    def d_model(self) -> int:
        """Dimension of the features the eraser acts on."""
        return int(self.proj_left.shape[0])

    @property
    def rank(self) -> int:
        """Inner dimension of the factors (number of erased directions, at most)."""
        return int(self.proj_left.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the stored factors."""
        return self.proj_left.dtype

    @property
    def device(self) -> torch.device:
        """Device of the stored factors."""
        return self.proj_left.device

    @property
    def projection(self) -> Tensor:
        """The dense ``[d_model, d_model]`` linear part ``P = I - proj_left @ proj_right``."""
        eye = torch.eye(self.d_model, dtype=self.dtype, device=self.device)
        return eye - self.proj_left @ self.proj_right

    def __call__(self, x: Tensor) -> Tensor:
        """Erase the concept from ``x``.

        Computed in the widest of float32, ``x.dtype`` and the eraser's dtype, and returned in
        ``x``'s dtype. ``x`` is never modified in place.

        Args:
            x: ``[..., d_model]`` features (e.g. ``[batch, seq, d_model]`` hidden states) on
                the eraser's device.

        Returns:
            ``[..., d_model]`` erased features, same dtype and device as ``x``.

        Raises:
            ValueError: if the last dimension is not ``d_model`` or ``x`` is on another
                device (move the eraser once with :meth:`to`, not per call).
        """
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"x must have last dimension d_model={self.d_model}, got shape {tuple(x.shape)}"
            )
        if x.device != self.device:
            raise ValueError(
                f"x is on {x.device} but the eraser is on {self.device}; "
                "move the eraser once with eraser.to(device)"
            )
        compute = torch.promote_types(torch.promote_types(x.dtype, torch.float32), self.dtype)
        xc = x.to(compute)
        left = self.proj_left.to(compute)
        right = self.proj_right.to(compute)
        delta = xc - self.bias.to(compute)  # (..., d)
        # Thin factors first: (..., d) @ (d, k) -> (..., k) @ (k, d) -> (..., d).
        out = xc - (delta @ right.T) @ left.T
        return out.to(x.dtype)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LeaceEraser:
        """Return a copy on ``device`` with factors in ``dtype`` (``None`` keeps the current).

        Args:
            device: target device.
            dtype: target floating dtype (float32 or wider is advisable; :meth:`__call__`
                computes in at least float32 anyway).

        Returns:
            A new eraser (``self`` if nothing changes).
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        device = torch.device(device) if device is not None else self.device
        dtype = dtype if dtype is not None else self.dtype
        if device == self.device and dtype == self.dtype:
            return self
        return LeaceEraser(
            proj_left=self.proj_left.to(device=device, dtype=dtype),
            proj_right=self.proj_right.to(device=device, dtype=dtype),
            bias=self.bias.to(device=device, dtype=dtype),
        )

    def state_dict(self) -> dict[str, Tensor]:
        """The three tensors keyed ``proj_left``, ``proj_right``, ``bias`` (contiguous, CPU)."""
        return {name: getattr(self, name).detach().cpu().contiguous() for name in _KEYS}

    @classmethod
    def from_state_dict(
        cls,
        tensors: dict[str, Tensor],
        *,
        device: torch.device | str | None = None,
        source: str = "state dict",
    ) -> LeaceEraser:
        """Build an eraser from :meth:`state_dict` output, validating keys and shapes.

        Args:
            tensors: mapping with exactly ``proj_left``, ``proj_right`` and ``bias``.
            device: where to place the eraser (default: where the tensors are).
            source: description of where the tensors came from, used in error messages.

        Returns:
            The eraser.

        Raises:
            CheckpointError: on missing or unexpected keys or inconsistent shapes.
        """
        missing = [k for k in _KEYS if k not in tensors]
        unexpected = sorted(set(tensors) - set(_KEYS))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: missing keys {missing}, unexpected keys {unexpected}; "
                f"expected exactly {list(_KEYS)}"
            )
        try:
            eraser = cls(
                proj_left=tensors["proj_left"],
                proj_right=tensors["proj_right"],
                bias=tensors["bias"],
            )
        except ValueError as err:
            raise CheckpointError(f"{source}: {err}") from err
        return eraser.to(device) if device is not None else eraser

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``eraser.safetensors`` and ``eraser.json`` into ``directory`` (created).

        Args:
            directory: output directory.

        Returns:
            The directory path.
        """
        config = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "d_model": self.d_model,
            "rank": self.rank,
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        return write_checkpoint(
            directory,
            tensors=self.state_dict(),
            weights_name=_WEIGHTS_FILE,
            config=config,
            config_name=_CONFIG_FILE,
        )

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, device: torch.device | str | None = None
    ) -> LeaceEraser:
        """Read an eraser written by :meth:`save` (safetensors only, never unpickles).

        Args:
            directory: directory holding ``eraser.safetensors`` and ``eraser.json``.
            device: where to place the tensors (default CPU).

        Returns:
            The eraser.

        Raises:
            FileNotFoundError: if a file is missing.
            CheckpointError: if the config is not an mmie eraser config or shapes disagree.
        """
        path = Path(directory)
        config = read_checkpoint_config(path / _CONFIG_FILE)
        if config.get("format") != _FORMAT:
            raise CheckpointError(f"{path / _CONFIG_FILE} is not an mmie LEACE eraser config")
        tensors = read_safetensors(path / _WEIGHTS_FILE)
        eraser = cls.from_state_dict(tensors, device=device, source=str(path))
        if (eraser.d_model, eraser.rank) != (config.get("d_model"), config.get("rank")):
            raise CheckpointError(
                f"{path}: config says d_model={config.get('d_model')} rank={config.get('rank')}"
                f" but the tensors have d_model={eraser.d_model} rank={eraser.rank}"
            )
        return eraser


class LeaceFitter:
    """Streams features and concept labels and fits a :class:`LeaceEraser`.

    Statistics (means, the centred scatter of ``x`` and the centred cross-scatter of ``x``
    and ``z``) are merged batch by batch with Chan et al.'s pairwise update, which is exact
    and numerically stable: fitting in chunks gives the same eraser as fitting at once.

    Difference in defaults: ``concept-erasure``'s ``LeaceFitter`` shrinks ``Σ_XX`` and
    constrains the covariance trace by default (``shrinkage=True, constrain_cov_trace=True``);
    mmie's :class:`LeaceFitter` (and :func:`~mmie.fit_scrubber`) does neither unless asked, so
    its default is exact LEACE on the sample covariance: the least-squares-smallest edit of the
    fitting data, idempotent, with ``Cov(r(X), Z) = 0`` exactly, the properties the scrub arm
    is meant to test and which the trace constraint gives up when it engages. Shrinkage keeps
    the erasure guarantee (any invertible whitening does) but changes which edit is smallest;
    turn it on when the fitting tokens are not many more than ``d_model`` (a large model fitted
    on few texts). ``shrinkage=True, constrain_cov_trace=True`` reproduces ``concept-erasure``'s
    defaults (the test suite checks every combination against it).

    Args:
        d_model: feature dimension ``d``.
        num_classes: concept dimension ``k``. Integer labels ``z[n]`` are one-hot encoded
            into ``k`` columns when ``k >= 2`` (for a binary concept ``k = 2`` and ``k = 1``
            with 0/1 labels give the same eraser); with ``k = 1`` a 1-D ``z`` is one
            continuous column.
        method: ``"leace"`` (whitened, least-squares optimal) or ``"orth"`` (``W = I``,
            an orthogonal projection; does not track ``Σ_XX``).
        shrinkage: shrink ``Σ_XX`` linearly toward a scaled identity (asymptotically optimal
            intensity, arXiv:1308.2608); helps when ``n`` is not much larger than ``d``.
            Off by default (``concept-erasure`` turns it on; see above).
        constrain_cov_trace: when the LEACE map would increase ``tr Cov(x)``, mix it with the
            orthogonal projection so the trace does not grow (the ``concept-erasure``
            safeguard for erasers stacked inside a model). With exact statistics LEACE
            already lowers the trace by ``‖W⁺U‖_F²``, so this only engages on numerical
            error; when it does, the mixture keeps ``rank <= 2k`` but gives up exact
            idempotence and the exact ``Cov(r(X), Z) = 0`` guarantee. Ignored for ``orth``,
            which never increases the trace. Off by default (``concept-erasure`` turns it
            on; see above).
        svd_tol: singular values of ``W Σ_XZ`` at or below this are dropped (more stable,
            less damage, but weak correlations may survive).
        dtype: dtype of the accumulated statistics (float64 recommended).
        device: device of the accumulated statistics.

    Raises:
        ValueError: on non-positive dimensions, an unknown method or a non-positive
            ``svd_tol``.
    """

    def __init__(
        self,
        d_model: int,
        num_classes: int,
        *,
        method: ErasureMethod = "leace",
        shrinkage: bool = False,
        constrain_cov_trace: bool = False,
        svd_tol: float = 0.01,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        d_model = positive_int(d_model, "d_model")
        num_classes = positive_int(num_classes, "num_classes")
        if method not in ("leace", "orth"):
            raise ValueError(f"method must be 'leace' or 'orth', got {method!r}")
        if not (isinstance(svd_tol, (int, float)) and math.isfinite(svd_tol) and svd_tol > 0):
            raise ValueError(f"svd_tol must be a positive finite number, got {svd_tol!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        self.d_model = d_model
        self.num_classes = num_classes
        self.method: ErasureMethod = method
        self.shrinkage = bool(shrinkage)
        self.constrain_cov_trace = bool(constrain_cov_trace)
        self.svd_tol = float(svd_tol)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")

        self._n = 0
        self._mean_x = torch.zeros(d_model, dtype=dtype, device=self.device)
        self._mean_z = torch.zeros(num_classes, dtype=dtype, device=self.device)
        # Centred scatter sums: Σ (x - μx)(x - μx)ᵀ and Σ (x - μx)(z - μz)ᵀ.
        self._scatter_xx: Tensor | None = (
            torch.zeros(d_model, d_model, dtype=dtype, device=self.device)
            if method == "leace"
            else None
        )
        self._scatter_xz = torch.zeros(d_model, num_classes, dtype=dtype, device=self.device)
        self._eraser: LeaceEraser | None = None
        # Whether every z seen was a class id or a one-hot row (class means are defined).
        self._categorical = num_classes >= 2

    # ------------------------------------------------------------------ statistics
    @property
    def n_samples(self) -> int:
        """Number of feature vectors seen so far."""
        return self._n

    @property
    def mean_x(self) -> Tensor:
        """``[d_model]`` running mean of ``x``."""
        return self._mean_x.clone()

    @property
    def mean_z(self) -> Tensor:
        """``[k]`` running mean of the (one-hot) concept."""
        return self._mean_z.clone()

    @property
    def sigma_xx(self) -> Tensor:
        """``[d_model, d_model]`` covariance of ``x`` (Bessel-corrected, or shrunk).

        Raises:
            RuntimeError: for ``method="orth"`` (not tracked) or before two samples.
        """
        if self._scatter_xx is None:
            raise RuntimeError("sigma_xx is not tracked for method='orth'")
        self._require_samples()
        scatter = (self._scatter_xx + self._scatter_xx.T) / 2  # undo rounding asymmetry
        if self.shrinkage:
            return _linear_shrinkage(scatter / self._n, self._n)
        return scatter / (self._n - 1)

    @property
    def sigma_xz(self) -> Tensor:
        """``[d_model, k]`` cross-covariance of ``x`` and ``z`` (Bessel-corrected)."""
        self._require_samples()
        return self._scatter_xz / (self._n - 1)

    @property
    def class_means(self) -> Tensor:
        """``[k, d_model]`` mean of ``x`` within each class (NaN rows for unseen classes).

        Recovered exactly from the streamed statistics: with one-hot ``z``,
        ``Σ_n (x_n − μ)(z_nc − p_c) = n_c (μ_c − μ)``.

        Raises:
            RuntimeError: the concept is not categorical (``num_classes == 1`` or a
                non-one-hot ``z`` was seen), or before two samples.
        """
        if not self._categorical:
            raise RuntimeError(
                "class_means needs a categorical concept: integer labels or one-hot rows "
                "with num_classes >= 2"
            )
        self._require_samples()
        counts = self._mean_z * self._n  # (k,) n_c
        means = self._mean_x + (self._scatter_xz / counts).T  # (k, d)
        return torch.where((counts > 0)[:, None], means, torch.full_like(means, math.nan))

    def _require_samples(self) -> None:
        if self._n < 2:
            raise RuntimeError(
                f"LeaceFitter has seen {self._n} sample(s); call update() with at least 2"
            )

    # ---------------------------------------------------------------------- update
    @torch.no_grad()
    def update(self, x: Tensor, z: Tensor) -> LeaceFitter:
        """Merge a batch of features and labels into the statistics.

        Args:
            x: ``[n, d_model]`` features (any floating dtype or device; copied into the
                fitter's dtype and device).
            z: ``[n]`` labels (integer class ids in ``[0, k)`` when ``k >= 2``, or one
                continuous value when ``k == 1``) or ``[n, k]`` one-hot / continuous.

        Returns:
            ``self``, so calls chain.

        Raises:
            ValueError: on shape mismatches, out-of-range labels or non-finite values.
        """
        x = self._check_x(x)
        zf = self._encode_z(z, x.shape[0])
        m = x.shape[0]
        if m == 0:
            return self
        if not (torch.isfinite(x).all() and torch.isfinite(zf).all()):
            raise ValueError("x and z must be finite (found NaN or inf)")

        mean_xb = x.mean(0)
        mean_zb = zf.mean(0)
        xc = x - mean_xb  # (m, d)
        zc = zf - mean_zb  # (m, k)
        n_a, n = self._n, self._n + m
        dx = mean_xb - self._mean_x
        dz = mean_zb - self._mean_z
        w = n_a * m / n  # weight of the between-chunk term
        if self._scatter_xx is not None:
            self._scatter_xx += xc.T @ xc + w * torch.outer(dx, dx)
        self._scatter_xz += xc.T @ zc + w * torch.outer(dx, dz)
        self._mean_x += dx * (m / n)
        self._mean_z += dz * (m / n)
        self._n = n
        self._eraser = None  # statistics changed
        return self

    def _check_x(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.d_model:
            raise ValueError(f"x must be [n, d_model={self.d_model}], got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got {x.dtype}")
        return x.detach().to(device=self.device, dtype=self.dtype)

    def _encode_z(self, z: Tensor, n: int) -> Tensor:
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        k = self.num_classes
        if z.shape[0] != n:
            raise ValueError(f"z has {z.shape[0]} rows but x has {n}")
        z = z.detach().to(self.device)
        if z.ndim == 1:
            if k == 1:
                return z.to(self.dtype)[:, None]
            if z.is_floating_point() or z.is_complex():
                raise ValueError(
                    f"1-D z must hold integer class ids when num_classes={k} >= 2, got {z.dtype}"
                    "; pass one-hot or continuous values as a [n, k] tensor"
                )
            if n and (int(z.min()) < 0 or int(z.max()) >= k):
                raise ValueError(
                    f"labels in z must lie in [0, {k}), got min {int(z.min())} max {int(z.max())}"
                )
            return torch.nn.functional.one_hot(z.long(), k).to(self.dtype)
        if z.ndim == 2 and z.shape[1] == k:
            zf = z.to(self.dtype)
            if (
                self._categorical
                and n
                and not (bool(((zf == 0) | (zf == 1)).all()) and bool((zf.sum(1) == 1).all()))
            ):
                self._categorical = False  # continuous concept: no class means
            return zf
        raise ValueError(f"z must be [n] labels or [n, k={k}], got shape {tuple(z.shape)}")

    # ------------------------------------------------------------------------- fit
    @property
    def eraser(self) -> LeaceEraser:
        """The eraser for the current statistics (computed once, reset by :meth:`update`)."""
        if self._eraser is None:
            self._eraser = self._compute_eraser()
        return self._eraser

    def fit(self, *, center: int | None = None) -> LeaceEraser:
        """Compute (or return the cached) eraser for the statistics seen so far.

        Args:
            center: ``None`` for LEACE's centre, the mean of all samples (the least-squares
                optimal edit on the fitting distribution). A class id ``c`` centres the
                erasure on class ``c``'s mean instead: along the erased directions every
                point is moved onto class ``c``'s mean, so class ``c`` is moved least
                (only its own spread there) and the others are moved onto it. The
                guarantee is the same for any centre: the class-conditional means of the
                erased features are equal (``(I − A)(μ_c − μ) = 0`` does not involve the
                centre), and the map stays idempotent. Use it to erase a concept toward
                the data that must be kept, e.g. the retain language in unlearning; with
                unbalanced classes the pooled mean otherwise sits near the larger class.

        Returns:
            A :class:`LeaceEraser` in the fitter's dtype and device.

        Raises:
            RuntimeError: before at least two samples were seen, or ``center`` given for a
                concept that is not categorical.
            ValueError: ``center`` out of range or a class without samples.
        """
        eraser = self.eraser
        if center is None:
            return eraser
        center = integer(center, "center", minimum=0, maximum=self.num_classes - 1)
        mean = self.class_means[center]
        if not bool(torch.isfinite(mean).all()):
            raise ValueError(f"class {center} has no samples, so it cannot be the centre")
        return dataclasses.replace(eraser, bias=mean.clone())

    @torch.no_grad()
    def _compute_eraser(self) -> LeaceEraser:
        self._require_samples()
        d = self.d_model
        eye = torch.eye(d, dtype=self.dtype, device=self.device)
        sigma: Tensor | None = None
        if self.method == "leace":
            sigma = self.sigma_xx
            evals, evecs = torch.linalg.eigh(sigma)
            # Same relative cutoff as torch.linalg.pinv: tiny eigenvalues are numerical zeros.
            keep = evals > evals[-1] * d * torch.finfo(evals.dtype).eps
            evals = evals.clamp_min(0.0)
            inv_sqrt = torch.where(keep, evals.rsqrt(), torch.zeros_like(evals))
            sqrt = torch.where(keep, evals.sqrt(), torch.zeros_like(evals))
            whiten = (evecs * inv_sqrt) @ evecs.T  # W = Σ^{-1/2}
            unwhiten = (evecs * sqrt) @ evecs.T  # W⁺ = Σ^{1/2}
        else:
            whiten = unwhiten = eye

        u, s, _ = torch.linalg.svd(whiten @ self.sigma_xz, full_matrices=False)
        u = u[:, s > self.svd_tol]  # (d, r): directions that carry the concept
        if u.shape[1] == 0:
            logger.warning(
                "LEACE found no cross-covariance singular value above svd_tol=%g; "
                "the eraser is the identity",
                self.svd_tol,
            )
        proj_left = unwhiten @ u  # (d, r)
        proj_right = u.T @ whiten  # (r, d)

        if self.constrain_cov_trace and sigma is not None and u.shape[1] > 0:
            proj_left, proj_right = self._constrain_trace(sigma, u, proj_left, proj_right)

        return LeaceEraser(
            proj_left=proj_left.contiguous(),
            proj_right=proj_right.contiguous(),
            bias=self._mean_x.clone(),
        )

    @staticmethod
    def _constrain_trace(
        sigma: Tensor, u: Tensor, proj_left: Tensor, proj_right: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mix LEACE ``P`` with ``Q = I - uuᵀ`` so ``tr(P Σ Pᵀ) <= tr Σ``.

        The trace of ``(aP + (1-a)Q) Σ (aP + (1-a)Q)ᵀ`` is a convex quadratic in ``a`` that
        is ``<= tr Σ`` at ``a = 0`` (``Q`` is an orthogonal projection); the largest ``a`` in
        ``[0, 1]`` keeping it ``<= tr Σ`` is the larger root. Since
        ``I - (aP + (1-a)Q) = a·W⁺uuᵀW + (1-a)·uuᵀ``, the mixed map keeps thin factors
        ``[a·W⁺u, (1-a)·u]`` and ``[uᵀW; uᵀ]``.
        """
        d = sigma.shape[0]
        eye = torch.eye(d, dtype=sigma.dtype, device=sigma.device)
        P = eye - proj_left @ proj_right
        Q = eye - u @ u.T
        old = torch.trace(sigma)
        t_pp = torch.trace(P @ sigma @ P.T)
        if t_pp <= old:
            return proj_left, proj_right
        t_pq = 2 * torch.trace(P @ sigma @ Q.T)
        t_qq = torch.trace(Q @ sigma @ Q.T)
        a2 = t_pp - t_pq + t_qq  # tr((P-Q) Σ (P-Q)ᵀ) > 0 here
        a1 = t_pq - 2 * t_qq
        a0 = t_qq - old
        disc = (a1 * a1 - 4 * a2 * a0).clamp_min(0.0)
        alpha = float(((-a1 + disc.sqrt()) / (2 * a2)).clamp(0.0, 1.0))
        logger.debug("trace constraint engaged: mixing LEACE with weight %.4f", alpha)
        left = torch.cat([alpha * proj_left, (1 - alpha) * u], dim=1)  # (d, 2r)
        right = torch.cat([proj_right, u.T], dim=0)  # (2r, d)
        return left, right


def _linear_shrinkage(cov: Tensor, n: int) -> Tensor:
    """Shrink a sample covariance toward ``tr(S)/p · I`` with the optimal linear intensity.

    Implements the distribution-free, asymptotically Frobenius-optimal estimator
    ``a·S + b·(tr S / p)·I`` of Bodnar, Gupta & Parolya (arXiv:1308.2608), as used by the
    ``concept-erasure`` package; ``a`` is clipped to ``[0, 1]``.

    Args:
        cov: ``[p, p]`` sample covariance normalised by ``n``.
        n: sample size.

    Returns:
        The ``[p, p]`` shrunk covariance.
    """
    p = cov.shape[-1]
    eps = torch.finfo(cov.dtype).eps
    tr = torch.trace(cov)
    target_sq = tr * tr / p  # ‖(tr S / p) I‖_F² = tr(S · target)
    s_sq = (cov * cov).sum()
    numer = tr * tr * target_sq / n
    denom = s_sq * target_sq - target_sq * target_sq
    a = (1 - (numer + eps) / (denom + eps)).clamp(0.0, 1.0)
    b = 1 - a  # the target has the same trace as S
    eye = torch.eye(p, dtype=cov.dtype, device=cov.device)
    return a * cov + b * (tr / p) * eye


def _infer_num_classes(z: Tensor) -> int:
    """Concept dimension for :meth:`LeaceEraser.fit`: columns of 2-D ``z``, classes of 1-D."""
    if z.ndim == 2:
        return int(z.shape[1])
    if z.ndim == 1 and not z.is_floating_point() and z.numel():
        return max(int(z.max()) + 1, 2)
    if z.ndim == 1:
        return 1
    raise ValueError(f"z must be [n] or [n, k], got shape {tuple(z.shape)}")
