"""Predictive customer lifetime value: the BG/NBD model of repeat purchasing (Fader, Hardie & Lee 2005,
"Counting your customers the easy way") and the Gamma-Gamma model of spend per transaction (Fader &
Hardie 2013, "The Gamma-Gamma model of monetary value"), fitted by maximum likelihood.

Conventions are the papers': per customer, `x` is the number of *repeat* purchases (here: repeat purchase
days), `t_x` the time of the last purchase and `T` the time of the end of observation, both measured from
the customer's first purchase; `m` is the mean value of the repeat purchases. Production measures time in
days; the published CDNOW parameters are in weeks, and only the scale parameter α depends on the unit
(α_days = 7 α_weeks; the log-likelihood moves by Σx·ln 7 because each purchase time is a density).

Everything is vectorised NumPy over columns; the fits take optional integer weights so that identical
(x, t_x, T) rows are evaluated once (see `compress`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1, log_expit

# Log-parameters are kept inside this box: it keeps the optimiser away from overflow without binding
# at any parameter a real purchase history produces (e^±12 ≈ 6e-6 … 1.6e5).
_LOG_BOUND = 12.0


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    converged: bool = True
    iterations: int = 0


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float
    log_likelihood: float
    converged: bool = True
    iterations: int = 0

    @property
    def population_mean(self) -> float:
        """E[M] over the population: the expected spend per transaction of a customer we know nothing of."""
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1.0 else float("nan")


def compress(*columns: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The unique rows of the given columns, how many times each occurs, and for every original row the
    index of its unique row (so results computed on unique rows are spread back with `values[inverse]`).

    Whole days (production) are packed into one int64 key per row, which np.unique sorts far faster than
    rows of floats; anything else falls back to sorting rows."""
    stacked = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    bits = 62 // len(columns)
    if (
        stacked.size
        and np.all(stacked == np.floor(stacked))
        and stacked.min() >= 0
        and stacked.max() < 2**bits
    ):
        key = np.zeros(len(stacked), dtype=np.int64)
        for i in range(len(columns)):
            key = (key << bits) | stacked[:, i].astype(np.int64)
        _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
        unique = stacked[first]
    else:
        unique, inverse, counts = np.unique(stacked, axis=0, return_inverse=True, return_counts=True)
    return [unique[:, i] for i in range(unique.shape[1])], counts.astype(float), inverse.reshape(-1)


# --- BG/NBD ----------------------------------------------------------------------------------------


def _bgnbd_terms(r, alpha, a, b, x, t_x, T):
    """The two log-terms whose log-sum-exp is the x/t_x part of the BG/NBD likelihood (paper eq. 6):
    u3 = -(r+x) ln(α+T) and, for x > 0, u4 = ln a - ln(b+x-1) - (r+x) ln(α+t_x)."""
    repeat = x > 0
    u3 = -(r + x) * np.log(alpha + T)
    u4 = np.full_like(u3, -np.inf)
    xr = x[repeat]
    u4[repeat] = np.log(a) - np.log(b + xr - 1.0) - (r + xr) * np.log(alpha + t_x[repeat])
    return u3, u4, repeat


