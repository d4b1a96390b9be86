//! Auto-deleveraging ranking: which opposing positions are closed first when a bankrupt close
//! cannot be filled in the book and the fund cannot pay for it.
//!
//! Venues (Binance USDⓈ-M "ADL ranking", Bybit "auto-deleveraging") rank every position of a
//! market side by
//!
//! ```text
//! PnL% = unrealized PnL / |entry value|              effective leverage = |mark value| / equity
//! score = PnL% × effective leverage   if PnL% > 0    (profitable: the most leveraged winners first)
//! score = PnL% / effective leverage   otherwise      (losing positions after every winner)
//! ```
//!
//! where equity is the account's cross equity (balance + collateral + cross unrealized PnL) for a
//! cross position and the position's own margin plus unrealized PnL for an isolated one. Scores
//! are fixed point with 10^8 = 1.0 (a 100% profit at 1x effective leverage), rounded down; a
//! position whose pool has no positive equity ranks last. Ties go to the lower account id.
//!
//! **Kept incrementally.** Each market keeps its long and short positions in ordered sets keyed
//! by score. Accounts that changed (the clearinghouse's change feed) are re-scored one by one,
//! `O(positions × log n)` each. Scores also move with every mark, and the order at a mark is not
//! the order at another, so before deleveraging in a market the ranking is re-scored in full
//! *only if* some mark moved since its last full ranking: once per mark that needs ADL, not once
//! per event, and every deleveraging step after that at the same marks costs `O(log n)`.
//! The quantiles venues show (1–5) come from the thresholds of the last full ranking or sweep.
//!
//! **A rolling refresh for the quantiles.** Re-scoring every position at once is `O(n log n)`
//! work in one command — milliseconds at 100,000 accounts, during which every order waits. The
//! quantiles shown to traders are therefore refreshed by a sweep spread over engine time
//! ([`AdlRanking::start_refresh`], [`AdlRanking::refresh_due`], [`AdlRanking::step_refresh`]):
//! it re-scores the accounts in slot order on a schedule over the first half of its span, then
//! walks each market side in rank order over the second half to find its cut points at
//! 20/40/60/80%, and replaces a side's thresholds when its walk is done. Each command does what
//! the schedule owes, a little at a time. The quantiles between two sweeps are those of the last
//! completed one. Deleveraging does not use the sweep: it still re-ranks its market in full at
//! the current marks first.

use crate::LiquidationError;
use keel_margin::{Clearinghouse, MarginMode, Position};
use keel_types::{AccountId, MarketId, Money, Price};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

/// Fixed-point scale of an ADL score: 10^8 is 1.0.
pub const ADL_SCORE_SCALE: i128 = 100_000_000;

/// The ADL score of a position (see the module documentation): `upnl`, the absolute entry value
/// `entry_value`, the absolute mark value `mark_value` and the equity of its margin pool.
pub fn adl_score(upnl: i128, entry_value: i128, mark_value: i128, equity: i128) -> i64 {
    if equity <= 0 || entry_value <= 0 || mark_value <= 0 {
        return i64::MIN;
    }
    // PnL% × leverage = upnl × mark value / (entry value × equity); PnL% / leverage = upnl ×
    // equity / (entry value × mark value). One rounding when the products fit 128 bits; two
    // (ratio first) for amounts near the 64-bit limits, saturating beyond.
    let (factor, divisor) = if upnl > 0 { (mark_value, equity) } else { (equity, mark_value) };
    let exact = upnl
        .checked_mul(factor)
        .and_then(|n| n.checked_mul(ADL_SCORE_SCALE))
        .zip(entry_value.checked_mul(divisor))
        .map(|(n, d)| n.div_euclid(d));
    let score = exact.unwrap_or_else(|| {
        let ratio = (upnl * ADL_SCORE_SCALE).div_euclid(entry_value);
        let saturated = if upnl > 0 { i128::MAX } else { i128::MIN };
        ratio.checked_mul(factor).map_or(saturated, |n| n.div_euclid(divisor))
    });
    score.clamp(i128::from(i64::MIN) + 1, i128::from(i64::MAX)) as i64
}

