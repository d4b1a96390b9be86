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
//! - [`ShareCache`] on each position: its share, tagged with the epoch it was computed in. It
//!   stays good until its own market's mark moves (the market records the epoch of its last move)
//!   or the position changes. After one market's mark moves, re-valuing an account with ten
//!   positions re-prices one of them and adds up the other nine.
//!
//! Neither is state: equality ignores them, a clone and a snapshot start without them (so a what-if
//! copy can never answer from the original's numbers), and debug builds check every answer against
//! a fresh valuation. Every mutable access to a position goes through `Account::position_mut`,
//! which forgets both.

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

/// A position's [`Share`] as last computed, with the valuation epoch it was computed in; epoch 0
/// (never current: epochs start at 1) means none.
#[derive(Default)]
pub(crate) struct ShareCache(Cell<(u64, Share)>);

impl ShareCache {
    /// The cached share, if it was computed no earlier than `marked_at`, the epoch in which the
    /// position's market last moved.
    #[inline]
    pub(crate) fn get(&self, marked_at: u64) -> Option<Share> {
        let (at, share) = self.0.get();
        (at != 0 && at >= marked_at).then_some(share)
    }

    /// Remembers `share`, computed in `epoch`.
    #[inline]
    pub(crate) fn set(&self, epoch: u64, share: Share) {
        self.0.set((epoch, share));
    }

    /// Forgets the cached share.
    #[inline]
    pub(crate) fn clear(&self) {
        self.0.set((0, Share::default()));
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
