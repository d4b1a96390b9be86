//! The maintenance index: open positions ordered, per market, by the mark at which they reach
//! maintenance margin, so that a mark move touches only the accounts whose threshold it crossed.
//!
//! Per market there are two ordered maps, keyed by `(trigger price, account slot)`: longs are
//! liquidatable when the mark falls to or below their trigger, shorts when it rises to or above
//! it. A mark update therefore looks at the highest long trigger and the lowest short trigger and
//! stops at the first one not crossed: `O(log n)` for a move that crosses nothing, plus
//! `O(log n + positions of the account)` for every account it does cross.
//!
//! **Cross accounts with several positions.** The liquidation price of one cross position depends
//! on the marks of the account's other markets, so an exact per-position price would go stale on
//! every move elsewhere. The index instead splits the account's headroom `H = equity − maintenance`
//! (at the marks of the last evaluation) between its cross positions, pro rata to their notional
//! at mark, each share rounded down so the shares sum to at most `H`. Position `i`'s trigger is
//! the mark at which *its own* contribution to `equity − maintenance` has fallen by its share
//! `h_i`. While no trigger is crossed every position has lost less than its share, so the account
//! has lost less than `H` and is still above maintenance: the index never misses a liquidation.
//! When a trigger is crossed the account is evaluated exactly; if it is still above maintenance
//! it is re-indexed with its current headroom split afresh. The cost is false alarms (an
//! evaluation of `O(positions)` plus re-indexing of its `p` positions, `O(p log n)`) when one
//! market uses up its share while others have not; a single-position account or an isolated
//! position has the exact liquidation price as its trigger and never raises a false alarm.
//!
//! **What re-indexes an account.** Every change to its balance, collateral, positions or margin
//! mode marks it dirty (`touch`, `O(1)`); dirty accounts are re-indexed in the next
//! [`Clearinghouse::collect_margin_calls`]. A collateral reprice marks every holder; a funding
//! settlement marks every holder of the market.
//!
//! **Accounts no mark can liquidate are not indexed.** If balance and collateral exceed what
//! every cross position can lose at its worst price in range, no marks whatever bring the
//! account to maintenance until it changes: it gets no entry (and no false alarm).
//!
//! **Fills re-index only what they changed.** Each cross entry remembers its *floor* — the value
//! of the position's `uPnL − MM` at which its trigger fires — and the size and cost basis it was
//! computed for. The floors and the account's balance and collateral sum to at least zero (that
//! is `H − Σ h_i ≥ 0` above). An account marked only by fills keeps the entries of positions whose
//! size and cost did not change: they value the same at every mark, so their floors still hold.
//! The room left above those floors is shared by the changed positions alone, and the sum stays
//! at least zero. That is one tree removal, insertion and solve for the traded position instead
//! of one per position. Whenever that cannot be done safely (nothing to keep, a kept position at
//! its floor, no room left, an isolated position involved), or anything other than a fill
//! touched the account, it is evaluated in full. A kept entry's heatmap price is that of its
//! last full evaluation.
//!
//! An account found liquidatable leaves the index ("parked") until it is touched again: the
//! liquidation queue owns it meanwhile and touches it when it lets go.

use crate::MarginError;
use crate::clearinghouse::{Account, Clearinghouse, MarginSummary};
use crate::liquidation::Solver;
use crate::position::{MarginMode, abs, notional};
use keel_types::{AccountId, MarketId, Money, Price, Qty, Side};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a liquidation closes: an account's cross-margin pool, or one isolated position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LiquidationTarget {
    /// Every cross position of the account, which share one equity.
    Cross,
    /// The isolated position in this market, which stands on its own margin.
    Isolated(MarketId),
}

/// An account (or isolated position) found at or below its maintenance margin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarginCall {
    /// The account.
    pub account: AccountId,
    /// Its cross pool or one isolated position.
    pub target: LiquidationTarget,
    /// Equity of the target at the current marks.
    pub equity: Money,
    /// Maintenance margin of the target at the current marks.
    pub maintenance_margin: Money,
}

/// The notional that would be liquidated if the mark reached a price bucket: the liquidation
/// heatmap of one market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeatmapBucket {
    /// Lowest price of the bucket (ticks); the bucket spans `bucket_ticks` ticks from here.
    pub price: Price,
    /// Long size (lots) whose liquidation price lies in the bucket.
    pub long_qty: Qty,
    /// Its notional valued at each position's liquidation price.
    pub long_notional: Money,
    /// Short size (lots) whose liquidation price lies in the bucket.
    pub short_qty: Qty,
    /// Its notional valued at each position's liquidation price.
    pub short_notional: Money,
}

