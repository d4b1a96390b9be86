//! The liquidation queue and its processing: margin calls in, orders cancelled, closes sent to
//! the book at no worse than the bankruptcy price, fund flows, auto-deleveraging, bankruptcy.
//!
//! The rules, their sources and their costs are in `docs/liquidation.md`.

use crate::LiquidationError;
use crate::adl::{AdlRanking, RefreshBudget};
use crate::books::BookSet;
use crate::event::{CloseKind, LiquidationEvent};
use crate::fund::{FundFlowKind, FundScope, InsuranceFund};
use crate::settle::{LIQUIDATION_ORDER_BIT, settle_fills};
use keel_book::{OrderBook, OrderView};
use keel_margin::{
    AccountView, Clearinghouse, Fill, LiquidationTarget, Liquidity, MarginBasis, MarginCall, MarginMode, Rate,
};
use keel_types::{
    AccountId, BookEvent, CancelReason, MarketId, Money, NewOrder, OrderId, OrderKind, Price, Qty, Rounding,
    Side, StpMode, TimeInForce,
};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// Most close steps one account gets per command: enough for a tier-by-tier step-down of every
/// position; a bound that guarantees each command ends.
const MAX_STEPS: usize = 64;

/// A cap on how much liquidation flow is fed into one market's book per slice of command time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// Length of a slice in milliseconds of command time (slices are aligned to time zero).
    pub slice_ms: u64,
    /// Largest notional, valued at the mark, that liquidation orders may fill in one market
    /// within one slice.
    pub max_notional: Money,
}

/// How the venue runs its liquidations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiquidationConfig {
    /// Fee on the notional of a partial liquidation, paid to the insurance fund (a full
    /// liquidation pays everything it earns above the bankruptcy price instead).
    pub liquidation_fee: Rate,
    /// One shared fund or one per market.
    pub fund_scope: FundScope,
    /// Optional cap on liquidation flow per market and time slice.
    pub throttle: Option<Throttle>,
}

impl Default for LiquidationConfig {
    /// A 0.5% liquidation fee, a shared fund, no throttle.
    fn default() -> LiquidationConfig {
        LiquidationConfig { liquidation_fee: Rate(500_000), fund_scope: FundScope::Shared, throttle: None }
    }
}

/// A queued liquidation, ordered most severe first (highest maintenance / equity; no positive
/// equity is the most severe), then by account and target for determinism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Maintenance margin over equity at the margin call (10^8 = 100%), reversed.
    pub severity: Reverse<i64>,
    /// The account.
    pub account: AccountId,
    /// Its cross pool or one isolated position.
    pub target: LiquidationTarget,
}

/// What one call of [`Liquidator::run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Targets that left the queue (closed, partially closed back above maintenance, or
    /// recovered after their orders were cancelled).
    pub completed: usize,
    /// Targets still waiting in the queue (held back by the throttle).
    pub waiting: usize,
}

/// Use of the throttle in one market's current slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SliceUsage {
    slice: u64,
    fed: Money,
}

/// Reused buffers; not state.
#[derive(Clone, Debug, Default)]
struct Scratch {
    calls: Vec<MarginCall>,
    book: Vec<BookEvent>,
    orders: Vec<OrderView>,
}

/// How one close step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseStatus {
    /// Everything asked was closed (in the book, with the fund's help or by deleveraging).
    Closed,
    /// A partial close found the book exhausted before its bankruptcy price.
    BookExhausted,
    /// The throttle left nothing (more) for this market in this slice.
    Throttled,
}

/// The outcome of a close step.
#[derive(Clone, Copy, Debug)]
struct CloseResult {
    status: CloseStatus,
    closed: i64,
    fund_paid: Money,
    adl_qty: i64,
}

/// How processing one queue entry ended.
enum Step {
    /// It leaves the queue.
    Done,
    /// It stays, held by the throttle; `progressed` if something was closed meanwhile.
    Waiting { progressed: bool },
}

