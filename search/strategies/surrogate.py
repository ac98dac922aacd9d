"""Surrogate-assisted search (after AQuaSurF): predict before training, train the best bets.

Each ``ask``:

1. features of every evaluated member, computed before training and cheap
   (:mod:`search.strategies.surrogate_features`: the gain-normalized function on the
   fingerprint's probes, or a norm-act layer's response statistics on its probe batch);
2. per objective, two regressors over a PCA projection of the standardized features: a
   Gaussian process (Matern 5/2 + white noise) and a k-NN ensemble. Each is scored by its
   leave-one-out Spearman rank correlation on the campaign's own members (the GP's in closed
   form, the k-NN's by leaving each member out of its own neighbours), and the better one
   predicts (``model: auto``); the figures are published as a ``surrogate`` event every
   time the model is refitted, so the campaign's record shows how well it predicts;
3. a pool of ``screen`` new candidates (mutation chains of the front and the best members,
   and random graphs) is scored by the hypervolume improvement of its optimistic point
   ``mean - kappa * std`` over the observed front, times the probability that it completes
   (a k-NN vote of the finished members: rejected or failed members count as failures);
4. each slot takes the best-scored candidate left, except that with probability
   ``exploration`` a slot is a plain random graph (pure exploration).

What a refit costs: the model's *shape* (the standardization, the PCA projection and each
Gaussian process's kernel hyperparameters, found by maximizing the marginal likelihood) is
fitted only when the evaluated members reach a point of a doubling schedule (``min_fit``,
2 x ``min_fit``, 4 x ...), on the first members in proposal order (at most
:data:`SHAPE_TRAIN` of them); every other refit keeps that shape and only conditions the
GPs and the k-NN ensemble on the current members (one Cholesky factorization per
objective). Both are functions of the stored members, so a rebuilt strategy fits what the
original fitted. The linear algebra runs on one BLAS thread: a controller shares its
machine, and a multi-threaded BLAS on busy cores was 20x slower on these small matrices.

Until it can fit (fewer than ``min_fit`` evaluated members, or every target constant) the
strategy explores with random graphs and says why in a ``surrogate`` event; it never raises
for want of data. Like every strategy its only state is the observed members: fitted
models are cached by the exact members and values they were fitted on, all random choices
come from :meth:`Strategy.rng`, and the regressors have fixed random states, so a strategy
rebuilt from storage asks what the original would have asked.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layerforge.grammar import Graph, mutate, random_graph
from layerforge.search.names import StrategyName
from layerforge.search.pareto import hypervolume, pareto_front
from layerforge.search.strategies.base import Member, Proposal, Strategy
from layerforge.search.strategies.surrogate_features import candidate_features

# above this many objectives the exact hypervolume improvement of every screened candidate
# costs more than the screening itself: a random Chebyshev scalarization ranks them instead
MAX_HVI_OBJECTIVES = 4
KNN_ENSEMBLE = (3, 5, 8)
COMPLETION_NEIGHBOURS = 7
# feature rows kept (screened candidates and members; about 0.5 KiB each)
FEATURE_CACHE = 100_000
#: at most this many members (the first in proposal order) fit a model's shape: the GP's
#: hyperparameter search costs O(n^3) per step, a refit with a fixed shape one O(n^3)
SHAPE_TRAIN = 128
#: the shape is refitted each time the evaluated members grow by this factor
SHAPE_GROWTH = 2.0

_BLAS: Any = None


def one_blas_thread() -> Any:
    """A context in which NumPy's and SciPy's BLAS use one thread (see the module's note)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def shape_point(count: int, minimum: int) -> int:
    """The largest point of the shape schedule (``minimum`` times a power of
    :data:`SHAPE_GROWTH`) that is at most ``count`` (``count >= minimum``)."""
    point = minimum
    while math.ceil(point * SHAPE_GROWTH) <= count:
        point = math.ceil(point * SHAPE_GROWTH)
    return point


@dataclass
class Shape:
    """What a refit between two schedule points keeps: the standardization, the PCA
    components and, per objective, the fitted GP kernel (None: not a GP objective)."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    kernels: list[Any]


@dataclass
class Fit:
    """A fitted surrogate: the projection, one predictor per objective, the completion
    vote, and the leave-one-out figures it was chosen by."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    predictors: list[Any]
    completion: tuple[np.ndarray, np.ndarray] | None
    quality: dict[str, Any] = field(default_factory=dict)

    def project(self, features: np.ndarray) -> np.ndarray:
        """Standardize and project feature rows onto the PCA components."""
        return ((features - self.mean) / self.scale) @ self.components.T

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted mean and std per objective (columns), and the probability to complete."""
        z = self.project(features)
        means, stds = zip(*(p.predict(z) for p in self.predictors))
        p_ok = np.ones(len(features))
        if self.completion is not None:
            p_ok = _knn_vote(self.completion[0], self.completion[1], z)
        return np.column_stack(means), np.column_stack(stds), p_ok


class _Constant:
    """The prediction for an objective whose observed values are all equal."""

    def __init__(self, value: float):
        self.value = value

    def predict(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full(len(z), self.value), np.zeros(len(z))


class _GP:
    """sklearn's Gaussian process, with its closed-form leave-one-out predictions. With
    ``kernel`` (an earlier fit's ``kernel_``) the hyperparameters are kept, not searched."""

    def __init__(self, z: np.ndarray, y: np.ndarray, kernel: Any = None):
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        fixed = kernel is not None
        if kernel is None:
            kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
                length_scale=np.ones(z.shape[1]), length_scale_bounds=(1e-2, 1e3), nu=2.5
            ) + WhiteKernel(0.1, (1e-6, 1.0))
        self.model = GaussianProcessRegressor(
            kernel,
            normalize_y=True,
            n_restarts_optimizer=0,
            random_state=0,
            optimizer=None if fixed else "fmin_l_bfgs_b",
        )
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(z, y)
        self.z, self.y = z, y

    @property
    def kernel(self) -> Any:
        """The fitted kernel (hyperparameters included)."""
        return self.model.kernel_

    def predict(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.model.predict(z, return_std=True)
        return np.asarray(mean), np.asarray(std)

    def leave_one_out(self) -> np.ndarray:
        """Each member's prediction from all the others (same kernel): y - alpha / K^-1_ii,
        with K^-1 from the fit's own Cholesky factor."""
        from scipy.linalg import cho_solve

        factor = self.model.L_
        inverse = cho_solve((factor, True), np.eye(len(factor)))
        y_mean, y_std = self.model._y_train_mean, self.model._y_train_std
        y = (self.y - y_mean) / y_std
        alpha = inverse @ y
        loo = y - alpha / np.maximum(np.diag(inverse), 1e-12)
        return loo * y_std + y_mean


class _KNNEnsemble:
    """k-NN regressors for several k: the mean of their means, and a spread that grows with
    the neighbours' disagreement and with the distance to them."""

    def __init__(self, z: np.ndarray, y: np.ndarray):
        self.z, self.y = z, y
        self.ks = [k for k in KNN_ENSEMBLE if k < len(y)] or [max(1, len(y) - 1)]
        distances = _distances(z, z)
        np.fill_diagonal(distances, np.inf)
        self.typical = float(np.median(distances.min(axis=1))) or 1.0
        self.spread = float(np.std(y)) or 1.0

    def _predict(self, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(distances, axis=1, kind="stable")
        means, spreads = [], []
        for k in self.ks:
            nearest = order[:, :k]
            values = self.y[nearest]
            means.append(values.mean(axis=1))
            spreads.append(values.std(axis=1))
        nearest_distance = np.take_along_axis(distances, order[:, :1], axis=1)[:, 0]
        far = np.minimum(nearest_distance / self.typical, 10.0)
        mean = np.mean(means, axis=0)
        std = np.sqrt(np.mean(spreads, axis=0) ** 2 + np.var(means, axis=0))
        return mean, std + 0.1 * self.spread * far

    def predict(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._predict(_distances(z, self.z))

    def leave_one_out(self) -> np.ndarray:
        distances = _distances(self.z, self.z)
        np.fill_diagonal(distances, np.inf)
        return self._predict(distances)[0]


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def _knn_vote(z_known: np.ndarray, completed: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The share of completed members among the nearest finished members (Laplace-smoothed)."""
    k = min(COMPLETION_NEIGHBOURS, len(completed))
    order = np.argsort(_distances(z, z_known), axis=1, kind="stable")[:, :k]
    return (completed[order].sum(axis=1) + 1.0) / (k + 2.0)


def rank_correlations(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Spearman's rho and Kendall's tau of predictions against the truth (0 when either
    is constant, where a rank correlation is undefined)."""
    from scipy.stats import kendalltau, spearmanr

    if np.ptp(truth) == 0 or np.ptp(predicted) == 0:
        return {"spearman": 0.0, "kendall": 0.0}
    rho = float(spearmanr(truth, predicted).statistic)
    tau = float(kendalltau(truth, predicted).statistic)
    return {
        "spearman": rho if math.isfinite(rho) else 0.0,
        "kendall": tau if math.isfinite(tau) else 0.0,
    }


class Surrogate(Strategy):
    """Screen many cheap candidates with a fitted surrogate; propose the best bets."""

    name = StrategyName.SURROGATE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._features: dict[str, np.ndarray | None] = {}
        self._fit_key: tuple | None = None
        self._fit: Fit | None = None
        self._fit_reason = ""
        self._shape_key: tuple | None = None
        self._shape: Shape | None = None
        # the members of the last fit an event was published for (one event per refit)
        self._reported: tuple | None = None

    @property
    def options(self) -> Any:
        """The ``strategy.surrogate`` section of the spec."""
        return self.settings.surrogate

    # ----------------------------------------------------------------- features
    def features(self, graph: Graph) -> np.ndarray | None:
        """The candidate's features, cached by structure (not by fingerprint: two forms of
        one function agree to 6 digits, not to the bit, and a rebuilt strategy must compute
        exactly what the original did)."""
        key = graph.key
        if key not in self._features:
            if len(self._features) >= FEATURE_CACHE:
                self._features.clear()  # derived values: recomputed exactly when needed
            self._features[key] = candidate_features(graph, self.gain)
        return self._features[key]

    # ----------------------------------------------------------------- fitting
    def _training_set(self) -> tuple[list[Member], list[Member]]:
        """(evaluated members, the most recent ``max_train`` finished members); the evaluated
        are all of them, the shape's schedule counts them (the fit keeps ``max_train``)."""
        cap = int(self.options.max_train)
        finished = [self.members[i] for i in self.order if self.members[i].finished]
        evaluated = [m for m in finished if m.values is not None]
        return evaluated, finished[-cap:]

    def fitted(self) -> Fit | None:
        """The surrogate fitted on the current members, or None (with the reason kept in
        ``_fit_reason``) when it cannot fit yet. Refitted only when the members changed."""
        evaluated, finished = self._training_set()
        key = tuple((m.id, m.status, m.values) for m in finished) + (len(evaluated),)
        if key == self._fit_key:
            return self._fit
        self._fit_key = key
        with one_blas_thread():
            self._fit, self._fit_reason = self._fit_now(evaluated, finished)
        return self._fit

    def _shape_of(self, x: np.ndarray, y: np.ndarray, key: tuple) -> Shape:
        """The model's shape fitted on ``x``, ``y`` (the schedule's members), cached by
        ``key`` (their ids and values): standardization, PCA and the GP kernels."""
        if key == self._shape_key and self._shape is not None:
            return self._shape
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        standardized = (x - mean) / scale
        dims = max(1, min(int(self.options.pca_components), len(y) - 1, x.shape[1]))
        # principal axes by SVD (sign fixed by the largest loading): deterministic, no sklearn
        # randomized solver
        _u, _s, vt = np.linalg.svd(standardized - standardized.mean(0), full_matrices=False)
        components = vt[:dims]
        signs = np.sign(components[np.arange(dims), np.abs(components).argmax(axis=1)])
        components = components * signs[:, None]
        z = standardized @ components.T
        kernels: list[Any] = []
        for j in range(y.shape[1]):
            kernel = None
            if np.ptp(y[:, j]) > 0 and self.options.model in ("auto", "gp"):
                try:
                    kernel = _GP(z, y[:, j]).kernel
                except (np.linalg.LinAlgError, ValueError):
                    kernel = None  # searched again on the refit's own members
            kernels.append(kernel)
        self._shape_key, self._shape = key, Shape(mean, scale, components, kernels)
        return self._shape

    def _fit_now(self, evaluated: list[Member], finished: list[Member]) -> tuple[Fit | None, str]:
        started = time.perf_counter()
        rows = [(m, self.features(m.graph)) for m in evaluated]
        rows = [(m, f) for m, f in rows if f is not None]
        minimum = int(self.options.min_fit)
        if len(rows) < minimum:
            return None, (
                f"{len(rows)} evaluated member(s) with features; the surrogate fits from "
                f"{minimum}: exploring with random graphs"
            )
        rows = [(m, f) for m, f in rows if np.isfinite(np.asarray(m.values, dtype=float)).all()]
        if len(rows) < minimum:
            return (
                None,
                f"{len(rows)} member(s) with finite values; the surrogate fits from {minimum}",
            )
        point = shape_point(len(rows), minimum)
        shape_rows = rows[:point][-SHAPE_TRAIN:]
        rows = rows[-int(self.options.max_train) :]
        x = np.array([f for _m, f in rows])
        y = np.array([m.values for m, _f in rows], dtype=float)
        if all(np.ptp(y[:, j]) == 0 for j in range(y.shape[1])):
            return None, (
                f"every objective is constant over the {len(y)} evaluated members: nothing "
                "to learn yet, exploring with random graphs"
            )
        shape = self._shape_of(
            np.array([f for _m, f in shape_rows]),
            np.array([m.values for m, _f in shape_rows], dtype=float),
            tuple((m.id, m.values) for m, _f in shape_rows),
        )
        mean, scale, components = shape.mean, shape.scale, shape.components
        z = ((x - mean) / scale) @ components.T
        predictors: list[Any] = []
        quality: dict[str, Any] = {
            "members": len(y),
            "shape_members": len(shape_rows),
            "dimensions": len(components),
            "objectives": [],
        }
        for j in range(y.shape[1]):
            target = y[:, j]
            if np.ptp(target) == 0:
                predictors.append(_Constant(float(target[0])))
                quality["objectives"].append({"chosen": "constant"})
                continue
            candidates: dict[str, Any] = {}
            scores: dict[str, dict[str, Any]] = {}
            for name in ("gp", "knn"):
                if self.options.model not in ("auto", name):
                    continue
                try:
                    fitted: Any = (
                        _GP(z, target, shape.kernels[j])
                        if name == "gp"
                        else _KNNEnsemble(z, target)
                    )
                    scores[name] = rank_correlations(target, fitted.leave_one_out())
                    candidates[name] = fitted
                except (np.linalg.LinAlgError, ValueError) as err:
                    scores[name] = {"error": str(err)}
            if not candidates:
                return None, f"objective {j}: no regressor could be fitted ({scores})"
            chosen = max(candidates, key=lambda n: (scores[n]["spearman"], n == "gp"))
            predictors.append(candidates[chosen])
            quality["objectives"].append({"chosen": chosen, "loo": scores})
        completion = None
        done = [(m, self.features(m.graph)) for m in finished]
        done = [(m, f) for m, f in done if f is not None]
        labels = np.array([m.status == "completed" for m, _f in done], dtype=float)
        if len(done) and 0 < labels.sum() < len(labels):
            known = ((np.array([f for _m, f in done]) - mean) / scale) @ components.T
            completion = (known, labels)
        quality["completed_share"] = float(labels.mean()) if len(labels) else 1.0
        quality["fit_seconds"] = round(time.perf_counter() - started, 4)
        return Fit(mean, scale, components, predictors, completion, quality), ""

    # ----------------------------------------------------------------- screening
    def _parents(self) -> list[Member]:
        """Whom the pool's mutations start from: the observed front and the best members."""
        evaluated = self.evaluated()
        if not evaluated:
            return []
        values = np.array([m.values for m in evaluated], dtype=float)
        chosen = {evaluated[i].id: evaluated[i] for i in pareto_front(values.tolist())}
        spread = values.std(axis=0)
        spread[spread == 0] = 1.0
        score = ((values - values.mean(axis=0)) / spread).sum(axis=1)
        for index in np.argsort(score, kind="stable")[: int(self.options.parents)]:
            chosen.setdefault(evaluated[index].id, evaluated[index])
        return list(chosen.values())

    def _pool(
        self, rng: random.Random, taken: set[str]
    ) -> list[tuple[Graph, str, tuple[int, ...], np.ndarray]]:
        """Up to ``screen`` new candidates with their features: mutation chains (one to three
        mutations) of the parents, and a ``random_share`` of random graphs."""
        parents = self._parents()
        pool = []
        local: set[str] = set(taken)
        random_share = float(self.options.random_share)
        for _ in range(int(self.options.screen)):
            if self.interrupted():
                break
            if parents and rng.random() >= random_share:
                parent = rng.choice(parents)
                graph = parent.graph
                for _ in range(rng.randint(1, 3)):
                    graph = mutate(graph, self.space, rng, valid_keys=self._valid_keys)
                parent_ids: tuple[int, ...] = (parent.id,)
            else:
                graph = random_graph(self.space, rng)
                parent_ids = ()
            # the pool is checked against stored functions only (is_new's caches must hold
            # facts about the members, the same in a rebuilt strategy), then against itself
            ok, fp = self.is_new(graph, taken)
            if not ok or fp in local:
                continue
            local.add(fp)
            features = self.features(graph)
            if features is not None:
                pool.append((graph, fp, parent_ids, features))
        return pool

    def _scores(
        self, fit: Fit, features: np.ndarray, rng: random.Random
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected gain of each pool row: hypervolume improvement of ``mean - kappa*std``
        over the observed front (or a random Chebyshev scalarization above
        :data:`MAX_HVI_OBJECTIVES`), times the probability to complete; with the predicted
        means and standard deviations (minimized scale, one column per objective)."""
        mean, std, p_ok = fit.predict(features)
        optimistic = mean - float(self.options.kappa) * std
        observed = np.array([m.values for m in self.evaluated()], dtype=float)
        observed = observed[np.isfinite(observed).all(axis=1)]
        low = np.minimum(observed.min(axis=0), optimistic.min(axis=0))
        high = observed.max(axis=0)
        width = np.where(high - low > 0, high - low, 1.0)
        reference = high + 0.1 * width
        if mean.shape[1] == 1:
            gain = np.maximum(observed.min() - optimistic[:, 0], 0.0)
        elif mean.shape[1] <= MAX_HVI_OBJECTIVES:
            front = observed[pareto_front(observed.tolist())]
            base = hypervolume(front, reference)
            gain = np.zeros(len(optimistic))
            for i, point in enumerate(optimistic):
                if (front <= point).all(axis=1).any():
                    continue  # dominated by the front: no improvement
                gain[i] = hypervolume(np.vstack([front, point]), reference) - base
        else:
            weights = np.array([rng.random() + 1e-3 for _ in range(mean.shape[1])])
            normalized = (reference - optimistic) / width
            gain = np.maximum((weights * normalized).min(axis=1), 0.0)
        # a tie-break that still prefers the better optimistic point when nothing improves
        closeness = -((optimistic - low) / width).sum(axis=1)
        scores = (gain + 1e-9 * (closeness - closeness.min())) * p_ok
        return scores, mean, std

    # ----------------------------------------------------------------- protocol
    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` proposals: the surrogate's best bets from a screened pool, with a
        share of random graphs (all random, and an event saying why, while it cannot fit)."""
        rng = self.rng()
        taken: set[str] = set()
        proposals: list[Proposal] = []
        fit = self.fitted()
        refitted = self._reported != self._fit_key
        if fit is None:
            if refitted:
                self._reported = self._fit_key
                self.events.append(
                    (
                        "surrogate",
                        {
                            "state": "exploring",
                            "reason": self._fit_reason,
                            "evaluated": len(self.evaluated()),
                        },
                    )
                )
            for _ in range(n):
                proposal = self.random_proposal(rng, taken, origin="random")
                if proposal is None:
                    break
                proposals.append(proposal)
            return proposals
        started = time.perf_counter()
        pool = self._pool(rng, taken)
        ranked: list[int] = []
        scores = mean = std = np.zeros((0, 0))
        if pool:
            with one_blas_thread():
                scores, mean, std = self._scores(fit, np.array([row[3] for row in pool]), rng)
            ranked = [int(i) for i in np.argsort(-scores, kind="stable")]
        explored = 0
        cursor = 0
        for _ in range(n):
            if self.interrupted():
                break
            while cursor < len(ranked) and pool[ranked[cursor]][1] in taken:
                cursor += 1  # an exploration slot found the same function first
            if cursor >= len(ranked) or rng.random() < float(self.options.exploration):
                proposal = self.random_proposal(rng, taken, origin="random")
                explored += 1
            else:
                row = ranked[cursor]
                graph, fp, parent_ids, _features = pool[row]
                cursor += 1
                taken.add(fp)
                origin = "mutation" if parent_ids else "random"
                # what the surrogate expected, stored with the candidate: its predictions
                # can be checked against the outcome afterwards (out of sample)
                data = {
                    "surrogate": {
                        "acquisition": float(scores[row]),
                        "mean": [float(v) for v in mean[row]],
                        "std": [float(v) for v in std[row]],
                    }
                }
                proposal = Proposal(graph, origin, parent_ids, data, fp)
            if proposal is None:
                break
            proposals.append(proposal)
        if refitted:
            self._reported = self._fit_key
            self.events.append(
                (
                    "surrogate",
                    {
                        "state": "fitted",
                        "evaluated": len(self.evaluated()),
                        **fit.quality,
                        "screened": len(pool),
                        "proposed": len(proposals),
                        "explored": explored,
                        "screen_seconds": round(time.perf_counter() - started, 4),
                    },
                )
            )
        return proposals
