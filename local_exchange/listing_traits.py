"""Traits handed out across the whole generated universe at once: price levels, status flags and trade rates.

Assigned after every row exists, by quantile or by count rather than drawn per listing, so the proportions the
collector's universe rules are tested against (the share at or above 4,000 KRW, halted and administrative names,
a busy head) come out exact rather than subject to sampling noise.
"""

from __future__ import annotations

import math

import numpy as np

# Activity (mean trades/s of continuous trading, 09:00-15:20), anchored on KRX: the whole market prints millions
# of trades a day, an ordinary common share trades every few seconds to a minute, the largest caps several times a
# second. The top TOP_BUSY listings run from HEAD_MAX down to HEAD_MIN trades/s, a second tier of SECOND_TIER from
# SECOND_MAX down to SECOND_MIN; the rest are log-normal around a median per kind (COMMON_MEDIAN for a common
# share: one trade every ~14 s), and a QUIET_SHARE of the generated common shares, ETNs and SPACs is deliberately
# thin (one trade every 8-30 minutes). About 12 M trades on a default 2,600-listing KRX day.
TOP_BUSY = 40
SECOND_TIER = 20
HEAD_MAX, HEAD_MIN = 12.0, 3.0
SECOND_MAX, SECOND_MIN = 2.5, 0.8
COMMON_MEDIAN = 0.07
TAIL_MAX = 1.5  # the log-normal tail stays below the second tier
QUIET_SHARE = 0.03
QUIET_RANGE = (0.0005, 0.002)
# The real listings (rows marked "known") trade at this rate when a small sim has no busy slot for them: a fixed
# rate, not a draw, so the real names are the same listings under every seed.
KNOWN_MIN_ACTIVITY = 0.5

# Generated listings' market caps (KRW at their price level) above the knee are compressed by a power and capped,
# so the real listings (about 10 trillion KRW and up) stay the largest even after years of each chain's drift.
GENERATED_CAP_KNEE = 5e11
GENERATED_CAP_MAX = 2e12
_CAP_POWER = 0.3


def assign_common_levels(rng: np.random.Generator, commons: list[dict], top: int = 0) -> None:
    """Spread generated common-share price levels by quantile so ~60 % of all common shares sit at or above 4,000 KRW.

    Quantiles of a log-normal (median 5,200 KRW, sd 0.5 decades) are handed out in random order:
    the cross-section is then exact rather than subject to sampling noise, and the daily chain's
    mean reversion keeps the share >= 4,000 inside 55-65 % on every day. The `top` highest quantiles are
    left to the real listings, whose own levels are all far above 4,000 KRW, so the share holds with them.
    """
    m = len(commons)
    if m == 0:
        return
    q = (np.arange(m) + 0.5) / (m + top)
    z = _norm_ppf(q)
    levels = 10 ** (np.log10(5_200) + 0.5 * z)
    levels = np.clip(levels, 300, 1_500_000)
    perm = rng.permutation(m)
    for r, lvl in zip(commons, levels[perm]):
        r["base_level"] = float(lvl)