/// The liquidation engine's state: queue, insurance fund, throttle usage, ADL ranking and the
/// liquidation order-id counter. Deterministic: ordered containers only, no clock, no I/O.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Liquidator {
    config: LiquidationConfig,
    fund: InsuranceFund,
    queue: BTreeSet<QueueEntry>,
    queued: BTreeMap<(AccountId, LiquidationTarget), QueueEntry>,
    slices: BTreeMap<MarketId, SliceUsage>,
    adl: AdlRanking,
    /// Next liquidation order number; ids are `LIQUIDATION_ORDER_BIT | number`.
    next_order: u64,
    #[serde(skip)]
    scratch: Scratch,
}

/// `value / den` rounded towards negative infinity, `den > 0`.
fn floor_div(value: i128, den: i128) -> i128 {
    value.div_euclid(den)
}

/// Maintenance over equity, rounded up (10^8 = 100%); the most severe when equity is not positive.
fn severity(equity: Money, maintenance: Money) -> i64 {
    if !equity.is_positive() {
        return i64::MAX;
    }
    let num = i128::from(maintenance.0) * i128::from(Rate::SCALE);
    let den = i128::from(equity.0);
    let ratio = -floor_div(-num, den);
    ratio.clamp(0, i128::from(i64::MAX - 1)) as i64
}