/// One market side in rank order, with the quantile thresholds of its last full ranking.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SideRank {
    order: BTreeSet<(Reverse<i64>, AccountId)>,
    /// Lowest score still in the top 20%, 40%, 60%, 80% at the last full ranking.
    thresholds: Vec<i64>,
}

impl SideRank {
    fn recompute_thresholds(&mut self) {
        self.thresholds.clear();
        let n = self.order.len();
        if n == 0 {
            return;
        }
        // The last rank inside the top q/5 of the side, for q = 1..=4.
        let last = (n * 4).div_ceil(5);
        let scores: Vec<i64> = self.order.iter().take(last).map(|&(Reverse(s), _)| s).collect();
        for q in 1..=4 {
            self.thresholds.push(scores[(n * q).div_ceil(5) - 1]);
        }
    }

    /// `None` before the side's first full ranking.
    fn quantile(&self, score: i64) -> Option<u8> {
        if self.thresholds.is_empty() {
            return None;
        }
        // Thresholds descend: at or above all four is the top 20% (5), below all is the bottom (1).
        let above = self.thresholds.iter().filter(|&&t| score >= t).count();
        Some(above as u8 + 1)
    }
}

/// The ranking of one market.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MarketRank {
    longs: SideRank,
    shorts: SideRank,
    /// Marks of every ranked market at the last full ranking.
    ranked_at: Vec<(MarketId, Option<Price>)>,
}

impl MarketRank {
    fn side(&mut self, long: bool) -> &mut SideRank {
        if long { &mut self.longs } else { &mut self.shorts }
    }
}

/// The ADL ranking of every market (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdlRanking {
    markets: BTreeMap<MarketId, MarketRank>,
    /// Per account: its ranked positions as (market, long, score).
    members: BTreeMap<AccountId, Vec<(MarketId, bool, i64)>>,
    /// Where the rolling quantile refresh stands. Part of the state (and of a snapshot): a
    /// restored engine continues the sweep exactly where the original was.
    refresh: Refresh,
    /// When the running sweep started (engine time, milliseconds): its schedule's origin.
    refresh_started_ms: u64,
    /// Ranked positions the running sweep's walks step over in all, set as the walks begin,
    /// and how many they have stepped over so far: the walks' share of the schedule.
    to_walk: u64,
    walked: u64,
    #[serde(skip)]
    changed: Vec<AccountId>,
}

/// How much of the rolling refresh one call of [`AdlRanking::step_refresh`] may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshBudget {
    /// Accounts to re-score (each `O(positions × log n)`).
    pub accounts: u32,
    /// Ranked positions to step over while looking for the quantile cut points (each `O(1)`
    /// amortized).
    pub entries: u32,
}

impl RefreshBudget {
    /// Nothing to do.
    pub const NONE: RefreshBudget = RefreshBudget { accounts: 0, entries: 0 };

    /// The larger of two budgets, part by part.
    pub fn max(self, other: RefreshBudget) -> RefreshBudget {
        RefreshBudget {
            accounts: self.accounts.max(other.accounts),
            entries: self.entries.max(other.entries),
        }
    }

    /// The smaller of two budgets, part by part.
    pub fn min(self, other: RefreshBudget) -> RefreshBudget {
        RefreshBudget {
            accounts: self.accounts.min(other.accounts),
            entries: self.entries.min(other.entries),
        }
    }
}

/// `ceil(total × done / span)` for `done ≤ span`, saturating: how much of `total` a schedule
/// over `span` owes after `done`.
fn scheduled(total: u64, done: u64, span: u64) -> u64 {
    let (done, span) = (done.min(span), span.max(1));
    // Every command asks while a sweep runs: a 64-bit division when the product fits.
    match total.checked_mul(done) {
        Some(product) => product.div_ceil(span),
        None => (u128::from(total) * u128::from(done)).div_ceil(u128::from(span)) as u64,
    }
}