/// What the index remembers of one indexed position, for the heatmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Band {
    /// Size in lots (absolute).
    qty: i64,
    /// The exact liquidation price with the account's other markets at their marks of the last
    /// evaluation (equal to the trigger for single-position and isolated entries).
    liquidation_price: i64,
}

/// What the index holds for one indexed position of an account: where its trigger sits (so it
/// can be removed without a search) and what the trigger was computed from (so a later
/// re-index can tell whether it still stands). A position that no price in range can bring
/// to its floor has no trigger and no entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    market: u32,
    long: bool,
    /// The key in the market's tree.
    trigger: i64,
    /// Cross positions: the value of the position's `uPnL − MM` at which the trigger fires.
    /// The account's floors and its balance and collateral sum to at least zero, which is what
    /// makes the triggers safe. `None` for an isolated position (its trigger is exact).
    floor: Option<i64>,
    /// The position's size and cost basis when it was indexed: a position whose size and cost
    /// are unchanged values the same at every mark, so its floor still holds.
    size: i64,
    cost: i64,
}

/// The triggers of one market.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct MarketTriggers {
    /// Liquidated when mark ≤ trigger: the highest key is the first to be crossed.
    longs: BTreeMap<(i64, u32), Band>,
    /// Liquidated when mark ≥ trigger: the lowest key is the first to be crossed.
    shorts: BTreeMap<(i64, u32), Band>,
}

impl MarketTriggers {
    fn side(&mut self, long: bool) -> &mut BTreeMap<(i64, u32), Band> {
        if long { &mut self.longs } else { &mut self.shorts }
    }
}

/// Account flag: waiting to be re-indexed.
const DIRTY: u8 = 1;
/// Account flag: changed since the last drain of the change feed.
const CHANGED: u8 = 2;
/// Account flag: evaluated in the current collection pass (never set between calls).
const EVALUATED: u8 = 8;
/// Account flag: changed by more than fills (balance, collateral, margin mode, funding), so its
/// whole headroom must be split again; without it only the positions fills changed are.
const FULL: u8 = 4;

/// What the index keeps of one account, together so that marking an account and re-indexing it
/// touch one place in memory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AccountEntries {
    /// [`DIRTY`], [`CHANGED`], [`FULL`] and [`EVALUATED`]: whether it is in `dirty`, in
    /// `changed` and in `evaluated`, and how it must be re-indexed.
    flags: u8,
    /// Its indexed positions.
    entries: Vec<Entry>,
}

/// The maintenance index of a clearinghouse (see the module documentation).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct MaintenanceIndex {
    /// Per market slot.
    markets: Vec<MarketTriggers>,
    /// Per market slot: whether the next collection must look for crossed triggers in it —
    /// its mark moved or entries were added since it was last found clear. Most commands move
    /// no mark, and skipping the clear markets spares two tree walks per market per command.
    /// Not part of a snapshot: a restored index scans every market once (a scan that finds
    /// nothing crossed changes nothing).
    #[serde(skip)]
    unscanned: Vec<bool>,
    /// Per account slot: its flags and entries.
    accounts: Vec<AccountEntries>,
    /// Accounts to re-index, each once.
    dirty: Vec<u32>,
    /// Accounts changed since the last [`Clearinghouse::drain_changed_accounts`], each once: a
    /// feed for rankings kept outside this crate (auto-deleveraging).
    changed: Vec<u32>,
    /// Accounts evaluated in the current collection pass (scratch, always empty between calls).
    #[serde(skip)]
    evaluated: Vec<u32>,
    /// The plan of the account being re-indexed (scratch, reused so re-indexing does not allocate).
    #[serde(skip)]
    placed: Vec<Indexed>,
    /// The changed cross positions of the account being re-indexed after fills (scratch):
    /// position index, `uPnL − MM` now, notional at mark.
    #[serde(skip)]
    traded: Vec<(usize, i128, i128)>,
}

impl MaintenanceIndex {
    /// Room for one more market.
    pub(crate) fn add_market(&mut self) {
        self.markets.push(MarketTriggers::default());
        self.unscanned.push(true);
    }