def bgnbd_log_likelihood_terms(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood of (x, t_x, T): paper eq. (6), evaluated in log space so that large
    frequencies (x in the hundreds) neither overflow nor lose the smaller term."""
    u3, u4, _ = _bgnbd_terms(r, alpha, a, b, x, t_x, T)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    return a1 + a2 + np.logaddexp(u3, u4)


@dataclass(frozen=True)
class _BgNbdData:
    """The fit's data, split once: customers without a repeat purchase need neither t_x nor the second
    likelihood term, and their rows collapse to the distinct T; the gamma and beta functions depend on x
    alone and are evaluated once per distinct x."""

    T0: np.ndarray  # x == 0: observation lengths and weights
    w0: np.ndarray
    x: np.ndarray  # x > 0
    t_x: np.ndarray
    T: np.ndarray
    w: np.ndarray
    xs: np.ndarray  # distinct x (all rows) and their total weight
    xs_w: np.ndarray

    @classmethod
    def of(cls, x, t_x, T, w) -> _BgNbdData:
        zero = x == 0
        T0, w0 = _weight_by_value(T[zero], w[zero])
        xs, xs_w = _weight_by_value(x, w)
        rep = ~zero
        return cls(T0, w0, x[rep], t_x[rep], T[rep], w[rep], xs, xs_w)


def _bgnbd_negll_and_grad(log_params, d: _BgNbdData):
    """Negative log-likelihood (paper eq. 6) and its gradient in log-parameters.

    For a repeat customer the likelihood's last factor is e^u3 + e^u4 with u3 = -(r+x) ln(α+T) and
    u4 = ln a - ln(b+x-1) - (r+x) ln(α+t_x); with δ = u4 - u3 its log is u3 + softplus(δ) and the weights
    of the two terms in the gradient are expit(-δ) and expit(δ): stable for any x, and four
    transcendental calls per row where the naive form needs ten. This runs a few dozen times per fit on
    up to a few hundred thousand rows: it is where the fit's time goes."""
    r, alpha, a, b = np.exp(log_params)
    n = d.xs_w.sum()
    ln_aT0 = np.log(alpha + d.T0)
    ln_aT = np.log(alpha + d.T)
    ln_atx = np.log(alpha + d.t_x)
    rx = r + d.x
    u3 = -rx * ln_aT
    delta = np.log(a) - np.log(b + d.x - 1.0) + rx * (ln_aT - ln_atx)
    w4 = expit(delta)
    w3 = expit(-delta)
    ll = (
        np.dot(d.xs_w, gammaln(r + d.xs) + betaln(a, b + d.xs))
        + n * (r * np.log(alpha) - gammaln(r) - betaln(a, b))
        - r * np.dot(d.w0, ln_aT0)
        + np.dot(d.w, u3 - log_expit(-delta))
    )
    if not np.isfinite(ll):
        return 1e300, np.zeros(4)
    ww4 = d.w * w4
    psi_ab = digamma(a + b)
    psi_abx = np.dot(d.xs_w, digamma(a + b + d.xs))
    d_r = (
        np.dot(d.xs_w, digamma(r + d.xs))
        + n * (np.log(alpha) - digamma(r))
        - np.dot(d.w0, ln_aT0)
        - np.dot(d.w * w3, ln_aT)
        - np.dot(ww4, ln_atx)
    )
    d_alpha = (
        n * r / alpha
        - r * np.dot(d.w0, 1.0 / (alpha + d.T0))
        - np.dot(d.w * rx, w3 / (alpha + d.T) + w4 / (alpha + d.t_x))
    )
    d_a = n * psi_ab - psi_abx + ww4.sum() / a
    d_b = (
        n * (psi_ab - digamma(b))
        - psi_abx
        + np.dot(d.xs_w, digamma(b + d.xs))
        - np.dot(ww4, 1.0 / (b + d.x - 1.0))
    )
    grad = np.array([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return -ll, -grad


def _weight_by_value(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values and the total weight of each."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, np.bincount(inverse.reshape(-1), weights=weights, minlength=len(distinct))


def bgnbd_fit(
    x, t_x, T, weights=None, initial: tuple[float, float, float, float] | None = None
) -> BgNbdParams:
    """Maximum-likelihood BG/NBD parameters for the columns x, t_x, T (optionally weighted by counts)."""
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    if initial is None:
        # α is a time scale: start it at the mean observation length, so days and weeks start alike.
        initial = (1.0, max(float(np.average(T, weights=w)), 1.0), 1.0, 1.0)
    result = minimize(
        _bgnbd_negll_and_grad,
        np.log(initial),
        args=(_BgNbdData.of(x, t_x, T, w),),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 4,
        options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-8},
    )
    r, alpha, a, b = np.exp(result.x)
    return BgNbdParams(
        r=float(r),
        alpha=float(alpha),
        a=float(a),
        b=float(b),
        log_likelihood=float(-result.fun),
        converged=bool(result.success),
        iterations=int(result.nit),
    )


def bgnbd_p_alive(params: BgNbdParams, x, t_x, T) -> np.ndarray:
    """P(alive | x, t_x, T), paper eq. (A.?) / Fader-Hardie note: 1 / (1 + δ(x>0) a/(b+x-1) ((α+T)/(α+t_x))^(r+x)).
    A customer with no repeat purchase is alive with certainty under BG/NBD (dropout happens only right
    after a purchase); churn risk therefore also looks at the purchase cycle (see compute.py)."""
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    p = np.ones_like(x)
    repeat = x > 0
    xr = x[repeat]
    logit = (
        np.log(params.a)
        - np.log(params.b + xr - 1.0)
        + (params.r + xr) * (np.log(params.alpha + T[repeat]) - np.log(params.alpha + t_x[repeat]))
    )
    p[repeat] = expit(-logit)
    return p


def bgnbd_expected_purchases(params: BgNbdParams, t, x, t_x, T) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected repeat purchases in the next `t` (paper eq. 10).

    The factor ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x-1; z) is rewritten with Euler's transformation
    as (1-z)^(a-1) · 2F1(a+b-1-r, a-1; a+b+x-1; z): for large x the original 2F1 diverges as z → 1 while its
    factor vanishes, the transformed series converges quickly (c grows with x) and never overflows.
    Where the hypergeometric function still fails (a and b in the hundreds or more: a population
    whose dropout probability hardly varies) the same expectation is integrated numerically instead."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    z = t / (alpha + T + t)
    one_minus_z = (alpha + T) / (alpha + T + t)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        hyp = hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
        given_alive = (a + b + x - 1.0) / (a - 1.0) * (1.0 - one_minus_z ** (a - 1.0) * hyp)
    bad = ~np.isfinite(given_alive) | (given_alive < 0)
    if bad.any():
        given_alive[bad] = _expected_given_alive_by_quadrature(params, t, x[bad], T[bad])
    return given_alive * bgnbd_p_alive(params, x, t_x, T)


def _expected_given_alive_by_quadrature(params: BgNbdParams, t, x, T, nodes: int = 64) -> np.ndarray:
    """E[Y(t) | alive at T, x] = E_p[(1 - ((α+T)/(α+T+p·t))^(r+x)) / p] with p ~ Beta(a, b+x): the
    BG/NBD expectation given (λ, p) is (1 - e^(-λpt))/p, and λ's Gamma(r+x, α+T) posterior integrates out
    in closed form. Gauss-Legendre over the central 1 - 2e-12 of the Beta distribution, with the density
    in log space: accurate (≈1e-10) when a ≳ 2, exactly where the closed form overflows."""
    from scipy.stats import beta as beta_distribution  # imported here: scipy.stats is slow to import

    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    out = np.empty_like(x)
    u, w = np.polynomial.legendre.leggauss(nodes)
    for xv in np.unique(x):
        rows = x == xv
        lo, hi = beta_distribution.ppf([1e-12, 1.0 - 1e-12], a, b + xv)
        p = lo + (hi - lo) * (u + 1.0) / 2.0
        weight = (
            w
            * (hi - lo)
            / 2.0
            * np.exp((a - 1.0) * np.log(p) + (b + xv - 1.0) * np.log1p(-p) - betaln(a, b + xv))
        )
        base = alpha + T[rows][:, None]
        value = -np.expm1((r + xv) * (np.log(base) - np.log(base + p[None, :] * t))) / p[None, :]
        out[rows] = value @ weight
    return out


def bgnbd_expected_purchases_new(params: BgNbdParams, t) -> np.ndarray:
    """E[X(t)]: expected repeat purchases by time t after the first purchase for a new customer (eq. 9)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    t = np.asarray(t, dtype=float)
    z = t / (alpha + t)
    # Euler's transformation as above: (α/(α+t))^r 2F1(r, b; a+b-1; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b-1; z).
    hyp = hyp2f1(a + b - 1.0 - r, a - 1.0, a + b - 1.0, z)
    return (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** (a - 1.0) * hyp)


def bgnbd_next_purchase_wait(params: BgNbdParams, x, T, p_alive, probability: float = 0.5) -> np.ndarray:
    """Time from the end of observation until the customer has more likely than not (by default) bought
    again: the t with P(next purchase within t) = p_alive · (1 - ((α+T)/(α+T+t))^(r+x)) = probability.

    While alive, the BG/NBD customer cannot drop out before their next purchase, so the wait is
    exponential in λ, whose posterior is Gamma(r+x, α+T). NaN where p_alive ≤ probability: the model then
    thinks it more likely than not that there is no next purchase."""
    x = np.asarray(x, dtype=float)
    T = np.asarray(T, dtype=float)
    p_alive = np.asarray(p_alive, dtype=float)
    wait = np.full_like(x, np.nan)
    ok = p_alive > probability
    remaining = 1.0 - probability / p_alive[ok]
    wait[ok] = (params.alpha + T[ok]) * np.expm1(-np.log(remaining) / (params.r + x[ok]))
    return wait


# --- Gamma-Gamma -----------------------------------------------------------------------------------


def gamma_gamma_log_likelihood_terms(p, q, gamma, x, m) -> np.ndarray:
    """Per-customer log-density of the mean spend m over x repeat purchases (Fader & Hardie 2013, eq. 5)."""
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(gamma)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(gamma + x * m)
    )


def _gg_negll_and_grad(log_params, x, m, w, xs, xs_w, const):
    """Negative log-likelihood and gradient in log-parameters. Only ln(γ + x·m) needs every customer;
    the gamma functions depend on x alone and the remaining sums are constants (`const`)."""
    p, q, gamma = np.exp(log_params)
    sum_wx_ln_m_x, sum_w_ln_m = const
    n = xs_w.sum()
    pxs = p * xs
    ln_gxm = np.log(gamma + x * m)
    ll = (
        np.dot(xs_w, gammaln(pxs + q) - gammaln(pxs))
        + n * (q * np.log(gamma) - gammaln(q))
        + p * sum_wx_ln_m_x
        - sum_w_ln_m
        - np.dot(w, (p * x + q) * ln_gxm)
    )
    if not np.isfinite(ll):
        return 1e300, np.zeros(3)
    psi = digamma(pxs + q)
    d_p = np.dot(xs_w, xs * (psi - digamma(pxs))) + sum_wx_ln_m_x - np.dot(w, x * ln_gxm)
    d_q = np.dot(xs_w, psi) - n * digamma(q) + n * np.log(gamma) - np.dot(w, ln_gxm)
    d_gamma = n * q / gamma - np.dot(w, (p * x + q) / (gamma + x * m))
    grad = np.array([d_p * p, d_q * q, d_gamma * gamma])
    return -ll, -grad


def gamma_gamma_fit(
    x, m, weights=None, initial: tuple[float, float, float] | None = None
) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma parameters from customers with at least one repeat purchase
    (x ≥ 1) and a positive mean repeat spend m; other rows are ignored."""
    x = np.asarray(x, dtype=float)
    m = np.asarray(m, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    keep = (x > 0) & (m > 0)
    x, m, w = x[keep], m[keep], w[keep]
    mean = float(np.average(m, weights=w)) if len(m) else 1.0
    ln_m = np.log(m)
    const = (float(np.dot(w, x * (ln_m + np.log(x)))), float(np.dot(w, ln_m)))
    # Start where E[M] = pγ/(q-1) equals the observed mean spend.
    initial = np.log(initial if initial is not None else (1.0, 2.0, max(mean, 1e-6)))
    result = minimize(
        _gg_negll_and_grad,
        initial,
        args=(x, m, w, *_weight_by_value(x, w), const),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 2 + [(-_LOG_BOUND, 2 * _LOG_BOUND)],
        options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-8},
    )
    p, q, gamma = np.exp(result.x)
    return GammaGammaParams(
        p=float(p),
        q=float(q),
        gamma=float(gamma),
        log_likelihood=float(-result.fun),
        converged=bool(result.success),
        iterations=int(result.nit),
    )


def gamma_gamma_expected_spend(params: GammaGammaParams, x, m) -> np.ndarray:
    """E[M | x, m]: a weighted mean of the population mean and the customer's own mean repeat spend
    (note eq. 8). Customers with no repeat purchase get the population mean."""
    x = np.asarray(x, dtype=float)
    m = np.asarray(m, dtype=float)
    p, q, gamma = params.p, params.q, params.gamma
    own = np.where(x > 0, m, 0.0)
    return (p * (gamma + x * own)) / (p * x + q - 1.0)
