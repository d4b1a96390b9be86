//! The deterministic state machine: `apply(command) -> events`, over all markets and accounts.

use crate::command::{Command, MarketSpec, PlaceOrder, Sequenced};
use crate::error::EngineError;
use crate::event::Event;
use keel_book::{OrderBook, Refusal};
use keel_liquidation::{
    BookSet, LiquidationConfig, LiquidationEvent, Liquidator, RefreshBudget, settle_fill,
};
use keel_margin::{Clearinghouse, OrderIntent, PreTrade};
use keel_types::{
    AccountId, Amend, BookEvent, CancelReason, MarketId, NewOrder, OrderId, OrderKind, Price, Qty, Resting,
    Side, StopReference,
};
use serde::{Deserialize, Serialize};

/// How often (in engine time) a `Tick` starts a refresh of the ADL quantiles shown in account
/// views.
pub const ADL_REFRESH_MS: u64 = 60_000;

/// The engine time over which a quantile refresh is spread: accounts are re-scored during the
/// first half, the ranks walked for their cut points during the second. Re-scoring every
/// position at once is milliseconds of work at 100,000 accounts; spread like this a venue doing
/// a million commands a second pays about one account per fifty commands.
pub const ADL_REFRESH_SPAN_MS: u64 = 10_000;

/// The most of a refresh's schedule one command catches up on: after a gap in engine time the
/// backlog is worked off over the following commands, a little each.
pub const ADL_REFRESH_STEP: RefreshBudget = RefreshBudget { accounts: 4, entries: 64 };

/// What a `Tick` does of a running refresh at least, ahead of its schedule (about 10 µs at
/// 100,000 accounts): a small venue (up to 8 accounts) has its quantiles at the tick.
pub const ADL_REFRESH_TICK_MIN: RefreshBudget = RefreshBudget { accounts: 8, entries: 256 };

/// The most a `Tick` catches up on: a quiet venue, whose commands are mostly ticks, completes a
/// refresh that fell behind its schedule in bigger steps (about 80 µs at 100,000 accounts).
pub const ADL_REFRESH_TICK_MAX: RefreshBudget = RefreshBudget { accounts: 64, entries: 2_048 };

/// Fills of one book operation whose maker accounts are prefetched before booking (see
/// `Engine::prefetch_makers`).
const MAKERS_PREFETCHED: usize = 8;

/// One listed market: its specification and its order book.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Market {
    pub(crate) spec: MarketSpec,
    pub(crate) book: OrderBook,
    /// The sampling window (engine time / `spec.impact_sample_ms`) in which the impact prices
    /// were last sampled, or found too thin to sample; `None` before the first attempt.
    pub(crate) impact_sampled_in: Option<u64>,
}

impl Market {
    pub(crate) fn id(&self) -> MarketId {
        self.spec.margin.id
    }

    /// Whether an index update at `now_ms` samples the impact prices: the first update in each
    /// sampling window does, or every update when the market samples continuously.
    fn impact_sample_due(&self, now_ms: u64) -> bool {
        match (self.spec.impact_sample_ms, self.impact_sampled_in) {
            (0, _) | (_, None) => true,
            (every, Some(window)) => now_ms / every != window,
        }
    }
}

/// The markets' books, found by market id, for the liquidator.
struct MarketBooks<'a>(&'a mut [Market]);

impl BookSet for MarketBooks<'_> {
    fn book_mut(&mut self, market: MarketId) -> Option<&mut OrderBook> {
        self.0.iter_mut().find(|m| m.id() == market).map(|m| &mut m.book)
    }
}

/// Buffers reused across commands so the order path does not allocate.
#[derive(Debug, Default)]
struct Scratch {
    book_events: Vec<BookEvent>,
    liquidation_events: Vec<LiquidationEvent>,
    /// Orders that may have come to rest during the current command.
    candidates: Vec<(MarketId, OrderId)>,
    /// Accounts whose position changed during the current command.
    traded: Vec<(MarketId, AccountId)>,
}

/// The exchange: markets with their books, the clearinghouse, and the bookkeeping that couples them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Engine {
    pub(crate) markets: Vec<Market>,
    pub(crate) clearinghouse: Clearinghouse,
    pub(crate) liquidator: Liquidator,
    pub(crate) next_order_id: u64,
    pub(crate) time_ms: u64,
    pub(crate) last_seq: u64,
    /// Engine time at which the next `Tick` starts a refresh of the ADL quantiles.
    pub(crate) next_adl_refresh_ms: u64,
    #[serde(skip)]
    scratch: Scratch,
}

