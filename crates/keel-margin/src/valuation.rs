//! Cached valuations: what an account's margin totals and each position's share of them were when
//! last computed, so that a pre-trade check re-prices only what moved.
//!
//! Valuing an account re-prices every position at its mark. Between two moves of a market's mark
//! a position's share (unrealized PnL, initial and maintenance margin, order reservations) cannot
//! change unless the position itself does, and between any two price moves the account's totals
//! cannot change unless the account does. So there are two layers:
//!
//! - [`SummaryCache`] on the account: the totals, tagged with the clearinghouse's valuation epoch.
//!   Any price move starts a new epoch, so it answers only while nothing at all has moved — the
//!   common case for an account that sends many orders between two marks (a market maker).
//! - [`ShareCache`] on each position: its share, tagged with the mark it was computed at. It is
//!   exact while its market's mark stands there and the position does not change. After one
//!   market's mark moves, re-valuing an account with ten positions re-prices one of them and adds
//!   up the other nine.
//!
//! A share computed at another mark still bounds the share now: unrealized PnL, the initial
//! margin of the position and the reservation of its orders all move by at most
//! `k · |Δmark| · lots` (see [`Share::drift`]). That is what the pre-trade check's floor under
//! available margin adds up (`Clearinghouse::available_floor`): an order that fits under the floor
//! is accepted without re-pricing the account at all, which is almost every order of a funded
//! account; only an order close to the edge pays for the exact valuation.
//!
//! A third cache, [`WorstCache`], keeps each position's least possible contribution to
//! `equity − maintenance`, which no mark changes: the maintenance index's test for accounts no
//! mark can liquidate adds these up instead of solving every position after every fill.
//!
//! None of them is state: equality ignores them, a clone and a snapshot start without them (so a
//! what-if copy can never answer from the original's numbers), and debug builds check every answer
//! against a fresh computation. Every mutable access to a position goes through
//! `Account::position_mut`, which forgets the position's caches and its account's totals.

use crate::clearinghouse::MarginSummary;
use crate::market::MarginBasis;
use crate::position::{MarginMode, Position};
use crate::tier::RiskTiers;
use keel_types::{ArithmeticError, Money, Price};
use std::cell::Cell;

/// One position's share of its account's cross totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Share {
    /// Unrealized PnL counted in cross equity (zero for an isolated position: its PnL stays
    /// behind its fence).
    pub(crate) upnl: Money,
    /// Initial margin of the position (cross only) plus the reservation of its resting orders
    /// (cross and isolated alike).
    pub(crate) initial: Money,
    /// Maintenance margin counted in the cross total (zero for an isolated position).
    pub(crate) maintenance: Money,
}

impl Share {
    /// The share of `p` with its market marked at `mark`.
    #[inline]
    pub(crate) fn of(
        p: &Position,
        mark: Price,
        k: i64,
        basis: MarginBasis,
        tiers: &RiskTiers,
    ) -> Result<Share, ArithmeticError> {
        let mut share = Share { initial: p.order_reservation(mark, k)?, ..Share::default() };
        if p.mode == MarginMode::Cross && p.size.0 != 0 {
            let (upnl, margin_notional) = p.valuation(mark, k, basis)?;
            share.upnl = upnl;
            share.initial = share.initial.checked_add(p.initial_margin(margin_notional)?)?;
            share.maintenance = p.maintenance_margin(margin_notional, tiers)?;
        }
        Ok(share)
    }

    /// The most a share of `p` can have moved, as a contribution to available margin, since it
    /// was computed at mark `from` with the mark now at `to`; `None` when the bound does not fit
    /// in `u64` (the caller then takes the exact valuation).
    ///
    /// Unrealized PnL (`size·k·mark − cost`) moves by exactly `|size|·k·|Δmark|`. The initial
    /// margin, `ceil(|size·k·mark| / leverage)` with leverage at least 1 (or on the entry basis
    /// not at all), moves by at most as much: `|⌈a⌉ − ⌈b⌉| ≤ ⌈|a − b|⌉`. Each side's order
    /// reservation is a mark-free initial margin plus an open loss `max(0, ±(notional − mark·q·k))`
    /// over its opening quantity `q ≤` the side's open quantity, so it moves by at most
    /// `q·k·|Δmark|`, and the larger of the two sides by at most the sum. Isolated positions count
    /// only the reservation, which the same bound covers.
    #[inline]
    pub(crate) fn drift(p: &Position, k: i64, from: Price, to: Price) -> Option<u64> {
        // Plain `u64` with every step checked: this runs for every position of almost every
        // order, and no realistic bound comes near the limit.
        let per_lot = to.0.abs_diff(from.0).checked_mul(k.unsigned_abs())?;
        let lots = p.size.0.unsigned_abs().checked_mul(2)?;
        let lots =
            lots.checked_add(p.buys.qty.0.unsigned_abs())?.checked_add(p.sells.qty.0.unsigned_abs())?;
        lots.checked_mul(per_lot)
    }