    /// After a restore: every market is looked at by the next collection.
    pub(crate) fn rescan_all(&mut self) {
        self.unscanned = vec![true; self.markets.len()];
    }

    /// The mark of market `slot` moved: its triggers must be looked at again.
    #[inline]
    pub(crate) fn mark_moved(&mut self, slot: usize) {
        if let Some(flag) = self.unscanned.get_mut(slot) {
            *flag = true;
        }
    }

    /// Room for one more account.
    pub(crate) fn add_account(&mut self) {
        self.accounts.push(AccountEntries::default());
    }

    /// Starts loading account slot `acc`'s flags and entry list into the cache: a trade marks
    /// and re-indexes it.
    #[inline]
    pub(crate) fn prefetch(&self, acc: usize) {
        keel_types::prefetch(self.accounts.as_ptr().wrapping_add(acc));
    }

    /// Marks an account for re-indexing in full; `O(1)`, called by every change to the account
    /// other than a fill.
    #[inline]
    pub(crate) fn touch(&mut self, acc: usize) {
        self.flag_dirty(acc, FULL);
    }

    /// Marks an account for re-indexing after a fill: only the positions whose size or cost
    /// changed need new triggers, if the others' floors still hold.
    #[inline]
    pub(crate) fn touch_fill(&mut self, acc: usize) {
        self.flag_dirty(acc, 0);
    }

    #[inline]
    fn flag_dirty(&mut self, acc: usize, full: u8) {
        let Some(flags) = self.accounts.get_mut(acc).map(|a| &mut a.flags) else { return };
        if *flags & DIRTY == 0 {
            self.dirty.push(acc as u32);
        }
        if *flags & CHANGED == 0 {
            self.changed.push(acc as u32);
        }
        *flags |= DIRTY | CHANGED | full;
    }

    /// Takes an entry's position out of its market's tree.
    fn unlink(&mut self, acc: usize, e: &Entry) {
        self.markets[e.market as usize].side(e.long).remove(&(e.trigger, acc as u32));
    }

    fn remove_entries(&mut self, acc: usize) {
        let mut entries = std::mem::take(&mut self.accounts[acc].entries);
        for e in entries.drain(..) {
            self.unlink(acc, &e);
        }
        self.accounts[acc].entries = entries;
    }

    /// Indexes a planned position, if some price in range reaches its trigger.
    fn insert(&mut self, acc: usize, planned: &Indexed) {
        let (Some(trigger), Some(liquidation_price)) = (planned.trigger, planned.liquidation_price) else {
            return;
        };
        let entry = Entry {
            market: planned.market,
            long: planned.long,
            trigger,
            floor: planned.floor,
            size: planned.size,
            cost: planned.cost,
        };
        self.unscanned[entry.market as usize] = true;
        let band = Band { qty: planned.qty, liquidation_price };
        self.markets[entry.market as usize].side(entry.long).insert((trigger, acc as u32), band);
        self.accounts[acc].entries.push(entry);
    }

    fn mark_evaluated(&mut self, acc: usize) -> bool {
        let flags = &mut self.accounts[acc].flags;
        if *flags & EVALUATED != 0 {
            return false;
        }
        *flags |= EVALUATED;
        self.evaluated.push(acc as u32);
        true
    }

    fn clear_evaluated(&mut self) {
        for acc in self.evaluated.drain(..) {
            self.accounts[acc as usize].flags &= !EVALUATED;
        }
    }

    /// The first crossed entry of a market at `mark`, if any: the highest long trigger at or
    /// above the mark, else the lowest short trigger at or below it.
    fn first_crossed(&self, market: usize, mark: i64) -> Option<(bool, i64, u32)> {
        let m = &self.markets[market];
        if let Some((&(trigger, acc), _)) = m.longs.last_key_value() {
            if mark <= trigger {
                return Some((true, trigger, acc));
            }
        }
        if let Some((&(trigger, acc), _)) = m.shorts.first_key_value() {
            if mark >= trigger {
                return Some((false, trigger, acc));
            }
        }
        None
    }
}

/// A position's contribution to `equity − maintenance` and what the index needs to place it.
#[derive(Clone, Copy, Debug)]
struct Indexed {
    market: u32,
    long: bool,
    trigger: Option<i64>,
    liquidation_price: Option<i64>,
    qty: i64,
    floor: Option<i64>,
    size: i64,
    cost: i64,
}