impl Default for Engine {
    fn default() -> Engine {
        Engine::new()
    }
}

impl Engine {
    /// An engine with no markets and no accounts, and the default liquidation rules.
    pub fn new() -> Engine {
        Engine::with_liquidation(LiquidationConfig::default())
    }

    /// An engine with no markets and no accounts, liquidating by `liquidation`.
    pub fn with_liquidation(liquidation: LiquidationConfig) -> Engine {
        Engine {
            markets: Vec::new(),
            clearinghouse: Clearinghouse::new(),
            liquidator: Liquidator::new(liquidation),
            next_order_id: 1,
            time_ms: 0,
            last_seq: 0,
            next_adl_refresh_ms: 0,
            scratch: Scratch {
                book_events: Vec::with_capacity(1024),
                liquidation_events: Vec::with_capacity(1024),
                candidates: Vec::with_capacity(64),
                traded: Vec::with_capacity(64),
            },
        }
    }

    /// An engine decoded from a snapshot, with its reusable buffers sized again (they are not
    /// part of the state, so the snapshot does not carry them).
    pub fn restored(mut self) -> Engine {
        self.scratch = Engine::new().scratch;
        self
    }

    /// Sequence number of the last command applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Time of the last command applied, in milliseconds.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// Starts loading what the upcoming commands will touch, while the current one is applied.
    ///
    /// A caller that holds a batch calls this before applying command `i`, with `ahead` =
    /// commands `i + 1`, `i + 2` and `i + 3` (`None` past the end). Each account is loaded in
    /// stages, one per command, each stage reading what the one before brought in: the slot of
    /// `i + 3`'s account and the recorded address of its positions, then the record and the
    /// positions of `i + 2`'s. (The positions of an account without a recorded address are
    /// loaded through its record with `i + 1`.) An order command's account is also loaded in
    /// its market's book: its slot there with `i + 3`, its order list with `i + 2`. Each command
    /// then finds its account in the cache instead of waiting for memory several times in a
    /// row. Changes nothing and is never needed for a correct result.
    #[inline]
    pub fn prefetch(&self, ahead: [Option<&Command>; 3]) {
        let account = |k: usize| ahead[k].and_then(Command::trading_account);
        let book = |k: usize| {
            let market = ahead[k].and_then(Command::order_market)?;
            Some((self.book(market)?, account(k)?))
        };
        if let Some(account) = account(2) {
            self.clearinghouse.prefetch_slot(account);
        }
        if let Some((book, account)) = book(2) {
            book.prefetch_account_slot(account);
        }
        // The book's stage first: it reads a slot that is usually cached, and a read that misses
        // the first-level cache waits behind the clearinghouse's many prefetches still on their
        // way from memory when it comes after them.
        if let Some((book, account)) = book(1) {
            book.prefetch_account_orders(account);
        }
        if let Some(account) = account(1) {
            self.clearinghouse.prefetch_account(account);
        }
        if let Some(account) = account(0) {
            self.clearinghouse.prefetch_positions(account);
        }
    }

    /// Starts loading, all at once, what `command` will touch: for a command that nothing
    /// prefetched, because it is the first of a batch or reached an idle engine. Its three
    /// stages (see [`Engine::prefetch`]) still wait on one another, but the book's loads overlap
    /// the clearinghouse's instead of following them. Changes nothing.
    #[inline]
    pub fn prefetch_now(&self, command: &Command) {
        self.prefetch([Some(command); 3]);
    }

    /// The margin state (accounts, positions, marks).
    pub fn clearinghouse(&self) -> &Clearinghouse {
        &self.clearinghouse
    }

    /// The liquidation pipeline (queue, insurance fund, ADL ranking).
    pub fn liquidator(&self) -> &Liquidator {
        &self.liquidator
    }

    /// A market's order book.
    pub fn book(&self, market: MarketId) -> Option<&OrderBook> {
        self.find_market(market).map(|i| &self.markets[i].book)
    }

    /// A market's listing (symbol, margin parameters, book limits).
    pub fn market_spec(&self, market: MarketId) -> Option<&MarketSpec> {
        self.find_market(market).map(|i| &self.markets[i].spec)
    }

