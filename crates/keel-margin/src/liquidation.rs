//! Liquidation and bankruptcy prices: the mark at which a position's equity falls to its
//! maintenance margin, and to zero.
//!
//! Equity is linear in the mark, `E(p) = X + s·k·p − C`, where `X` is the margin backing the
//! position (isolated: its fenced margin; cross: balance + collateral + other positions' PnL held
//! at their current marks, as Binance computes it), `s` the size, `k` money per tick-lot and `C`
//! the cost basis. Maintenance is `M(p) = M_other + |s|·k·p·MMR_t − cum_t` on a mark basis (tier
//! `t` by the notional at `p`) or a constant on an entry basis. The closed form per tier is
//! Binance's `LP = (WB − TMM1 + UPNL1 + cum − side·Q·EP) / (Q·MMR − side·Q)`; it seeds an exact
//! search on the integer functions so the answer agrees to the tick with how the account is
//! actually evaluated.

use crate::market::MarginBasis;
use crate::rate::{Rate, div_round_wide, narrow};
use crate::tier::RiskTiers;
use keel_types::{ArithmeticError, Money, Price, Rounding};

/// A position and the fixed margin context it is liquidated in.
pub(crate) struct Solver<'a> {
    /// Signed size in lots (non-zero).
    pub(crate) size: i64,
    /// Cost basis.
    pub(crate) cost: i64,
    /// Money per tick-lot.
    pub(crate) k: i64,
    /// Margin backing the position other than its own PnL.
    pub(crate) backing: i128,
    /// Maintenance margin of the other positions sharing the equity.
    pub(crate) other_maintenance: i128,
    pub(crate) tiers: &'a RiskTiers,
    pub(crate) basis: MarginBasis,
    pub(crate) max_price: i64,
}