/// The part of `room` a position with `own` of `total` notional gets when `sharers` positions
/// share it in proportion to their notional at mark, rounded down; a lone position (or a set
/// with no notional at all) gets the whole of it.
fn pro_rata(room: i128, own: i128, total: i128, sharers: usize) -> i128 {
    if sharers == 1 || total == 0 { room } else { room * own / total }
}

impl Clearinghouse {
    /// Marks an account for re-indexing, e.g. when the liquidation queue lets go of an account it
    /// held (an account found liquidatable leaves the index until it is touched).
    pub fn touch_account(&mut self, account: AccountId) -> Result<(), MarginError> {
        let acc = self.account_index(account)?;
        self.index.touch(acc);
        Ok(())
    }

    /// Appends the accounts changed since the last call (each once, in the order they first
    /// changed) and forgets them: the feed an incremental ranking outside this crate follows.
    pub fn drain_changed_accounts(&mut self, out: &mut Vec<AccountId>) {
        for acc in self.index.changed.drain(..) {
            self.index.accounts[acc as usize].flags &= !CHANGED;
            out.push(self.accounts[acc as usize].id);
        }
    }

    /// Re-indexes the accounts changed since the last call, then finds every account whose
    /// trigger the current marks have crossed, evaluates it exactly, and appends a
    /// [`MarginCall`] for each cross pool or isolated position at or below maintenance.
    ///
    /// Call it after marks move (and after any command that changed accounts). Accounts it
    /// reports leave the index until touched again. Cost: `O(log n)` per market when nothing is
    /// crossed, plus the accounts actually re-indexed or crossed.
    pub fn collect_margin_calls(&mut self, out: &mut Vec<MarginCall>) -> Result<(), MarginError> {
        let dirty = std::mem::take(&mut self.index.dirty);
        let mut retry = Vec::new();
        for &acc in &dirty {
            let acc = acc as usize;
            let full = self.index.accounts[acc].flags & FULL != 0;
            self.index.accounts[acc].flags &= !(DIRTY | FULL);
            self.index.mark_evaluated(acc);
            if !full && self.reindex_traded(acc).unwrap_or(false) {
                continue;
            }
            if self.evaluate(acc, out).is_err() {
                // Not evaluable now (a market without a mark yet): keep it dirty, retry later.
                retry.push(acc);
            }
        }
        for acc in retry {
            self.index.touch(acc);
        }
        // Hand the buffer back so steady-state collection does not allocate.
        let mut dirty = dirty;
        dirty.clear();
        if self.index.dirty.is_empty() {
            self.index.dirty = dirty;
        }

        let mut deferred: Vec<(usize, bool, i64, u32, Band)> = Vec::new();
        for slot in 0..self.markets.len() {
            if !self.index.unscanned[slot] {
                continue;
            }
            let Some(mark) = self.markets[slot].mark else { continue };
            while let Some((long, trigger, acc)) = self.index.first_crossed(slot, mark.0) {
                if self.index.mark_evaluated(acc as usize) {
                    if self.evaluate(acc as usize, out).is_err() {
                        self.index.touch(acc as usize);
                    }
                } else {
                    // Evaluated in this pass already and still not liquidatable, yet its trigger
                    // sits at the mark (a headroom share rounded to nothing): look again next call.
                    let side = self.index.markets[slot].side(long);
                    if let Some(band) = side.remove(&(trigger, acc)) {
                        deferred.push((slot, long, trigger, acc, band));
                    }
                }
            }
            // Clear unless an entry was put back still crossed: that one is looked at next call.
            self.index.unscanned[slot] = !deferred.is_empty();
            for (slot, long, trigger, acc, band) in deferred.drain(..) {
                self.index.markets[slot].side(long).insert((trigger, acc), band);
            }
        }
        self.index.clear_evaluated();
        Ok(())
    }

    /// Re-evaluates one account: removes its entries, reports its liquidatable targets and
    /// indexes the rest. On error the account is left out of the index (the caller keeps it dirty).
    fn evaluate(&mut self, acc: usize, out: &mut Vec<MarginCall>) -> Result<(), MarginError> {
        self.index.remove_entries(acc);
        if self.never_liquidatable(acc).unwrap_or(false) {
            return Ok(());
        }
        let mark_len = out.len();
        let mut placed = std::mem::take(&mut self.index.placed);
        placed.clear();
        let result = self.plan_account(acc, out, &mut placed);
        if result.is_err() {
            out.truncate(mark_len);
        } else {
            for p in &placed {
                self.index.insert(acc, p);
            }
        }
        self.index.placed = placed;
        result
    }