    /// Adds this share into account totals.
    #[inline]
    pub(crate) fn add_to(&self, s: &mut MarginSummary) -> Result<(), ArithmeticError> {
        s.equity = s.equity.checked_add(self.upnl)?;
        s.realized_equity = s.realized_equity.checked_add(self.upnl.min(Money::ZERO))?;
        s.initial_margin = s.initial_margin.checked_add(self.initial)?;
        s.maintenance_margin = s.maintenance_margin.checked_add(self.maintenance)?;
        Ok(())
    }
}

/// A position's [`Share`] as last computed, with the mark it was computed at; mark 0 (never a
/// price: prices are at least one tick) means none.
#[derive(Default)]
pub(crate) struct ShareCache(Cell<(i64, Share)>);

impl ShareCache {
    /// The cached share, if it was computed at `mark`: a share is a function of the position and
    /// its market's mark alone, so it is exact.
    #[inline]
    pub(crate) fn get(&self, mark: Price) -> Option<Share> {
        let (at, share) = self.0.get();
        (at == mark.0).then_some(share)
    }

    /// The cached share and the mark it was computed at, whatever the mark is now.
    #[inline]
    pub(crate) fn last(&self) -> Option<(Price, Share)> {
        let (at, share) = self.0.get();
        (at != 0).then_some((Price(at), share))
    }

    /// Remembers `share`, computed at `mark`.
    #[inline]
    pub(crate) fn set(&self, mark: Price, share: Share) {
        self.0.set((mark.0, share));
    }

    /// Forgets the cached share.
    #[inline]
    pub(crate) fn clear(&self) {
        self.0.set((0, Share::default()));
    }
}

/// The least a cross position can ever add to its account's `equity − maintenance` (its value at
/// its worst price in range: see `Solver::worst_surplus`), as last computed. It depends on the
/// position's size and cost and its market's fixed parameters only, not on any mark, so it stays
/// good until the position changes. `i64::MIN` means none (a value outside `i64` is not kept).
pub(crate) struct WorstCache(Cell<i64>);

impl Default for WorstCache {
    fn default() -> WorstCache {
        WorstCache(Cell::new(i64::MIN))
    }
}

impl WorstCache {
    /// The cached value, if any.
    #[inline]
    pub(crate) fn get(&self) -> Option<i128> {
        let worst = self.0.get();
        (worst != i64::MIN).then_some(i128::from(worst))
    }

    /// Remembers `worst`, if it fits.
    #[inline]
    pub(crate) fn set(&self, worst: i128) {
        self.0.set(i64::try_from(worst).unwrap_or(i64::MIN));
    }

    /// Forgets the cached value.
    #[inline]
    pub(crate) fn clear(&self) {
        self.0.set(i64::MIN);
    }
}

/// An account's [`MarginSummary`] as last computed, tagged with the valuation epoch of the
/// clearinghouse at the time; epoch 0 (never current) means none.
#[derive(Default)]
pub(crate) struct SummaryCache(Cell<(u64, MarginSummary)>);

impl SummaryCache {
    /// The cached summary, if it was computed in `epoch`.
    #[inline]
    pub(crate) fn get(&self, epoch: u64) -> Option<MarginSummary> {
        let (at, summary) = self.0.get();
        (at == epoch).then_some(summary)
    }

    /// Remembers `summary`, computed in `epoch`.
    #[inline]
    pub(crate) fn set(&self, epoch: u64, summary: MarginSummary) {
        self.0.set((epoch, summary));
    }

    /// Forgets the cached summary.
    #[inline]
    pub(crate) fn clear(&self) {
        self.0.set((0, MarginSummary::default()));
    }
}

/// Clone, equality and debug output for a cache that is not state: a copy starts empty, any two
/// compare equal, and debug output names the type only.
macro_rules! not_state {
    ($cache:ident) => {
        impl Clone for $cache {
            fn clone(&self) -> $cache {
                $cache::default()
            }
        }

        impl PartialEq for $cache {
            fn eq(&self, _: &$cache) -> bool {
                true
            }
        }

        impl Eq for $cache {}

        impl std::fmt::Debug for $cache {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($cache))
            }
        }
    };
}

not_state!(SummaryCache);
not_state!(ShareCache);
not_state!(WorstCache);