    /// The listed markets' ids, in listing order.
    pub fn market_ids(&self) -> impl Iterator<Item = MarketId> + '_ {
        self.markets.iter().map(Market::id)
    }

    /// Applies one sequenced command and appends what happened to `out`.
    ///
    /// A refused command appends one [`Event::Rejected`] and changes nothing.
    ///
    /// Queries ([`Command::is_query`]) report without changing anything, not even the sequence
    /// number or the time: they are not journalled.
    pub fn apply(&mut self, command: &Sequenced, out: &mut Vec<Event>) {
        if !command.command.is_query() {
            self.last_seq = command.seq;
            self.time_ms = self.time_ms.max(command.time_ms);
        }
        match self.dispatch(&command.command, out) {
            Ok(()) if !command.command.is_query() => {
                self.run_liquidations(out);
                let due =
                    self.liquidator.adl_refresh_due(&self.clearinghouse, self.time_ms, ADL_REFRESH_SPAN_MS);
                let step = match command.command {
                    Command::Tick => due.max(ADL_REFRESH_TICK_MIN).min(ADL_REFRESH_TICK_MAX),
                    _ => due.min(ADL_REFRESH_STEP),
                };
                if let Err(error) = self.liquidator.step_adl_refresh(&self.clearinghouse, step) {
                    out.push(Event::Fault { message: format!("ADL ranking refresh failed: {error}") });
                }
            }
            Ok(()) => {}
            Err(error) => out.push(Event::Rejected { code: error.code(), message: error.to_string() }),
        }
    }

    /// Runs the liquidation pipeline after a command that may have moved an account's margin.
    /// The maintenance index makes this cheap when no threshold was crossed.
    fn run_liquidations(&mut self, out: &mut Vec<Event>) {
        let mut events = std::mem::take(&mut self.scratch.liquidation_events);
        events.clear();
        let run = self.liquidator.run(
            self.time_ms,
            &mut MarketBooks(&mut self.markets),
            &mut self.clearinghouse,
            &mut events,
        );
        // The liquidator settles what it does in the books and releases the reservations of the
        // orders it cancels itself.
        out.extend(events.iter().map(|event| Event::Liquidation(*event)));
        if let Err(error) = run {
            out.push(Event::Fault { message: format!("liquidation failed: {error}") });
        }
        self.scratch.liquidation_events = events;
    }

    fn dispatch(&mut self, command: &Command, out: &mut Vec<Event>) -> Result<(), EngineError> {
        match command {
            Command::CreateMarket(spec) => self.create_market(spec, out),
            Command::AddAsset(config) => {
                let asset = self.clearinghouse.add_asset(config.clone())?;
                out.push(Event::AssetAdded { asset });
                Ok(())
            }
            Command::SetAssetPrice { asset, price } => {
                self.clearinghouse.set_asset_price(*asset, *price)?;
                out.push(Event::AssetPriced { asset: *asset, price: *price });
                Ok(())
            }
            Command::OpenAccount { account } => {
                self.clearinghouse.open_account(*account)?;
                out.push(Event::AccountOpened { account: *account });
                Ok(())
            }
            Command::Deposit { account, asset, amount } => {
                self.clearinghouse.deposit(*account, *asset, *amount)?;
                out.push(Event::Deposited { account: *account, asset: *asset, amount: *amount });
                Ok(())
            }
            Command::Withdraw { account, asset, amount } => {
                self.clearinghouse.withdraw(*account, *asset, *amount)?;
                out.push(Event::Withdrew { account: *account, asset: *asset, amount: *amount });
                Ok(())
            }
            Command::SetLeverage { account, market, leverage } => {
                self.market_index(*market)?;
                self.clearinghouse.set_leverage(*account, *market, *leverage)?;
                out.push(Event::LeverageSet { account: *account, market: *market, leverage: *leverage });
                Ok(())
            }
            Command::SetMarginMode { account, market, mode } => {
                self.market_index(*market)?;
                self.clearinghouse.set_margin_mode(*account, *market, *mode)?;
                out.push(Event::MarginModeSet { account: *account, market: *market, mode: *mode });
                Ok(())
            }
            Command::Place(order) => self.place(order, out),
            Command::Cancel { account, market, id } => self.cancel(*account, *market, *id, out),
            Command::Amend { account, market, id, price, qty } => {
                self.amend(*account, *market, Amend { id: *id, price: *price, qty: *qty }, out)
            }
            Command::CancelAll { account, market } => self.cancel_all(*account, *market, out),
            Command::IndexPrice { market, price } => self.index_price(*market, *price, out),
            Command::FundDeposit { market, amount } => {
                self.market_index(*market)?;
                let mut events = Vec::new();
                self.liquidator
                    .deposit_to_fund(*market, *amount, &mut events)
                    .map_err(|error| EngineError::Liquidation(error.to_string()))?;
                out.extend(events.into_iter().map(Event::Liquidation));
                Ok(())
            }
            Command::SettleFunding { market } => self.settle_funding(*market, out),
            Command::Tick => {
                self.settle_due_funding(out);
                // The ADL quantiles traders see are refreshed on a cadence of engine time, by a
                // sweep that commands advance a little at a time (see `apply`): re-scoring every
                // position at once would stall the engine for milliseconds.
                if self.time_ms >= self.next_adl_refresh_ms {
                    self.next_adl_refresh_ms = self.time_ms.saturating_add(ADL_REFRESH_MS);
                    self.liquidator.start_adl_refresh(self.time_ms);
                }
                Ok(())
            }
            Command::AccountView { account } => {
                let view = self
                    .liquidator
                    .account_view(&self.clearinghouse, *account)
                    .map_err(|error| EngineError::Liquidation(error.to_string()))?;
                out.push(Event::AccountView(view));
                Ok(())
            }
            Command::Depth { market, levels } => {
                let book = &self.markets[self.market_index(*market)?].book;
                let depth =
                    |side| book.levels(side).take(*levels as usize).map(|l| (l.price, l.qty)).collect();
                out.push(Event::Depth { market: *market, bids: depth(Side::Buy), asks: depth(Side::Sell) });
                Ok(())
            }
            Command::Heatmap { market, bucket_ticks } => {
                self.market_index(*market)?;
                let buckets = self.clearinghouse.liquidation_heatmap(*market, *bucket_ticks)?;
                out.push(Event::Heatmap { market: *market, buckets });
                Ok(())
            }
            Command::Digest => {
                out.push(Event::Digest { digest: self.digest() });
                Ok(())
            }
        }
    }

    fn market_index(&self, market: MarketId) -> Result<usize, EngineError> {
        self.find_market(market).ok_or(EngineError::UnknownMarket(market))
    }

    /// Where `market` is in `markets`. Markets are listed here and in the clearinghouse in the
    /// same order, so the clearinghouse's slot (one load) is the index; the id is still checked,
    /// and a scan answers if the two ever disagreed.
    #[inline]
    fn find_market(&self, market: MarketId) -> Option<usize> {
        self.clearinghouse
            .market_slot(market)
            .filter(|&i| self.markets.get(i).is_some_and(|m| m.id() == market))
            .or_else(|| self.markets.iter().position(|m| m.id() == market))
    }

    fn require_account(&self, account: AccountId) -> Result<(), EngineError> {
        match self.clearinghouse.account(account) {
            Some(_) => Ok(()),
            None => Err(EngineError::UnknownAccount(account)),
        }
    }

    /// Refuses to trade a market where the account's margin is waiting to be liquidated (see
    /// [`Liquidator::in_liquidation`]). Cancels stay allowed: the liquidation cancels the orders
    /// anyway.
    fn require_not_in_liquidation(&self, account: AccountId, market: MarketId) -> Result<(), EngineError> {
        match self.liquidator.in_liquidation(&self.clearinghouse, account, market) {
            Some(target) => Err(EngineError::InLiquidation { account, target }),
            None => Ok(()),
        }
    }

    fn create_market(&mut self, spec: &MarketSpec, out: &mut Vec<Event>) -> Result<(), EngineError> {
        let id = spec.margin.id;
        if self.market_index(id).is_ok() {
            return Err(EngineError::DuplicateMarket(id));
        }
        self.clearinghouse.add_market(spec.margin.clone())?;
        self.markets.push(Market {
            spec: spec.clone(),
            book: OrderBook::new(spec.book),
            impact_sampled_in: None,
        });
        out.push(Event::MarketCreated { market: id, symbol: spec.symbol.clone() });
        Ok(())
    }

    // ----- orders -----

    /// Validation → reduce-only and margin pre-check → match → settle both sides of every fill →
    /// register what rests → last-price stops → reduce-only upkeep.
    fn place(&mut self, order: &PlaceOrder, out: &mut Vec<Event>) -> Result<(), EngineError> {
        let index = self.market_index(order.market)?;
        self.require_account(order.account)?;
        self.require_not_in_liquidation(order.account, order.market)?;
        let new = NewOrder {
            id: OrderId(self.next_order_id),
            account: order.account,
            side: order.side,
            kind: order.kind,
            qty: order.qty,
            tif: order.tif,
            stp: order.stp,
            reduce_only: order.reduce_only,
        };
        // The book's own rules first (quantity, prices, time in force), then the account's.
        let clearinghouse = &self.clearinghouse;
        let gate = |book: &OrderBook, new: &NewOrder| admit(clearinghouse, order.market, book, new);
        let mut events = std::mem::take(&mut self.scratch.book_events);
        events.clear();
        let placed = self.markets[index].book.place_gated(new, &mut events, gate);
        if let Err(refusal) = placed {
            self.scratch.book_events = events;
            return Err(match refusal {
                Refusal::Book(reason) => EngineError::Book(reason),
                Refusal::Gate(error) => error,
            });
        }
        self.next_order_id += 1;
        match (&events[..], order.kind) {
            // The common case: a limit order that met nothing rests whole at its price, and
            // nothing else happened. Its reservation is registered without looking it up again.
            ([event @ BookEvent::Accepted { .. }], OrderKind::Limit { price }) => {
                out.push(Event::Book { market: order.market, event: *event });
                debug_assert!(
                    self.markets[index]
                        .book
                        .order(new.id)
                        .is_some_and(|o| o.qty == new.qty && o.price == price)
                );
                let at = Resting { side: order.side, price };
                self.register(order.market, new.id, order.account, at, order.qty, out);
            }
            _ => self.settle(index, &events, out),
        }
        self.scratch.book_events = events;
        self.after_trading(index, out);
        Ok(())
    }

    fn cancel(
        &mut self,
        account: AccountId,
        market: MarketId,
        id: OrderId,
        out: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        let index = self.market_index(market)?;
        self.require_account(account)?;
        // Someone else's order is as unknown to the account as an id that is not live.
        self.run_book(index, out, |book, events| book.cancel_of(account, id, CancelReason::User, events))
            .map_err(|_| EngineError::UnknownOrder(id))
    }

    fn amend(
        &mut self,
        account: AccountId,
        market: MarketId,
        amend: Amend,
        out: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        let index = self.market_index(market)?;
        self.require_account(account)?;
        self.require_not_in_liquidation(account, market)?;
        let Some(current) = self.markets[index].book.order(amend.id).filter(|o| o.account == account) else {
            return Err(EngineError::UnknownOrder(amend.id));
        };
        let price = amend.price.unwrap_or(current.price);
        if current.reduce_only && amend.qty > current.qty {
            // A reduce-only order may grow only as far as the position it closes.
            let position = self.position(account, market);
            let closes = position.0.signum() == -current.side.sign();
            if !closes || amend.qty.0 > position.0.abs() {
                return Err(EngineError::ReduceOnly { qty: amend.qty, position });
            }
        }
        let grows = amend.qty > current.qty || price != current.price;
        if grows && !current.reduce_only && amend.qty.is_positive() {
            // Check the amended order as if it replaced the current one.
            // The order's reservation is its open quantity at its price, as the book holds it.
            let ch = &mut self.clearinghouse;
            ch.remove_open_order(account, market, current.side, current.qty, current.price)?;
            let intent = OrderIntent { market, side: current.side, qty: amend.qty, price };
            let verdict = ch.pre_trade_check(account, &intent);
            ch.add_open_order(account, market, current.side, current.qty, current.price)?;
            if let PreTrade::Reject(rejection) = verdict? {
                return Err(EngineError::Margin(rejection));
            }
        }
        self.run_book(index, out, |book, events| book.amend(amend, events)).map_err(EngineError::Book)?;
        self.after_trading(index, out);
        Ok(())
    }

    fn cancel_all(
        &mut self,
        account: AccountId,
        market: Option<MarketId>,
        out: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        self.require_account(account)?;
        let indexes = match market {
            Some(market) => self.market_index(market)?..self.market_index(market)? + 1,
            None => 0..self.markets.len(),
        };
        for index in indexes {
            self.run_book(index, out, |book, events| {
                book.cancel_all(account, CancelReason::CancelAll, events);
                Ok(())
            })
            .map_err(EngineError::Book)?;
        }
        Ok(())
    }

    /// Runs one book operation and settles its events.
    fn run_book(
        &mut self,
        index: usize,
        out: &mut Vec<Event>,
        operation: impl FnOnce(&mut OrderBook, &mut Vec<BookEvent>) -> Result<(), keel_types::RejectReason>,
    ) -> Result<(), keel_types::RejectReason> {
        let mut events = std::mem::take(&mut self.scratch.book_events);
        events.clear();
        let result = operation(&mut self.markets[index].book, &mut events);
        if result.is_ok() {
            self.settle(index, &events, out);
        }
        self.scratch.book_events = events;
        result
    }

    /// Books what a book operation did: both sides of every fill into the clearinghouse, and
    /// every reservation change; then registers the orders that came to rest.
    fn settle(&mut self, index: usize, events: &[BookEvent], out: &mut Vec<Event>) {
        let market = self.markets[index].id();
        if let [event @ BookEvent::Cancelled { id, account, remaining, resting: Some(at), .. }] = events {
            // The commonest case, one resting order cancelled: its reservation is released
            // without the passes below over the events.
            out.push(Event::Book { market, event: *event });
            self.release(market, *id, *account, *at, *remaining, out);
            return;
        }
        self.prefetch_makers(events);
        // Only an order that an earlier event of this operation moved can be a maker or a
        // cancelled order still waiting to be registered: a triggered stop-limit that came to
        // rest (and is met by a stop the same trade triggered after it), or an amended order.
        // Until one is seen, fills and cancels skip the look-up.
        let mut moved = false;
        for event in events {
            out.push(Event::Book { market, event: *event });
            match *event {
                BookEvent::Accepted { id, .. } => self.scratch.candidates.push((market, id)),
                BookEvent::Triggered { id, .. } => {
                    moved = true;
                    self.scratch.candidates.push((market, id));
                }
                BookEvent::Fill { maker, maker_account, taker_side, price, qty, maker_remaining, .. } => {
                    // Booking the fill also shrinks the maker's reservation. A maker that came to
                    // rest earlier in this same operation (a stop-limit triggered by the trade
                    // before) is registered first, with what it rested.
                    if moved && self.take_candidate(market, maker) {
                        let at = Resting { side: taker_side.opposite(), price };
                        let rested = Qty(qty.0.saturating_add(maker_remaining.0));
                        self.register(market, maker, maker_account, at, rested, out);
                    }
                    match settle_fill(&mut self.clearinghouse, market, event) {
                        Ok(Some(sides)) => {
                            for side in sides {
                                out.push(Event::Settled {
                                    market,
                                    account: side.account,
                                    order: side.order,
                                    side: side.side,
                                    price,
                                    qty,
                                    liquidity: side.liquidity,
                                    realized_pnl: side.outcome.realized_pnl,
                                    fee: side.outcome.fee,
                                    position: side.outcome.size,
                                    balance: side.outcome.balance,
                                });
                                self.scratch.traded.push((market, side.account));
                            }
                        }
                        Ok(None) => {}
                        Err(error) => out.push(Event::Fault {
                            message: format!("fill of order {maker} could not be booked: {error}"),
                        }),
                    }
                }
                BookEvent::Cancelled { id, account, remaining, resting: Some(at), .. } => {
                    // An order that came to rest earlier in this operation and was never
                    // registered has nothing to release.
                    if !(moved && self.take_candidate(market, id)) {
                        self.release(market, id, account, at, remaining, out);
                    }
                }
                BookEvent::Cancelled { resting: None, .. } => {}
                BookEvent::Amended { id, account, side, previous_price, previous_qty, .. } => {
                    // Released here and registered again below at its new price and quantity
                    // (if it still rests: a new price may have traded it away).
                    let at = Resting { side, price: previous_price };
                    self.release(market, id, account, at, previous_qty, out);
                    moved = true;
                    self.scratch.candidates.push((market, id));
                }
                BookEvent::Rejected { .. } => {}
            }
        }
        self.register_candidates(out);
    }

    /// Starts loading the accounts of the makers that `events` filled, before their fills are
    /// booked one by one. A command's own account is prefetched while earlier commands run
    /// ([`Engine::prefetch`]); its makers are known only once the book has matched. Breadth
    /// first: every maker's slot, then every record, then every position list, so each stage
    /// waits for memory once for all makers instead of once per maker. At most
    /// [`MAKERS_PREFETCHED`] fills are looked at: a sweep through more makers than that is rare
    /// and would only crowd the cache.
    fn prefetch_makers(&self, events: &[BookEvent]) {
        let makers = || {
            events
                .iter()
                .filter_map(|event| match event {
                    BookEvent::Fill { maker_account, .. } => Some(*maker_account),
                    _ => None,
                })
                .take(MAKERS_PREFETCHED)
        };
        let clearinghouse = &self.clearinghouse;
        makers().for_each(|account| clearinghouse.prefetch_slot(account));
        makers().for_each(|account| clearinghouse.prefetch_account(account));
        makers().for_each(|account| clearinghouse.prefetch_positions(account));
    }

    /// Releases the reservation of an order that left the book or is entered again: its open
    /// quantity `qty` where it rested, as the book reported them.
    fn release(
        &mut self,
        market: MarketId,
        id: OrderId,
        account: AccountId,
        at: Resting,
        qty: Qty,
        out: &mut Vec<Event>,
    ) {
        if let Err(error) = self.clearinghouse.remove_open_order(account, market, at.side, qty, at.price) {
            out.push(Event::Fault {
                message: format!("reservation of order {id} could not be released: {error}"),
            });
        }
    }

    /// Takes order `id` out of the candidates waiting to be registered; true if it was one.
    fn take_candidate(&mut self, market: MarketId, id: OrderId) -> bool {
        let waiting = self.scratch.candidates.len();
        self.scratch.candidates.retain(|&candidate| candidate != (market, id));
        self.scratch.candidates.len() != waiting
    }

    /// Registers a reservation for every candidate order that is now resting: its open quantity
    /// at its price. The book is the record of what each order reserved; the engine keeps none.
    fn register_candidates(&mut self, out: &mut Vec<Event>) {
        let candidates = std::mem::take(&mut self.scratch.candidates);
        for (i, &(market, id)) in candidates.iter().enumerate() {
            if candidates[..i].contains(&(market, id)) {
                continue;
            }
            let Some(book) = self.book(market) else { continue };
            let Some(order) = book.order(id) else { continue };
            let at = Resting { side: order.side, price: order.price };
            self.register(market, id, order.account, at, order.qty, out);
        }
        self.scratch.candidates = candidates;
        self.scratch.candidates.clear();
    }

    /// Registers the reservation of an order resting `at` its side and price with open quantity
    /// `qty`.
    fn register(
        &mut self,
        market: MarketId,
        id: OrderId,
        account: AccountId,
        at: Resting,
        qty: Qty,
        out: &mut Vec<Event>,
    ) {
        if let Err(error) = self.clearinghouse.add_open_order(account, market, at.side, qty, at.price) {
            out.push(Event::Fault {
                message: format!("reservation of order {id} could not be registered: {error}"),
            });
        }
    }

    /// After trades in market `index`: trigger last-price stops until none fire, then shrink or
    /// cancel reduce-only orders that no longer reduce.
    fn after_trading(&mut self, index: usize, out: &mut Vec<Event>) {
        // Each round can trade and move the last price again, reaching further stops.
        while self.markets[index].book.stop_count() > 0 {
            let Some(last) = self.markets[index].book.last_trade_price() else { break };
            let mut fired = 0;
            let _ = self.run_book(index, out, |book, events| {
                fired = book.trigger_stops(StopReference::Last, last, events);
                Ok(())
            });
            if fired == 0 {
                break;
            }
        }
        self.enforce_reduce_only(index, out);
    }

    /// Reduce-only orders may together close at most the current position: walking each traded
    /// account's reduce-only orders oldest first, the excess is shrunk (keeping priority) or
    /// cancelled, and all of them are cancelled once the position is flat or flipped.
    fn enforce_reduce_only(&mut self, index: usize, out: &mut Vec<Event>) {
        if self.markets[index].book.reduce_only_total() == 0 {
            // Nothing to shrink in this market; the traded list only serves this upkeep.
            self.scratch.traded.clear();
            return;
        }
        if self.scratch.traded.is_empty() {
            return;
        }
        let mut traded = std::mem::take(&mut self.scratch.traded);
        traded.sort_unstable_by_key(|&(market, account)| (market.0, account.0));
        traded.dedup();
        let market = self.markets[index].id();
        for &(traded_market, account) in &traded {
            if traded_market != market {
                continue;
            }
            if self.markets[index].book.reduce_only_count(account) == 0 {
                continue;
            }
            let position = self.position(account, market);
            let mut allowance = position.0.abs();
            let orders: Vec<_> =
                self.markets[index].book.account_orders(account).filter(|o| o.reduce_only).collect();
            for order in orders {
                let closes = position.0.signum() == -order.side.sign();
                let keep = if closes { order.qty.0.min(allowance) } else { 0 };
                allowance -= keep;
                if keep == order.qty.0 {
                    continue;
                }
                let _ = self.run_book(index, out, |book, events| {
                    if keep == 0 {
                        book.cancel(order.id, CancelReason::ReduceOnly, events)
                    } else {
                        book.amend(Amend { id: order.id, price: None, qty: Qty(keep) }, events)
                    }
                });
            }
        }
        traded.clear();
        self.scratch.traded = traded;
    }

    /// The signed position of `account` in `market` (zero if none).
    fn position(&self, account: AccountId, market: MarketId) -> Qty {
        position_size(&self.clearinghouse, account, market)
    }

    // ----- prices and funding -----

    /// New index price: sample impact prices if due, update the mark, trigger mark stops.
    fn index_price(
        &mut self,
        market: MarketId,
        price: Price,
        out: &mut Vec<Event>,
    ) -> Result<(), EngineError> {
        let index = self.market_index(market)?;
        self.clearinghouse.set_index_price(market, price, self.time_ms)?;
        if self.markets[index].impact_sample_due(self.time_ms) {
            self.sample_impact_prices(index)?;
        }
        let mark = self.clearinghouse.update_mark_price(market, self.time_ms)?;
        out.push(Event::Mark { market, index: price, mark });
        let _ = self.run_book(index, out, |book, events| {
            book.trigger_stops(StopReference::Mark, mark, events);
            Ok(())
        });
        self.after_trading(index, out);
        Ok(())
    }

    /// Walks the book for the impact bid and ask and hands them to the premium and basis
    /// averages. The attempt uses up the window: a book too thin to fill the impact notional on
    /// either side gives no sample in it (as a venue sampling on a timer skips that tick), so a
    /// thin book is not walked again on every index update.
    fn sample_impact_prices(&mut self, index: usize) -> Result<(), EngineError> {
        let every = self.markets[index].spec.impact_sample_ms;
        self.markets[index].impact_sampled_in = (every > 0).then(|| self.time_ms / every);
        let m = &self.markets[index];
        let notional =
            i128::from(m.spec.impact_notional.0) / i128::from(m.spec.margin.grid.money_per_tick_lot());
        let bid = m.book.estimate_fill_notional(Side::Sell, notional);
        let ask = m.book.estimate_fill_notional(Side::Buy, notional);
        if !(bid.complete && ask.complete) {
            return Ok(());
        }
        let round = keel_types::Rounding::Floor;
        if let (Some(bid), Some(ask)) = (bid.average_price(round), ask.average_price(round)) {
            self.clearinghouse.sample_impact_prices(m.id(), bid, ask)?;
        }
        Ok(())
    }

    fn settle_funding(&mut self, market: MarketId, out: &mut Vec<Event>) -> Result<(), EngineError> {
        self.market_index(market)?;
        let settlement = self.clearinghouse.settle_funding(market, self.time_ms)?;
        out.push(Event::Funding {
            market,
            rate: settlement.rate,
            price: settlement.price,
            payments: settlement.payments,
        });
        Ok(())
    }

    /// Settles every market whose funding interval has elapsed; a market not yet due is skipped.
    fn settle_due_funding(&mut self, out: &mut Vec<Event>) {
        for index in 0..self.markets.len() {
            let market = self.markets[index].id();
            if let Ok(settlement) = self.clearinghouse.settle_funding(market, self.time_ms) {
                out.push(Event::Funding {
                    market,
                    rate: settlement.rate,
                    price: settlement.price,
                    payments: settlement.payments,
                });
            }
        }
    }
}