    /// True when no marks whatever can bring the account to maintenance before it changes: its
    /// balance and collateral exceed what all its cross positions together can lose, each at
    /// its worst price in range. Such an account needs no entry at all (and would only get
    /// false alarms from one). Most accounts of a venue are like this; the check costs one
    /// maintenance lookup per changed position (the others' worst values are cached) instead of
    /// two solves and a tree update. Accounts with an open isolated position are left to the
    /// full evaluation.
    fn never_liquidatable(&self, acc: usize) -> Result<bool, MarginError> {
        let a = &self.accounts[acc];
        let mut worst = i128::from(a.balance.0);
        for h in &a.collateral {
            worst += i128::from(self.assets[usize::from(h.asset.0)].margin_value(h.amount)?.0);
        }
        for p in &a.positions {
            if p.size.0 == 0 {
                continue;
            }
            if p.mode == MarginMode::Isolated {
                return Ok(false);
            }
            let m = &self.markets[p.slot as usize];
            let solve = || {
                Solver {
                    size: p.size.0,
                    cost: p.cost.0,
                    k: m.k,
                    backing: 0,
                    other_maintenance: 0,
                    tiers: &m.config.tiers,
                    basis: m.config.basis,
                    max_price: m.config.max_price.0,
                }
                .worst_surplus()
            };
            // Mark-free, so cached until the position changes: a fill re-solves only the
            // position it changed.
            worst += match p.worst.get() {
                Some(cached) => {
                    debug_assert_eq!(solve().ok(), Some(cached), "stale worst surplus in {:?}", a.id);
                    cached
                }
                None => {
                    let surplus = solve()?;
                    p.worst.set(surplus);
                    surplus
                }
            };
        }
        Ok(worst > 0)
    }

    /// Re-indexes an account that only fills changed, keeping the entries of the positions they
    /// did not change. Returns `false`, having changed nothing, when that cannot be done safely
    /// and the account must be evaluated in full.
    ///
    /// A kept position values the same at every mark as when it was indexed, so its floor still
    /// bounds what it can lose before its trigger fires. What is left above the kept floors —
    /// balance, collateral and the value at the current marks of every other cross position
    /// (changed ones, and ones without an entry because no price could reach their floor) — is
    /// the room `H'` those others share, as a full evaluation shares the whole headroom. The
    /// floors then still sum with balance and collateral to at least zero, so no trigger is
    /// missed. This needs: some entry to keep, the account above maintenance now, no isolated
    /// position changed or unindexed, every kept position still above its floor, and `H' > 0`.
    ///
    /// Cost: one account summary and the solves of the changed positions (usually one) instead
    /// of a tree removal, insertion and solve for every position. Kept entries keep the
    /// heatmap's liquidation price of their last full evaluation.
    fn reindex_traded(&mut self, acc: usize) -> Result<bool, MarginError> {
        if self.index.accounts[acc].entries.is_empty() {
            return Ok(false);
        }
        let s = self.summary_at(acc, None)?;
        if s.liquidatable() {
            return Ok(false);
        }
        let a = &self.accounts[acc];
        let entries = &self.index.accounts[acc].entries;
        let mut traded = std::mem::take(&mut self.index.traded);
        traded.clear();
        // Balance and haircut collateral: the part of cross equity no position carries.
        let mut room = i128::from(a.balance.0) + i128::from(s.collateral_value.0);
        let mut cross_count = 0;
        let mut usable = true;
        for (idx, p) in a.positions.iter().enumerate() {
            if p.size.0 == 0 {
                continue;
            }
            let kept =
                entries.iter().find(|e| e.market == p.slot && e.size == p.size.0 && e.cost == p.cost.0);
            if p.mode == MarginMode::Isolated {
                if kept.is_none_or(|e| e.floor.is_some()) {
                    usable = false;
                    break;
                }
                continue;
            }
            cross_count += 1;
            let m = &self.markets[p.slot as usize];
            let mark = m.mark()?;
            // Fresh from the summary just taken: uPnL and maintenance of a cross position.
            let share = self.share_of(p)?;
            let value = i128::from(share.upnl.0) - i128::from(share.maintenance.0);
            match kept.map(|e| e.floor) {
                Some(Some(floor)) if value > i128::from(floor) => room += i128::from(floor),
                Some(_) => {
                    // At or below its floor already (or indexed without one): the whole
                    // headroom is split again.
                    usable = false;
                    break;
                }
                None => {
                    room += value;
                    traded.push((idx, value, i128::from(abs(notional(mark, p.size.0, m.k)?)?)));
                }
            }
        }
        let done = usable && if traded.is_empty() { room >= 0 } else { room > 0 };
        if !done {
            self.index.traded = traded;
            return Ok(false);
        }
        let mut placed = std::mem::take(&mut self.index.placed);
        placed.clear();
        let planned = self.plan_traded(acc, &s, &traded, room, cross_count, &mut placed);
        self.index.traded = traded;
        if planned.is_err() {
            self.index.placed = placed;
            return Ok(false);
        }
        // Drop the entries of positions that changed or closed; add the new ones.
        let mut entries = std::mem::take(&mut self.index.accounts[acc].entries);
        let positions = &self.accounts[acc].positions;
        entries.retain(|e| {
            let stays =
                positions.iter().any(|p| p.slot == e.market && p.size.0 == e.size && p.cost.0 == e.cost)
                    && e.size != 0;
            if !stays {
                self.index.unlink(acc, e);
            }
            stays
        });
        self.index.accounts[acc].entries = entries;
        for p in &placed {
            self.index.insert(acc, p);
        }
        self.index.placed = placed;
        Ok(true)
    }