/// The stage of the rolling quantile refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
enum Refresh {
    /// No sweep is running.
    #[default]
    Idle,
    /// Re-scoring accounts in slot order; `next` is the next slot.
    Rescoring { next: u32 },
    /// Walking one market side in rank order for its cut points.
    Thresholds(Walk),
}

/// A walk over one market side in rank order, resumable between commands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Walk {
    market: MarketId,
    long: bool,
    /// Size of the side when the walk began: the cut points are ranks of that many.
    total: u64,
    /// Entries stepped over so far (the rank of the next one).
    visited: u64,
    /// The last entry stepped over; the walk resumes after it (the set may change meanwhile,
    /// which moves the cut points by as many ranks as it changed).
    after: Option<(Reverse<i64>, AccountId)>,
    /// Cut points found so far, best first.
    found: Vec<i64>,
}

impl Walk {
    /// The walk of the first side at or after `(market, long)` (longs before shorts), if any.
    fn first_from(markets: &BTreeMap<MarketId, MarketRank>, market: MarketId, long: bool) -> Option<Walk> {
        let mut sides = markets
            .range(market..)
            .flat_map(|(&m, rank)| [(m, true, rank.longs.order.len()), (m, false, rank.shorts.order.len())]);
        // Sides in walk order sort by (market, shorts after longs).
        let (market, long, total) = sides.find(|&(m, l, _)| (m, !l) >= (market, !long))?;
        Some(Walk {
            market,
            long,
            total: total as u64,
            visited: 0,
            after: None,
            found: Vec::with_capacity(4),
        })
    }

    /// The walk of the side after this one, if any.
    fn next(&self, markets: &BTreeMap<MarketId, MarketRank>) -> Option<Walk> {
        if self.long {
            return Walk::first_from(markets, self.market, false);
        }
        let (&market, _) = markets.range((Excluded(self.market), Unbounded)).next()?;
        Walk::first_from(markets, market, true)
    }

    /// The rank of cut point `q` (1–4) of a side of `total`: the last rank in its top q/5.
    fn cut(total: u64, q: u64) -> u64 {
        (total * q).div_ceil(5) - 1
    }
}

impl AdlRanking {
    /// Starts a rolling quantile refresh at engine time `now_ms` (see the module documentation),
    /// unless one is running: a sweep that outlasts the refresh cadence simply finishes first.
    pub fn start_refresh(&mut self, now_ms: u64) {
        if self.refresh == Refresh::Idle {
            self.refresh = Refresh::Rescoring { next: 0 };
            self.refresh_started_ms = now_ms;
            self.to_walk = 0;
            self.walked = 0;
        }
    }

    /// What the running sweep owes at `now_ms` on a schedule that spreads it over `span_ms` of
    /// engine time: the accounts in the first half, the walks in the second. A caller that
    /// steps by this (capped per command) keeps the work per command proportional to elapsed
    /// time, so a busy venue pays a few instructions per command instead of a stall.
    pub fn refresh_due(&self, ch: &Clearinghouse, now_ms: u64, span_ms: u64) -> RefreshBudget {
        let elapsed = now_ms.saturating_sub(self.refresh_started_ms);
        let half = (span_ms / 2).max(1);
        let clamp = |owed: u64| owed.min(u64::from(u32::MAX)) as u32;
        match &self.refresh {
            Refresh::Idle => RefreshBudget::NONE,
            Refresh::Rescoring { next } => {
                let owed =
                    scheduled(ch.accounts().len() as u64, elapsed, half).saturating_sub(u64::from(*next));
                RefreshBudget { accounts: clamp(owed), entries: 0 }
            }
            Refresh::Thresholds(_) => {
                let owed =
                    scheduled(self.to_walk, elapsed.saturating_sub(half), half).saturating_sub(self.walked);
                RefreshBudget { accounts: 0, entries: clamp(owed) }
            }
        }
    }

    /// True while a rolling refresh is under way.
    pub fn refreshing(&self) -> bool {
        self.refresh != Refresh::Idle
    }