def _norm_ppf(q: np.ndarray) -> np.ndarray:
    """Inverse standard normal CDF (Acklam's rational approximation; |error| < 1.2e-9)."""
    a = (
        -3.969683028665376e01,
        2.209460984245205e02,
        -2.759285104469687e02,
        1.383577518672690e02,
        -3.066479806614716e01,
        2.506628277459239e00,
    )
    b = (
        -5.447609879822406e01,
        1.615858368580409e02,
        -1.556989798598866e02,
        6.680131188771972e01,
        -1.328068155288572e01,
    )
    c = (
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e00,
        -2.549732539343734e00,
        4.374664141464968e00,
        2.938163982698783e00,
    )
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    q = np.asarray(q, dtype=float)
    out = np.empty_like(q)
    lo, hi = q < 0.02425, q > 1 - 0.02425
    mid = ~(lo | hi)
    t = np.sqrt(-2 * np.log(q[lo]))
    out[lo] = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
        (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1
    )
    t = np.sqrt(-2 * np.log(1 - q[hi]))
    out[hi] = -(((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
        (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1
    )
    s = q[mid] - 0.5
    r = s * s
    out[mid] = (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * s
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )
    return out


def assign_flags(rng: np.random.Generator, rows: list[dict]) -> None:
    """Halted, delisting-pending, administrative and market-alarm names, at least two of each."""
    for r in rows:
        r.update(halted=False, liquidation=False, administrative=False, alarm="00")
    commons = [r for r in rows if r["cat"] == "common" and not r.get("known")]  # real large caps keep a clean record
    m = len(commons)
    if m == 0:
        return

    def pick(frac: float, minimum: int) -> list[dict]:
        k = min(m, max(minimum if m >= 50 else 0, int(round(frac * m))))
        return [commons[int(i)] for i in rng.choice(m, size=k, replace=False)]

    for r in pick(0.010, 2):
        r["halted"] = True
    for r in pick(0.020, 2):
        r["administrative"] = True
    for r in pick(0.003, 2):
        r["liquidation"] = True
        r["administrative"] = True  # delisting-pending names are designated administrative first
        r["base_level"] = r["base_level"] * 0.3
    for code, frac in (("01", 0.02), ("02", 0.005), ("03", 0.002)):
        for r in pick(frac, 1):
            if r["alarm"] == "00":
                r["alarm"] = code
    etns = [r for r in rows if r["cat"] == "etn"]
    if len(etns) >= 10:
        etns[int(rng.integers(len(etns)))]["halted"] = True


def assign_activity(rng: np.random.Generator, rows: list[dict]) -> None:
    """Heavy-tailed trade rates: a busy head (3-12 trades/s), a second tier, a log-normal body, a quiet few.

    The real common shares lead the head, largest first; the rest of it is drawn from the generated ones.
    Preferred shares, SPACs, ETNs and most ETFs trade less than common shares, as on KRX.
    """
    median = {"common": COMMON_MEDIAN, "preferred": 0.01, "spac": 0.006, "etf": 0.02, "etn": 0.006}
    for r in rows:
        med = median.get(r["cat"], 0.008)
        r["activity"] = min(TAIL_MAX, max(0.001, med * math.exp(float(rng.normal(0.0, 0.9)))))
    known = [i for i, r in enumerate(rows) if r.get("known") and r["cat"] == "common"]
    candidates = [
        i
        for i, r in enumerate(rows)
        if not r.get("known") and not r["halted"] and not r["liquidation"] and r["cat"] in ("common", "etf")
    ]
    n_head = min(len(known) + len(candidates), TOP_BUSY + SECOND_TIER, max(3, len(rows) // 40))
    head = known[:n_head]
    k = n_head - len(head)
    if k > 0:
        # mostly large common shares, a few leveraged/inverse-style ETFs, as on KRX; a common share
        # always leads, so even a tiny sim has a busy stock to stream
        weights = np.array([4.0 if rows[i]["cat"] == "common" else 1.0 for i in candidates])
        drawn = rng.choice(np.array(candidates), size=k, replace=False, p=weights / weights.sum()).tolist()
        if not head:
            first_common = next((j for j, i in enumerate(drawn) if rows[i]["cat"] == "common"), 0)
            drawn.insert(0, drawn.pop(first_common))
        head += drawn
    for rank, i in enumerate(head):
        r = rows[int(i)]
        if rank < TOP_BUSY:
            r["activity"] = float(HEAD_MIN * (HEAD_MAX / HEAD_MIN) ** ((TOP_BUSY - 1 - rank) / max(TOP_BUSY - 1, 1)))
            if r["cat"] == "common" and not r.get("known"):  # busy names are large caps (compress_generated_caps)
                r["listed_shares"] = int(min(6e9, float(rng.uniform(2e12, 4e13)) / max(r["base_level"], 1.0)))
        else:
            j = rank - TOP_BUSY
            r["activity"] = float(SECOND_MAX * (SECOND_MIN / SECOND_MAX) ** (j / max(SECOND_TIER - 1, 1)))
    # the deliberately quiet few, drawn last so the draws above (and so the head) do not depend on them
    in_head = {int(i) for i in head}
    thin = [
        i
        for i, r in enumerate(rows)
        if i not in in_head and not r.get("known") and not r["halted"] and r["cat"] in ("common", "etn", "spac")
    ]
    n_quiet = min(len(thin), int(round(QUIET_SHARE * len(thin))))
    if n_quiet:
        lo, hi = QUIET_RANGE
        for i, u in zip(rng.choice(len(thin), size=n_quiet, replace=False).tolist(), rng.random(n_quiet).tolist()):
            rows[thin[i]]["activity"] = lo * (hi / lo) ** u
    for i, r in enumerate(rows):
        if r.get("known") and i not in in_head:
            r["activity"] = KNOWN_MIN_ACTIVITY
        if r["halted"]:
            r["activity"] = 0.0


def compress_generated_caps(rows: list[dict]) -> None:
    """Shrink each generated listing's share count so its market cap at its price level stays under the real ones.

    Above GENERATED_CAP_KNEE a cap c becomes knee * (c / knee) ** 0.3, at most GENERATED_CAP_MAX: the order of
    the generated listings is kept, and their largest sit five times below the smallest real listing.
    """
    for r in rows:
        if r.get("known"):
            continue
        level = max(float(r["base_level"]), 1.0)
        cap = level * r["listed_shares"]
        if cap > GENERATED_CAP_KNEE:
            target = min(GENERATED_CAP_MAX, GENERATED_CAP_KNEE * (cap / GENERATED_CAP_KNEE) ** _CAP_POWER)
            r["listed_shares"] = max(1, int(target / level))