    /// New entries for the changed cross positions of [`Clearinghouse::reindex_traded`]: `room`
    /// shared pro rata to their notional at mark, each share rounded down.
    fn plan_traded(
        &self,
        acc: usize,
        s: &MarginSummary,
        traded: &[(usize, i128, i128)],
        room: i128,
        cross_count: usize,
        placed: &mut Vec<Indexed>,
    ) -> Result<(), MarginError> {
        let total_notional: i128 = traded.iter().map(|t| t.2).sum();
        for &(idx, value, own_notional) in traded {
            let share = pro_rata(room, own_notional, total_notional, traded.len());
            placed.push(self.plan_cross(acc, idx, s, value, share, cross_count)?);
        }
        Ok(())
    }

    /// The entry of cross position `idx`, whose `uPnL − MM` is `value` now and whose share of
    /// the headroom is `share`: its trigger is the mark where that value has fallen by the share
    /// (its floor). For the heatmap, its exact liquidation price with the account's other
    /// markets at their marks; a position whose own price cannot liquidate it alone shows at its
    /// trigger, the earliest mark that may.
    fn plan_cross(
        &self,
        acc: usize,
        idx: usize,
        s: &MarginSummary,
        value: i128,
        share: i128,
        cross_count: usize,
    ) -> Result<Indexed, MarginError> {
        let p = &self.accounts[acc].positions[idx];
        let m = &self.markets[p.slot as usize];
        let band = Solver {
            size: p.size.0,
            cost: p.cost.0,
            k: m.k,
            backing: share - value,
            other_maintenance: 0,
            tiers: &m.config.tiers,
            basis: m.config.basis,
            max_price: m.config.max_price.0,
        };
        let trigger = band.liquidation_price()?.map(|p| p.0);
        let liquidation_price = if cross_count == 1 {
            trigger
        } else {
            match self.solver_with(acc, idx, Some(s))? {
                Some(exact) => exact.liquidation_price()?.map(|p| p.0),
                None => None,
            }
        };
        Ok(Indexed {
            market: p.slot,
            long: p.size.0 > 0,
            trigger,
            liquidation_price: liquidation_price.or(trigger),
            qty: abs(p.size.0)?,
            // A floor beyond `i64` is kept as none: the next fill then re-evaluates in full.
            floor: i64::try_from(value - share).ok(),
            size: p.size.0,
            cost: p.cost.0,
        })
    }