    /// Advances the rolling refresh by at most `budget`: re-scores accounts in slot order, then
    /// walks each market side for its quantile cut points, replacing a side's thresholds once
    /// its walk is complete. Does nothing when no sweep runs.
    pub fn step_refresh(
        &mut self,
        ch: &Clearinghouse,
        budget: RefreshBudget,
    ) -> Result<(), LiquidationError> {
        let mut accounts = budget.accounts;
        let mut entries = budget.entries;
        loop {
            match &mut self.refresh {
                Refresh::Idle => return Ok(()),
                Refresh::Rescoring { next } => {
                    let slot = *next as usize;
                    let Some(account) = ch.accounts().get(slot).map(|a| a.id()) else {
                        // Every account re-scored: the walks begin, each to 80 % of its side.
                        self.to_walk = self
                            .markets
                            .values()
                            .flat_map(|rank| [&rank.longs, &rank.shorts])
                            .map(|side| (side.order.len() as u64 * 4).div_ceil(5))
                            .sum();
                        self.refresh = match Walk::first_from(&self.markets, MarketId(0), true) {
                            Some(walk) => Refresh::Thresholds(walk),
                            None => Refresh::Idle,
                        };
                        continue;
                    };
                    if accounts == 0 {
                        return Ok(());
                    }
                    accounts -= 1;
                    *next += 1;
                    self.rescore_account(ch, account)?;
                }
                Refresh::Thresholds(walk) => {
                    if entries == 0 {
                        return Ok(());
                    }
                    let Some(rank) = self.markets.get_mut(&walk.market) else {
                        // Ranked markets are never removed; a missing one has nothing to walk.
                        self.refresh = walk.next(&self.markets).map_or(Refresh::Idle, Refresh::Thresholds);
                        continue;
                    };
                    let side = rank.side(walk.long);
                    let range = match walk.after {
                        Some(after) => side.order.range((Excluded(after), Unbounded)),
                        None => side.order.range(..),
                    };
                    let mut done = walk.total == 0;
                    for &entry in range {
                        if done || entries == 0 {
                            break;
                        }
                        entries -= 1;
                        self.walked += 1;
                        // On a small side several cut points fall on the same rank.
                        while walk.found.len() < 4
                            && walk.visited == Walk::cut(walk.total, walk.found.len() as u64 + 1)
                        {
                            walk.found.push(entry.0.0);
                        }
                        done = walk.found.len() == 4;
                        walk.visited += 1;
                        walk.after = Some(entry);
                    }
                    let exhausted = walk
                        .after
                        .is_none_or(|after| side.order.range((Excluded(after), Unbounded)).next().is_none());
                    if done || exhausted {
                        // A side that shrank under the walk keeps its last cut point for the
                        // ones it no longer reaches, so every side still shows five quantiles.
                        if let Some(&last) = walk.found.last() {
                            walk.found.resize(4, last);
                        }
                        side.thresholds = std::mem::take(&mut walk.found);
                        self.refresh = walk.next(&self.markets).map_or(Refresh::Idle, Refresh::Thresholds);
                    }
                }
            }
        }
    }