impl Liquidator {
    /// A liquidator with an empty queue and an empty fund.
    pub fn new(config: LiquidationConfig) -> Liquidator {
        Liquidator {
            config,
            fund: InsuranceFund::new(config.fund_scope),
            queue: BTreeSet::new(),
            queued: BTreeMap::new(),
            slices: BTreeMap::new(),
            adl: AdlRanking::default(),
            next_order: 0,
            scratch: Scratch::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LiquidationConfig {
        &self.config
    }

    /// The insurance fund.
    pub fn fund(&self) -> &InsuranceFund {
        &self.fund
    }

    /// The venue seeds or tops up the fund pool backing `market`; reported as a fund flow.
    pub fn deposit_to_fund(
        &mut self,
        market: MarketId,
        amount: Money,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<Money, LiquidationError> {
        let balance_after = self.fund.deposit(market, amount)?;
        out.push(LiquidationEvent::FundFlow {
            market,
            account: None,
            amount,
            kind: FundFlowKind::Deposit,
            balance_after,
        });
        Ok(balance_after)
    }

    /// The queue, most severe first.
    pub fn queue(&self) -> impl Iterator<Item = &QueueEntry> + '_ {
        self.queue.iter()
    }

    /// The queued liquidation that `account`'s margin in `market` belongs to, if any: its
    /// isolated position there, or its cross pool when it trades `market` on cross margin.
    ///
    /// While a target waits in the queue (a throttle holds it back) the account may not trade
    /// it: an order could close a position under water at a loss beyond its margin and leave a
    /// deficit no liquidation would cover, or add exposure to an account already below
    /// maintenance. Binance likewise refuses orders from an account in liquidation. Cheap when
    /// the queue is empty, as it is almost always.
    pub fn in_liquidation(
        &self,
        ch: &Clearinghouse,
        account: AccountId,
        market: MarketId,
    ) -> Option<LiquidationTarget> {
        if self.queued.is_empty() {
            return None;
        }
        let isolated = ch
            .account(account)
            .and_then(|a| a.position(market))
            .is_some_and(|p| p.mode() == MarginMode::Isolated);
        let target = if isolated { LiquidationTarget::Isolated(market) } else { LiquidationTarget::Cross };
        self.queued.contains_key(&(account, target)).then_some(target)
    }

    /// The ADL ranking (as of its last update).
    pub fn adl_ranking(&self) -> &AdlRanking {
        &self.adl
    }

    /// Brings the ADL ranking up to date with every account change and the current marks, for
    /// the quantiles traders see. The engine calls it on its display cadence; deleveraging
    /// brings the ranking of its market up to date by itself.
    pub fn refresh_adl_ranking(&mut self, ch: &mut Clearinghouse) -> Result<(), LiquidationError> {
        self.adl.sync(ch)?;
        for m in self.adl.markets() {
            self.adl.ensure_current(ch, m)?;
        }
        Ok(())
    }

    /// Starts a rolling refresh of the ADL quantiles traders see, unless one is running (see
    /// [`AdlRanking`]): the engine starts one on its display cadence and advances it with
    /// [`Self::step_adl_refresh`] after every command, so no single command re-ranks everything.
    pub fn start_adl_refresh(&mut self, now_ms: u64) {
        self.adl.start_refresh(now_ms);
    }

    /// What a running quantile refresh owes at `now_ms` on a schedule spread over `span_ms`
    /// (see [`AdlRanking::refresh_due`]).
    pub fn adl_refresh_due(&self, ch: &Clearinghouse, now_ms: u64, span_ms: u64) -> RefreshBudget {
        self.adl.refresh_due(ch, now_ms, span_ms)
    }

    /// Advances a running quantile refresh by at most `budget`; nothing when none runs.
    pub fn step_adl_refresh(
        &mut self,
        ch: &Clearinghouse,
        budget: RefreshBudget,
    ) -> Result<(), LiquidationError> {
        self.adl.step_refresh(ch, budget)
    }

    /// The clearinghouse's account view with each position's ADL quantile filled in.
    pub fn account_view(
        &self,
        ch: &Clearinghouse,
        account: AccountId,
    ) -> Result<AccountView, LiquidationError> {
        let mut view = ch.account_view(account)?;
        for p in &mut view.positions {
            if p.size.0 != 0 {
                p.adl_quantile = self.adl.quantile(account, p.market);
            }
        }
        Ok(view)
    }

    /// Runs the pipeline once, after a command: re-indexes changed accounts, finds the accounts
    /// the current marks pushed below maintenance (via the maintenance index, without scanning
    /// the others), queues them by severity and processes the queue until it is empty or every
    /// remaining entry is held by the throttle. Accounts that become liquidatable on the way
    /// (makers of liquidation fills, deleveraged counterparties) join the queue and are
    /// processed in the same call. Every entry still waiting at the end is reported.
    ///
    /// `now` is the command's time (milliseconds), used only by the throttle.
    pub fn run<B: BookSet + ?Sized>(
        &mut self,
        now: u64,
        books: &mut B,
        ch: &mut Clearinghouse,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<RunReport, LiquidationError> {
        let mut report = RunReport::default();
        loop {
            self.enqueue_margin_calls(ch, out)?;
            if self.queue.is_empty() {
                break;
            }
            let entries: Vec<QueueEntry> = self.queue.iter().copied().collect();
            let mut progressed = false;
            for entry in entries {
                match self.process(now, books, ch, entry, out)? {
                    Step::Done => {
                        self.queue.remove(&entry);
                        self.queued.remove(&(entry.account, entry.target));
                        report.completed += 1;
                        progressed = true;
                    }
                    Step::Waiting { progressed: p } => progressed |= p,
                }
            }
            // A pass without any close changed no account, so no new margin call can be
            // waiting: everything left is held by the throttle.
            if !progressed {
                break;
            }
        }
        for e in &self.queue {
            out.push(LiquidationEvent::Waiting { account: e.account, target: e.target });
        }
        report.waiting = self.queue.len();
        Ok(report)
    }

    /// Moves the clearinghouse's new margin calls into the queue, each target once.
    fn enqueue_margin_calls(
        &mut self,
        ch: &mut Clearinghouse,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<(), LiquidationError> {
        let mut calls = std::mem::take(&mut self.scratch.calls);
        calls.clear();
        ch.collect_margin_calls(&mut calls)?;
        for c in &calls {
            if self.queued.contains_key(&(c.account, c.target)) {
                continue;
            }
            let entry = QueueEntry {
                severity: Reverse(severity(c.equity, c.maintenance_margin)),
                account: c.account,
                target: c.target,
            };
            self.queue.insert(entry);
            self.queued.insert((c.account, c.target), entry);
            out.push(LiquidationEvent::MarginCall {
                account: c.account,
                target: c.target,
                equity: c.equity,
                maintenance_margin: c.maintenance_margin,
            });
        }
        self.scratch.calls = calls;
        Ok(())
    }

    /// Processes one queue entry: cancel its orders, re-check, close position by position.
    fn process<B: BookSet + ?Sized>(
        &mut self,
        now: u64,
        books: &mut B,
        ch: &mut Clearinghouse,
        entry: QueueEntry,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<Step, LiquidationError> {
        let (account, target) = (entry.account, entry.target);
        self.cancel_orders(books, ch, account, target, out)?;
        if !ch.target_liquidatable(account, target)? {
            out.push(LiquidationEvent::Recovered { account, target });
            ch.touch_account(account)?;
            return Ok(Step::Done);
        }
        let mut progressed = false;
        let mut fund_paid = Money::ZERO;
        let mut adl_qty = 0i64;
        let mut force_full: Vec<MarketId> = Vec::new();
        let mut last_market = None;
        let mut finished = false;
        for _ in 0..MAX_STEPS {
            let Some((market, size)) = next_position(ch, account, target)? else {
                finished = true;
                break;
            };
            last_market = Some(market);
            let (kind, qty) = if force_full.contains(&market) {
                (CloseKind::Full, size.abs())
            } else {
                self.plan(ch, account, market, size)?
            };
            let r = self.close(now, books, ch, account, target, market, size, kind, qty, out)?;
            fund_paid = fund_paid.checked_add(r.fund_paid)?;
            adl_qty += r.adl_qty;
            progressed |= r.closed > 0;
            match r.status {
                CloseStatus::Throttled => return Ok(Step::Waiting { progressed }),
                CloseStatus::BookExhausted => force_full.push(market),
                CloseStatus::Closed => {}
            }
            if !ch.target_liquidatable(account, target)? {
                finished = true;
                break;
            }
        }
        if !finished {
            return Ok(Step::Waiting { progressed });
        }
        if let Some(market) = last_market {
            if next_position(ch, account, target)?.is_none() {
                fund_paid = fund_paid.checked_add(self.cover_deficit(ch, account, target, market, out)?)?;
            }
        }
        if fund_paid.is_positive() || adl_qty > 0 {
            out.push(LiquidationEvent::Bankruptcy { account, target, fund_paid, adl_qty: Qty(adl_qty) });
        }
        ch.touch_account(account)?;
        Ok(Step::Done)
    }

    /// Cancels the account's resting orders (and pending stops) in the target's markets and
    /// unregisters the resting ones' reservations.
    fn cancel_orders<B: BookSet + ?Sized>(
        &mut self,
        books: &mut B,
        ch: &mut Clearinghouse,
        account: AccountId,
        target: LiquidationTarget,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<(), LiquidationError> {
        let markets: Vec<MarketId> = match target {
            LiquidationTarget::Cross => match ch.account(account) {
                Some(a) => a.positions().iter().map(|p| p.market()).collect(),
                None => return Ok(()),
            },
            LiquidationTarget::Isolated(m) => vec![m],
        };
        let mut ev = std::mem::take(&mut self.scratch.book);
        let mut orders = std::mem::take(&mut self.scratch.orders);
        for market in markets {
            let Some(book) = books.book_mut(market) else { continue };
            ev.clear();
            orders.clear();
            orders.extend(book.account_orders(account));
            for o in &orders {
                if book.cancel(o.id, CancelReason::Liquidation, &mut ev).is_ok() {
                    ch.remove_open_order(account, market, o.side, o.qty, o.price)?;
                    out.push(LiquidationEvent::OrderCancelled {
                        account,
                        market,
                        order: o.id,
                        side: o.side,
                        price: o.price,
                        qty: o.qty,
                    });
                }
            }
            if book.stop_count() > 0 {
                book.cancel_all(account, CancelReason::Liquidation, &mut ev);
            }
            out.extend(ev.iter().map(|&event| LiquidationEvent::Book { market, event }));
        }
        ev.clear();
        orders.clear();
        self.scratch.book = ev;
        self.scratch.orders = orders;
        Ok(())
    }

    /// Partial (down to the highest lower risk tier whose step-down restores maintenance at
    /// the mark, after the liquidation fee) or full.
    fn plan(
        &self,
        ch: &Clearinghouse,
        account: AccountId,
        market: MarketId,
        size: i64,
    ) -> Result<(CloseKind, i64), LiquidationError> {
        let cfg = ch.market(market)?;
        let tiers = cfg.tiers.tiers();
        let mark = ch.mark_price(market)?;
        let k = i128::from(cfg.grid.money_per_tick_lot());
        let held = i128::from(size.abs());
        let cost =
            ch.account(account).and_then(|a| a.position(market)).map_or(0, |p| i128::from(p.cost_basis().0));
        // Margin notional after closing `c` lots, as the clearinghouse would compute it.
        let after = |c: i128| -> i128 {
            match cfg.basis {
                MarginBasis::MarkValue => (held - c) * i128::from(mark.0) * k,
                MarginBasis::EntryValue => {
                    let closed_cost = if c == held { cost } else { -floor_div(-(cost * c), held) };
                    (cost - closed_cost).abs()
                }
            }
        };
        let current = after(0);
        let tier = tiers.iter().rposition(|t| i128::from(t.floor.0) <= current).unwrap_or(0);
        for lower in (0..tier).rev() {
            let cap = i128::from(tiers[lower + 1].floor.0);
            // Smallest close that brings the notional below the lower tier's cap.
            let (mut lo, mut hi) = (1i128, held);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if after(mid) < cap { hi = mid } else { lo = mid + 1 }
            }
            if lo >= held {
                break;
            }
            let close = lo as i64;
            let fee = self.liquidation_fee(mark, close, cfg.grid.money_per_tick_lot())?;
            let (equity, mm) = ch.target_margin_after_close(account, market, Qty(close), fee)?;
            if mm.is_positive() && equity > mm {
                return Ok((CloseKind::Partial, close));
            }
        }
        Ok((CloseKind::Full, size.abs()))
    }

    /// The liquidation fee on `qty` lots at `price`, rounded up.
    fn liquidation_fee(&self, price: Price, qty: i64, k: i64) -> Result<Money, LiquidationError> {
        let notional = Money(
            i64::try_from(i128::from(price.0) * i128::from(qty) * i128::from(k))
                .map_err(|_| keel_types::ArithmeticError::Overflow)?,
        );
        Ok(self.config.liquidation_fee.of(notional, Rounding::Ceil)?.max(Money::ZERO))
    }

    /// Lots the throttle still allows in `market` at `mark` in the slice of `now`.
    fn allowance(&mut self, market: MarketId, now: u64, mark: Price, k: i64) -> i64 {
        let Some(t) = self.config.throttle else { return i64::MAX };
        let slice = now / t.slice_ms.max(1);
        let usage = self.slices.entry(market).or_insert(SliceUsage { slice, fed: Money::ZERO });
        if usage.slice != slice {
            *usage = SliceUsage { slice, fed: Money::ZERO };
        }
        let left = i128::from(t.max_notional.0) - i128::from(usage.fed.0);
        let per_lot = i128::from(mark.0) * i128::from(k);
        if left <= 0 || per_lot <= 0 {
            return 0;
        }
        (left / per_lot).min(i128::from(i64::MAX)) as i64
    }

    /// Counts `qty` filled lots at `mark` against the market's slice.
    fn consume(&mut self, market: MarketId, qty: i64, mark: Price, k: i64) {
        if self.config.throttle.is_none() {
            return;
        }
        if let Some(u) = self.slices.get_mut(&market) {
            let n = i128::from(qty) * i128::from(mark.0) * i128::from(k);
            u.fed = Money((i128::from(u.fed.0) + n).min(i128::from(i64::MAX)) as i64);
        }
    }

    /// One close step of up to `qty` lots of the position in `market`:
    /// 1. an IOC at the bankruptcy price (fills above it earn the fund the surplus on a full close;
    ///    a partial close pays the liquidation fee instead);
    /// 2. full close only: an IOC beyond the bankruptcy price as deep as the fund can pay for,
    ///    the fund paying each fill's shortfall;
    /// 3. full close only: auto-deleveraging of the rest at the bankruptcy price.
    #[allow(clippy::too_many_arguments)]
    fn close<B: BookSet + ?Sized>(
        &mut self,
        now: u64,
        books: &mut B,
        ch: &mut Clearinghouse,
        account: AccountId,
        target: LiquidationTarget,
        market: MarketId,
        size: i64,
        kind: CloseKind,
        qty: i64,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<CloseResult, LiquidationError> {
        let long = size > 0;
        let side = if long { Side::Sell } else { Side::Buy };
        let sign: i128 = if long { 1 } else { -1 };
        let cfg = ch.market(market)?;
        let k = cfg.grid.money_per_tick_lot();
        let market_max = cfg.max_price;
        let mark = ch.mark_price(market)?;
        let book = books.book_mut(market).ok_or(LiquidationError::NoBook(market))?;
        let max_price = market_max.min(book.config().max_price);
        let max_qty = book.config().max_qty.0;
        // A long that cannot go bankrupt at a positive price may sell down to one tick; a price
        // outside the market's range is clamped into it (any residual loss is a deficit below).
        let bp = match ch.bankruptcy_price(account, market)? {
            Some(p) => Price(p.0.clamp(1, max_price.0)),
            None if long => Price(1),
            None => max_price,
        };
        let mut result =
            CloseResult { status: CloseStatus::Closed, closed: 0, fund_paid: Money::ZERO, adl_qty: 0 };
        let allowed = self.allowance(market, now, mark, k);
        let q = qty.min(allowed).min(max_qty);
        if q <= 0 {
            result.status = CloseStatus::Throttled;
            return Ok(result);
        }

        // 1. In the book at no worse than the bankruptcy price.
        let fills = self.send(books, ch, account, market, side, q, bp, bp, kind, out)?;
        let mut filled = 0i64;
        let mut fee_notional: i128 = 0;
        for &(price, fq) in &fills {
            filled += fq;
            match kind {
                CloseKind::Full => {
                    let surplus =
                        sign * (i128::from(price.0) - i128::from(bp.0)) * i128::from(fq) * i128::from(k);
                    let surplus =
                        Money(i64::try_from(surplus).map_err(|_| keel_types::ArithmeticError::Overflow)?);
                    if surplus.is_positive() {
                        self.fund_flow(ch, market, account, surplus, FundFlowKind::Surplus, out)?;
                    }
                }
                CloseKind::Partial => fee_notional += i128::from(price.0) * i128::from(fq) * i128::from(k),
            }
        }
        if kind == CloseKind::Partial && fee_notional > 0 {
            let notional =
                Money(i64::try_from(fee_notional).map_err(|_| keel_types::ArithmeticError::Overflow)?);
            let fee = self.config.liquidation_fee.of(notional, Rounding::Ceil)?.max(Money::ZERO);
            // Never more than the equity left: a partial close must not push the trader below zero.
            let (equity, _) = ch.target_margin(account, target)?;
            let fee = fee.min(equity.max(Money::ZERO));
            if fee.is_positive() {
                self.fund_flow(ch, market, account, fee, FundFlowKind::LiquidationFee, out)?;
            }
        }
        let mut left = q - filled;
        if left > 0 && kind == CloseKind::Partial {
            self.consume(market, filled, mark, k);
            result.closed = filled;
            result.status = CloseStatus::BookExhausted;
            return Ok(result);
        }

        // 2. Beyond the bankruptcy price, as far as the fund can pay.
        if left > 0 {
            let book = books.book_mut(market).ok_or(LiquidationError::NoBook(market))?;
            if let Some((limit, take)) = fund_reach(book, side, bp, left, self.fund.balance(market), k) {
                let fills = self.send(books, ch, account, market, side, take, limit, bp, kind, out)?;
                for &(price, fq) in &fills {
                    left -= fq;
                    filled += fq;
                    let shortfall =
                        sign * (i128::from(bp.0) - i128::from(price.0)) * i128::from(fq) * i128::from(k);
                    let shortfall =
                        Money(i64::try_from(shortfall).map_err(|_| keel_types::ArithmeticError::Overflow)?);
                    if shortfall.is_positive() {
                        self.fund_flow(
                            ch,
                            market,
                            account,
                            shortfall.checked_neg()?,
                            FundFlowKind::Shortfall,
                            out,
                        )?;
                        result.fund_paid = result.fund_paid.checked_add(shortfall)?;
                    }
                }
            }
        }
        self.consume(market, filled, mark, k);

        // 3. Deleverage the rest at the bankruptcy price.
        if left > 0 {
            self.deleverage(ch, account, market, side, left, bp, out)?;
            result.adl_qty = left;
        }
        result.closed = q;
        Ok(result)
    }

    /// Sends one liquidation IOC, settles its fills and reports them; returns (price, qty) fills.
    #[allow(clippy::too_many_arguments)]
    fn send<B: BookSet + ?Sized>(
        &mut self,
        books: &mut B,
        ch: &mut Clearinghouse,
        account: AccountId,
        market: MarketId,
        side: Side,
        qty: i64,
        limit: Price,
        bankruptcy_price: Price,
        kind: CloseKind,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<Vec<(Price, i64)>, LiquidationError> {
        let book = books.book_mut(market).ok_or(LiquidationError::NoBook(market))?;
        let id = OrderId(LIQUIDATION_ORDER_BIT | self.next_order);
        self.next_order = (self.next_order + 1) & !LIQUIDATION_ORDER_BIT;
        out.push(LiquidationEvent::LiquidationOrder {
            account,
            market,
            order: id,
            side,
            qty: Qty(qty),
            limit,
            bankruptcy_price,
            kind,
        });
        let order = NewOrder {
            id,
            account,
            side,
            kind: OrderKind::Limit { price: limit },
            qty: Qty(qty),
            tif: TimeInForce::Ioc,
            // The account's own resting orders were cancelled first; should one remain, it is
            // removed rather than let it stop the close.
            stp: StpMode::CancelOldest,
            reduce_only: true,
        };
        let mut ev = std::mem::take(&mut self.scratch.book);
        ev.clear();
        if let Err(reason) = book.place(order, &mut ev) {
            self.scratch.book = ev;
            return Err(LiquidationError::OrderRejected { id, reason });
        }
        settle_fills(ch, market, &ev)?;
        let mut fills = Vec::new();
        for &event in &ev {
            out.push(LiquidationEvent::Book { market, event });
            if let BookEvent::Fill { maker, maker_account, price, qty, .. } = event {
                fills.push((price, qty.0));
                out.push(LiquidationEvent::LiquidationFill {
                    account,
                    market,
                    order: id,
                    maker_order: maker,
                    maker_account,
                    price,
                    qty,
                });
            }
        }
        self.scratch.book = ev;
        Ok(fills)
    }

    /// Moves `amount` from the account to the fund (negative: from the fund to the account).
    fn fund_flow(
        &mut self,
        ch: &mut Clearinghouse,
        market: MarketId,
        account: AccountId,
        amount: Money,
        kind: FundFlowKind,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<(), LiquidationError> {
        ch.transfer_settlement(account, amount.checked_neg()?)?;
        let balance_after = if amount.is_negative() {
            self.fund.debit(market, amount.checked_neg()?)?
        } else {
            self.fund.credit(market, amount)?
        };
        out.push(LiquidationEvent::FundFlow { market, account: Some(account), amount, kind, balance_after });
        Ok(())
    }

    /// Closes `qty` lots of the account's position against opposing positions in ADL rank
    /// order, both sides at `price`, without fees.
    #[allow(clippy::too_many_arguments)]
    fn deleverage(
        &mut self,
        ch: &mut Clearinghouse,
        account: AccountId,
        market: MarketId,
        side: Side,
        qty: i64,
        price: Price,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<(), LiquidationError> {
        self.adl.sync(ch)?;
        self.adl.ensure_current(ch, market)?;
        // The liquidated side sells to close a long: the counterparties are shorts buying back.
        let counterparty_long = side == Side::Buy;
        let mut left = qty;
        while left > 0 {
            let counterparty = self
                .adl
                .first(market, counterparty_long, account)
                .ok_or(LiquidationError::NoAdlCounterparty(market))?;
            let held = ch.account(counterparty).and_then(|a| a.position(market)).map_or(0, |p| p.size().0);
            let available = if counterparty_long { held.max(0) } else { (-held).max(0) };
            if available == 0 {
                // Ranked on stale data: re-score and look again.
                self.adl.rescore_account(ch, counterparty)?;
                continue;
            }
            let q = left.min(available);
            ch.apply_fill_without_fee(&Fill {
                account,
                market,
                side,
                qty: Qty(q),
                price,
                liquidity: Liquidity::Taker,
            })?;
            ch.apply_fill_without_fee(&Fill {
                account: counterparty,
                market,
                side: side.opposite(),
                qty: Qty(q),
                price,
                liquidity: Liquidity::Taker,
            })?;
            out.push(LiquidationEvent::Adl {
                market,
                liquidated: account,
                counterparty,
                side,
                qty: Qty(q),
                price,
            });
            self.adl.rescore_account(ch, counterparty)?;
            left -= q;
        }
        self.adl.rescore_account(ch, account)?;
        Ok(())
    }

    /// After the target is flat: a negative equity left (a close clamped to the price range, or
    /// collateral that fell) is paid by the fund, which may overdraw (the venue's capital).
    fn cover_deficit(
        &mut self,
        ch: &mut Clearinghouse,
        account: AccountId,
        target: LiquidationTarget,
        market: MarketId,
        out: &mut Vec<LiquidationEvent>,
    ) -> Result<Money, LiquidationError> {
        let (equity, _) = ch.target_margin(account, target)?;
        if !equity.is_negative() {
            return Ok(Money::ZERO);
        }
        let deficit = equity.checked_neg()?;
        self.fund_flow(ch, market, account, equity, FundFlowKind::Deficit, out)?;
        Ok(deficit)
    }
}

/// The next position a target closes: for a cross pool the cross position with the largest
/// notional at mark (lowest market id on a tie), for an isolated target its position.
fn next_position(
    ch: &Clearinghouse,
    account: AccountId,
    target: LiquidationTarget,
) -> Result<Option<(MarketId, i64)>, LiquidationError> {
    let Some(a) = ch.account(account) else { return Ok(None) };
    let mut best: Option<(i128, MarketId, i64)> = None;
    for p in a.positions() {
        if p.size().0 == 0 {
            continue;
        }
        let eligible = match target {
            LiquidationTarget::Cross => p.mode() == MarginMode::Cross,
            LiquidationTarget::Isolated(m) => p.market() == m && p.mode() == MarginMode::Isolated,
        };
        if !eligible {
            continue;
        }
        let mark = ch.mark_price(p.market())?;
        let n = i128::from(p.size().0).abs() * i128::from(mark.0);
        let better = match best {
            None => true,
            Some((bn, bm, _)) => n > bn || (n == bn && p.market() < bm),
        };
        if better {
            best = Some((n, p.market(), p.size().0));
        }
    }
    Ok(best.map(|(_, m, s)| (m, s)))
}

/// How deep beyond the bankruptcy price `bp` a close of `qty` lots on `side` can go with the
/// fund paying each fill's shortfall out of `fund`: the limit price and the quantity the book
/// fills down to it, or `None` when the fund cannot pay for a single lot.
fn fund_reach(
    book: &OrderBook,
    side: Side,
    bp: Price,
    qty: i64,
    fund: Money,
    k: i64,
) -> Option<(Price, i64)> {
    let mut budget = i128::from(fund.0);
    if budget <= 0 {
        return None;
    }
    let mut left = i128::from(qty);
    let mut take_total = 0i128;
    let mut limit = None;
    for level in book.levels(side.opposite()) {
        if left == 0 {
            break;
        }
        let gap = match side {
            Side::Sell => i128::from(bp.0) - i128::from(level.price.0),
            Side::Buy => i128::from(level.price.0) - i128::from(bp.0),
        }
        .max(0);
        let per_lot = gap * i128::from(k);
        let level_qty = i128::from(level.qty.0).min(left);
        let take = if per_lot == 0 { level_qty } else { level_qty.min(budget / per_lot) };
        if take == 0 {
            break;
        }
        budget -= take * per_lot;
        left -= take;
        take_total += take;
        limit = Some(level.price);
        if take < level_qty {
            break;
        }
    }
    limit.map(|p| (p, take_total as i64))
}