    /// The margin calls and index entries of one account, computed without changing anything.
    fn plan_account(
        &self,
        acc: usize,
        out: &mut Vec<MarginCall>,
        placed: &mut Vec<Indexed>,
    ) -> Result<(), MarginError> {
        let a = &self.accounts[acc];
        let cross_count = a.positions.iter().filter(|p| p.mode == MarginMode::Cross && p.size.0 != 0).count();
        if cross_count > 0 {
            let s = self.summary_at(acc, None)?;
            if s.liquidatable() {
                out.push(MarginCall {
                    account: a.id,
                    target: LiquidationTarget::Cross,
                    equity: s.equity,
                    maintenance_margin: s.maintenance_margin,
                });
            } else {
                let headroom = i128::from(s.equity.0) - i128::from(s.maintenance_margin.0);
                let mut total_notional: i128 = 0;
                for p in a.positions.iter().filter(|p| p.mode == MarginMode::Cross && p.size.0 != 0) {
                    let m = &self.markets[p.slot as usize];
                    total_notional += i128::from(abs(notional(m.mark()?, p.size.0, m.k)?)?);
                }
                for (idx, p) in a.positions.iter().enumerate() {
                    if p.mode != MarginMode::Cross || p.size.0 == 0 {
                        continue;
                    }
                    let m = &self.markets[p.slot as usize];
                    let mark = m.mark()?;
                    let own_notional = i128::from(abs(notional(mark, p.size.0, m.k)?)?);
                    let share = pro_rata(headroom, own_notional, total_notional, cross_count);
                    let own = self.share_of(p)?;
                    let value = i128::from(own.upnl.0) - i128::from(own.maintenance.0);
                    placed.push(self.plan_cross(acc, idx, &s, value, share, cross_count)?);
                }
            }
        }
        for (idx, p) in a.positions.iter().enumerate() {
            if p.mode != MarginMode::Isolated || p.size.0 == 0 {
                continue;
            }
            let m = &self.markets[p.slot as usize];
            let mark = m.mark()?;
            let (upnl, margin_notional) = p.valuation(mark, m.k, m.config.basis)?;
            let equity = p.isolated_margin.checked_add(upnl)?;
            let mm = p.maintenance_margin(margin_notional, &m.config.tiers)?;
            if mm.is_positive() && equity <= mm {
                out.push(MarginCall {
                    account: a.id,
                    target: LiquidationTarget::Isolated(p.market),
                    equity,
                    maintenance_margin: mm,
                });
                continue;
            }
            let lp = match self.solver(acc, idx)? {
                Some(s) => s.liquidation_price()?.map(|p| p.0),
                None => None,
            };
            placed.push(Indexed {
                market: p.slot,
                long: p.size.0 > 0,
                trigger: lp,
                liquidation_price: lp,
                qty: abs(p.size.0)?,
                floor: None,
                size: p.size.0,
                cost: p.cost.0,
            });
        }
        Ok(())
    }

    /// Number of positions currently in the maintenance index.
    pub fn indexed_positions(&self) -> usize {
        self.index.markets.iter().map(|m| m.longs.len() + m.shorts.len()).sum()
    }

    /// The nearest triggers of a market: the highest long trigger (a mark at or below it touches
    /// an account) and the lowest short trigger (a mark at or above it touches one).
    pub fn maintenance_triggers(
        &self,
        market: MarketId,
    ) -> Result<(Option<Price>, Option<Price>), MarginError> {
        let m = &self.index.markets[self.slot(market)?];
        Ok((
            m.longs.last_key_value().map(|(&(t, _), _)| Price(t)),
            m.shorts.first_key_value().map(|(&(t, _), _)| Price(t)),
        ))
    }

    /// The liquidation heatmap of a market: indexed size and notional by liquidation price,
    /// bucketed by `bucket_ticks`, ascending by price. Accounts already handed to the liquidation
    /// queue are not included (they are being liquidated). `O(positions in the market)`.
    pub fn liquidation_heatmap(
        &self,
        market: MarketId,
        bucket_ticks: i64,
    ) -> Result<Vec<HeatmapBucket>, MarginError> {
        if bucket_ticks <= 0 {
            return Err(MarginError::NotPositive("heatmap bucket width"));
        }
        let slot = self.slot(market)?;
        let k = self.markets[slot].k;
        let m = &self.index.markets[slot];
        let mut buckets: BTreeMap<i64, HeatmapBucket> = BTreeMap::new();
        for (long, side) in [(true, &m.longs), (false, &m.shorts)] {
            for band in side.values() {
                let low = band.liquidation_price.div_euclid(bucket_ticks) * bucket_ticks;
                let b = buckets.entry(low).or_insert(HeatmapBucket {
                    price: Price(low),
                    long_qty: Qty::ZERO,
                    long_notional: Money::ZERO,
                    short_qty: Qty::ZERO,
                    short_notional: Money::ZERO,
                });
                let n = Money(notional(Price(band.liquidation_price), band.qty, k)?);
                if long {
                    b.long_qty = b.long_qty.checked_add(Qty(band.qty))?;
                    b.long_notional = b.long_notional.checked_add(n)?;
                } else {
                    b.short_qty = b.short_qty.checked_add(Qty(band.qty))?;
                    b.short_notional = b.short_notional.checked_add(n)?;
                }
            }
        }
        Ok(buckets.into_values().collect())
    }