impl Solver<'_> {
    /// Equity at mark `p`.
    fn equity(&self, p: i64) -> Result<i128, ArithmeticError> {
        let value = i128::from(self.size) * i128::from(p) * i128::from(self.k);
        Ok(self.backing + value - i128::from(self.cost))
    }

    /// Maintenance margin at mark `p`, computed exactly as the account evaluation does.
    fn maintenance(&self, p: i64) -> Result<i128, ArithmeticError> {
        let notional = match self.basis {
            MarginBasis::MarkValue => {
                narrow(i128::from(self.size.unsigned_abs()) * i128::from(p) * i128::from(self.k))?
            }
            MarginBasis::EntryValue => self.cost.checked_abs().ok_or(ArithmeticError::Overflow)?,
        };
        Ok(self.other_maintenance + i128::from(self.tiers.maintenance_margin(Money(notional))?.0))
    }

    /// True when the position would be liquidated at mark `p` (equity at or below maintenance).
    pub(crate) fn liquidatable(&self, p: i64) -> Result<bool, ArithmeticError> {
        Ok(self.equity(p)? <= self.maintenance(p)?)
    }

    /// Equity minus maintenance at the mark worst for the position: the lowest price for a long,
    /// the highest for a short. With `backing` and `other_maintenance` zero it is the least the
    /// position can ever add to its account's `equity − maintenance`, since both move
    /// monotonically with the mark (every maintenance rate is below 100 %), as the search
    /// below relies on too.
    pub(crate) fn worst_surplus(&self) -> Result<i128, ArithmeticError> {
        let p = if self.size > 0 { 1 } else { self.max_price };
        Ok(self.equity(p)? - self.maintenance(p)?)
    }

    /// The closed-form root, per tier on a mark basis, picking the tier its own notional falls in.
    /// Only a starting point for the exact search: if it cannot be computed, the search starts at 1.
    fn seed(&self) -> i64 {
        self.closed_form().unwrap_or(1).clamp(1, i128::from(self.max_price)) as i64
    }

    fn closed_form(&self) -> Option<i128> {
        let s = i128::from(self.size);
        let k = i128::from(self.k);
        let scale = i128::from(Rate::SCALE);
        let base = self.other_maintenance.checked_sub(self.backing)?.checked_add(i128::from(self.cost))?;
        match self.basis {
            MarginBasis::EntryValue => {
                let own = i128::from(self.tiers.maintenance_margin(Money(self.cost)).ok()?.0);
                div_round_wide(base.checked_add(own)?, s.checked_mul(k)?, Rounding::Floor).ok()
            }
            MarginBasis::MarkValue => {
                let tiers = self.tiers.tiers();
                let mut guess = None;
                for (i, tier) in tiers.iter().enumerate() {
                    let num = base.checked_sub(i128::from(tier.maintenance_amount.0))?.checked_mul(scale)?;
                    let per_lot = s
                        .checked_mul(scale)?
                        .checked_sub(s.abs().checked_mul(i128::from(tier.maintenance_rate.0))?)?;
                    let root = div_round_wide(num, k.checked_mul(per_lot)?, Rounding::Floor).ok()?;
                    guess = Some(root);
                    let n = s.abs().checked_mul(root)?.checked_mul(k)?;
                    let upper = tiers.get(i + 1).map_or(i128::MAX, |t| i128::from(t.floor.0));
                    if n >= i128::from(tier.floor.0) && n < upper {
                        break;
                    }
                }
                guess
            }
        }
    }

    /// Liquidation price in ticks. Long: the highest mark at which the position is liquidatable;
    /// short: the lowest. `None` when no mark in `1..=max_price` liquidates it.
    pub(crate) fn liquidation_price(&self) -> Result<Option<Price>, ArithmeticError> {
        // The bounds first: a well-funded position has no liquidation price in range, and
        // finding that out costs two evaluations instead of a closed-form seed per tier.
        let max = self.max_price;
        if self.size > 0 {
            if !self.liquidatable(1)? {
                return Ok(None);
            }
            if self.liquidatable(max)? {
                return Ok(Some(Price(max)));
            }
            last_true(1, max, self.seed(), |p| self.liquidatable(p)).map(|p| Some(Price(p)))
        } else {
            if !self.liquidatable(max)? {
                return Ok(None);
            }
            if self.liquidatable(1)? {
                return Ok(Some(Price(1)));
            }
            let guess = self.seed().saturating_sub(1).max(1);
            let safe = last_true(1, max, guess, |p| self.liquidatable(p).map(|l| !l))?;
            Ok(Some(Price(safe + 1)))
        }
    }

    /// Bankruptcy price in ticks, where equity reaches zero: for a long the lowest mark with
    /// equity ≥ 0 (rounded up), for a short the highest (rounded down), so a close at this price
    /// never leaves a deficit. `None` for a long that cannot go bankrupt at a positive price; a
    /// short already bankrupt at any price gets 0.
    pub(crate) fn bankruptcy_price(&self) -> Result<Option<Price>, ArithmeticError> {
        let num = i128::from(self.cost) - self.backing;
        let den = i128::from(self.size) * i128::from(self.k);
        if self.size > 0 {
            let p = div_round_wide(num, den, Rounding::Ceil)?;
            if p <= 0 { Ok(None) } else { narrow(p).map(|p| Some(Price(p))) }
        } else {
            let p = div_round_wide(num, den, Rounding::Floor)?;
            narrow(p.max(0)).map(|p| Some(Price(p)))
        }
    }
}

/// The largest `p` in `[lo, hi)` with `pred(p)`, given `pred(lo)` and `!pred(hi)` and `pred`
/// monotone (true then false). Gallops out from `guess`, then bisects: a good seed costs a
/// handful of evaluations, a bad one only `O(log range)`.
fn last_true(
    mut lo: i64,
    mut hi: i64,
    guess: i64,
    mut pred: impl FnMut(i64) -> Result<bool, ArithmeticError>,
) -> Result<i64, ArithmeticError> {
    let g = guess.clamp(lo, hi - 1);
    let mut step = 1i64;
    if pred(g)? {
        lo = g;
        loop {
            let t = lo.saturating_add(step);
            if t >= hi {
                break;
            }
            if pred(t)? {
                lo = t;
                step = step.saturating_mul(2);
            } else {
                hi = t;
                break;
            }
        }
    } else {
        hi = g;
        loop {
            let t = hi.saturating_sub(step);
            if t <= lo {
                break;
            }
            if pred(t)? {
                lo = t;
                break;
            }
            hi = t;
            step = step.saturating_mul(2);
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if pred(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_true_finds_the_boundary_from_any_seed() {
        for boundary in [0i64, 1, 2, 17, 998] {
            for guess in [-5i64, 0, 1, 16, 17, 18, 500, 999, 5_000] {
                let found = last_true(0, 999, guess, |p| Ok(p <= boundary)).unwrap();
                assert_eq!(found, boundary, "boundary {boundary} guess {guess}");
            }
        }
    }
}