/// The size of `account`'s position in `market`: zero when it has none (or is unknown).
fn position_size(clearinghouse: &Clearinghouse, account: AccountId, market: MarketId) -> Qty {
    clearinghouse.account(account).and_then(|a| a.position(market)).map_or(Qty::ZERO, |p| p.size())
}

/// The account's side of admitting order `new` to `market` (the book's own rules passed): a
/// reduce-only order must shrink the position without exceeding it; any other order must pass
/// the pre-trade margin check, at the price it could fill at worst.
fn admit(
    clearinghouse: &Clearinghouse,
    market: MarketId,
    book: &OrderBook,
    new: &NewOrder,
) -> Result<(), EngineError> {
    if new.reduce_only {
        let position = position_size(clearinghouse, new.account, market);
        let reduces = position.0.signum() == -new.side.sign() && new.qty.0 <= position.0.abs();
        return if reduces { Ok(()) } else { Err(EngineError::ReduceOnly { qty: new.qty, position }) };
    }
    let price = match new.kind {
        OrderKind::Limit { price } | OrderKind::StopLimit { price, .. } => price,
        // A stop-market order is checked as if it filled at its trigger price.
        OrderKind::StopMarket { trigger, .. } => trigger,
        // A market order is checked at the worst price its protection lets it reach.
        OrderKind::Market => book.protection_limit(new.side).unwrap_or(Price(1)),
    };
    let intent = OrderIntent { market, side: new.side, qty: new.qty, price };
    match clearinghouse.pre_trade_check(new.account, &intent)? {
        PreTrade::Accept => Ok(()),
        PreTrade::Reject(rejection) => Err(EngineError::Margin(rejection)),
    }
}