    /// The indexed notional (at each position's liquidation price) that a mark of `price` would
    /// liquidate: longs whose liquidation price is at or above it, shorts at or below it. The
    /// ordered index answers it with a range walk over the positions it counts.
    pub fn notional_liquidated_at(&self, market: MarketId, price: Price) -> Result<Money, MarginError> {
        let slot = self.slot(market)?;
        let k = self.markets[slot].k;
        let m = &self.index.markets[slot];
        let mut total = Money::ZERO;
        // Triggers never lie beyond the exact liquidation price in the liquidating direction, so
        // a range on the trigger finds every candidate; the exact price then decides.
        for band in m.longs.range((price.0, 0)..).map(|(_, b)| b) {
            if band.liquidation_price >= price.0 {
                total = total.checked_add(Money(notional(Price(band.liquidation_price), band.qty, k)?))?;
            }
        }
        for band in m.shorts.range(..=(price.0, u32::MAX)).map(|(_, b)| b) {
            if band.liquidation_price <= price.0 {
                total = total.checked_add(Money(notional(Price(band.liquidation_price), band.qty, k)?))?;
            }
        }
        Ok(total)
    }

    // ----- what-if evaluation for the liquidation engine -------------------------------------

    /// Equity and maintenance margin of a liquidation target at the current marks.
    pub fn target_margin(
        &self,
        account: AccountId,
        target: LiquidationTarget,
    ) -> Result<(Money, Money), MarginError> {
        match target {
            LiquidationTarget::Cross => {
                let s = self.margin_summary(account)?;
                Ok((s.equity, s.maintenance_margin))
            }
            LiquidationTarget::Isolated(market) => {
                self.isolated_equity_at(account, market, self.mark_price(market)?)
            }
        }
    }

    /// True when the target is at or below maintenance (and has a maintenance requirement).
    pub fn target_liquidatable(
        &self,
        account: AccountId,
        target: LiquidationTarget,
    ) -> Result<bool, MarginError> {
        let (equity, mm) = self.target_margin(account, target)?;
        Ok(mm.is_positive() && equity <= mm)
    }

    /// Equity and maintenance margin of the target's pool if `qty` lots of the position in
    /// `market` were closed at the current mark and `fee` were charged: the test of whether a
    /// partial liquidation (a risk-tier step-down) restores maintenance.
    pub fn target_margin_after_close(
        &self,
        account: AccountId,
        market: MarketId,
        qty: Qty,
        fee: Money,
    ) -> Result<(Money, Money), MarginError> {
        let acc = self.account_index(account)?;
        let slot = self.slot(market)?;
        let a = &self.accounts[acc];
        let idx = a.position_index(slot as u32).ok_or(MarginError::NotPositive("position size"))?;
        let m = &self.markets[slot];
        let mark = m.mark()?;
        let p = &a.positions[idx];
        if p.size.0 == 0 || !qty.is_positive() || qty.0 > abs(p.size.0)? {
            return Err(MarginError::NotPositive("closing quantity within the position"));
        }
        let side = if p.size.0 > 0 { Side::Sell } else { Side::Buy };
        let effect = p.fill_effect(side, qty, mark, m.k)?;
        let mut after: Account = a.clone();
        after.balance = after
            .balance
            .checked_add(effect.realized)?
            .checked_sub(fee)?
            .checked_sub(effect.isolated_delta)?;
        let q = &mut after.positions[idx];
        q.size = effect.size;
        q.cost = effect.cost;
        q.isolated_margin = q.isolated_margin.checked_add(effect.isolated_delta)?;
        match q.mode {
            MarginMode::Cross => {
                let s = self.summary_of(&after, None)?;
                Ok((s.equity, s.maintenance_margin))
            }
            MarginMode::Isolated => {
                // The fee is taken from the position's own margin in this what-if.
                let (upnl, mn) = q.valuation(mark, m.k, m.config.basis)?;
                let equity = q.isolated_margin.checked_add(upnl)?.checked_sub(fee)?;
                Ok((equity, q.maintenance_margin(mn, &m.config.tiers)?))
            }
        }
    }
}