    /// Re-scores the accounts the clearinghouse reports as changed since the last call.
    pub fn sync(&mut self, ch: &mut Clearinghouse) -> Result<(), LiquidationError> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.clear();
        ch.drain_changed_accounts(&mut changed);
        for &account in &changed {
            self.rescore_account(ch, account)?;
        }
        self.changed = changed;
        Ok(())
    }

    /// Removes an account's entries and ranks its open positions at the current marks.
    pub fn rescore_account(
        &mut self,
        ch: &Clearinghouse,
        account: AccountId,
    ) -> Result<(), LiquidationError> {
        if let Some(entries) = self.members.remove(&account) {
            for (market, long, score) in entries {
                if let Some(m) = self.markets.get_mut(&market) {
                    m.side(long).order.remove(&(Reverse(score), account));
                }
            }
        }
        let Some(a) = ch.account(account) else { return Ok(()) };
        if a.positions().iter().all(|p| p.size().0 == 0) {
            return Ok(());
        }
        // Every open position is ranked, whatever its score: deleveraging needs a counterparty
        // for every lot of open interest. A pool that cannot be valued (a market without a mark
        // yet, or amounts beyond the arithmetic's range) ranks last, as one without positive
        // equity does, until a later re-score can value it.
        let cross_equity = if a.positions().iter().any(|p| p.mode() == MarginMode::Cross && p.size().0 != 0) {
            ch.margin_summary(account).ok().map(|s| s.equity)
        } else {
            Some(Money::ZERO)
        };
        let mut entries = Vec::new();
        for p in a.positions() {
            if p.size().0 == 0 {
                continue;
            }
            let score = match (p.mode(), cross_equity) {
                (MarginMode::Cross, None) => i64::MIN,
                (_, equity) => position_score(ch, p, equity.unwrap_or(Money::ZERO)).unwrap_or(i64::MIN),
            };
            let long = p.size().0 > 0;
            self.markets.entry(p.market()).or_default().side(long).order.insert((Reverse(score), account));
            entries.push((p.market(), long, score));
        }
        if !entries.is_empty() {
            self.members.insert(account, entries);
        }
        Ok(())
    }

    /// Re-scores every position of `market` if any ranked market's mark moved since its last
    /// full ranking, and recomputes its quantile thresholds.
    pub fn ensure_current(&mut self, ch: &Clearinghouse, market: MarketId) -> Result<(), LiquidationError> {
        let marks: Vec<(MarketId, Option<Price>)> =
            self.markets.keys().map(|&m| (m, ch.mark_price(m).ok())).collect();
        let Some(rank) = self.markets.get(&market) else { return Ok(()) };
        if rank.ranked_at == marks {
            return Ok(());
        }
        let accounts: Vec<AccountId> =
            rank.longs.order.iter().chain(rank.shorts.order.iter()).map(|e| e.1).collect();
        for account in accounts {
            self.rescore_account(ch, account)?;
        }
        if let Some(rank) = self.markets.get_mut(&market) {
            rank.longs.recompute_thresholds();
            rank.shorts.recompute_thresholds();
            rank.ranked_at = marks;
        }
        Ok(())
    }

    /// The markets with ranked positions, ascending.
    pub fn markets(&self) -> Vec<MarketId> {
        self.markets.keys().copied().collect()
    }

    /// The first-ranked position on one side of a market, skipping `skip`.
    pub fn first(&self, market: MarketId, long: bool, skip: AccountId) -> Option<AccountId> {
        let rank = self.markets.get(&market)?;
        let side = if long { &rank.longs } else { &rank.shorts };
        side.order.iter().map(|e| e.1).find(|&a| a != skip)
    }

    /// One side of a market in rank order (first to be deleveraged first), with scores.
    pub fn ranked(&self, market: MarketId, long: bool) -> Vec<(AccountId, i64)> {
        match self.markets.get(&market) {
            Some(rank) => {
                let side = if long { &rank.longs } else { &rank.shorts };
                side.order.iter().map(|&(Reverse(s), a)| (a, s)).collect()
            }
            None => Vec::new(),
        }
    }

    /// The ADL quantile (5: first in line, 1: last) of an account's position in `market`.
    pub fn quantile(&self, account: AccountId, market: MarketId) -> Option<u8> {
        let &(_, long, score) = self.members.get(&account)?.iter().find(|e| e.0 == market)?;
        let rank = self.markets.get(&market)?;
        if long { rank.longs.quantile(score) } else { rank.shorts.quantile(score) }
    }
}

/// The score of one position at the current mark.
fn position_score(ch: &Clearinghouse, p: &Position, cross_equity: Money) -> Result<i64, LiquidationError> {
    let mark = ch.mark_price(p.market())?;
    let k = ch.market(p.market())?.grid.money_per_tick_lot();
    let value = i128::from(p.size().0) * i128::from(mark.0) * i128::from(k);
    let upnl = value - i128::from(p.cost_basis().0);
    let equity = match p.mode() {
        MarginMode::Cross => i128::from(cross_equity.0),
        MarginMode::Isolated => i128::from(p.isolated_margin().0) + upnl,
    };
    Ok(adl_score(upnl, i128::from(p.cost_basis().0).abs(), value.abs(), equity))
}
