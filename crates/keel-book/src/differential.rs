//! The differential driver: runs one command sequence through [`OrderBook`] and [`ReferenceBook`]
//! and reports the first point where they disagree, where the real book breaks an invariant, where
//! quantity is not conserved or where a rejected command changed something.
//!
//! Shared by the property test below and the cargo-fuzz target, which feeds it arbitrary bytes
//! through [`decode`].

use crate::reference::ReferenceBook;
use crate::{BookConfig, FillEstimate, LevelView, OrderBook, OrderView, Refusal};
use keel_types::{
    AccountId, Amend, BookEvent, CancelReason, ConversionError, Grid, NewOrder, OrderId, OrderKind, Price,
    Qty, RejectReason, Side, StopReference, StpMode, TimeInForce,
};
use std::collections::BTreeMap;

/// Ids are drawn from `0..ID_RANGE` so that duplicates, reuse and unknown ids are frequent.
pub const ID_RANGE: u64 = 16;
/// Accounts are drawn from `1..=ACCOUNTS` so that self-trades are frequent.
pub const ACCOUNTS: u32 = 3;
/// The lowest ordinary price of a low-priced market; ordinary prices span a handful of ticks so
/// orders cross often, and low prices make the market-protection distance round down to few ticks.
pub const LOW_PRICE: i64 = 8;
/// How many ordinary prices there are.
pub const PRICE_SPAN: i64 = 10;
/// The maximum prices configurations are drawn from: a low-priced market, the default, and the
/// extreme that any arithmetic on prices has to survive.
pub const MAX_PRICES: [i64; 3] = [LOW_PRICE + PRICE_SPAN + 10, 1_000_000_000_000, i64::MAX];
/// The largest ordinary quantity (ordinary quantities are `1..=MAX_NORMAL_QTY`).
pub const MAX_NORMAL_QTY: i64 = 6;
/// The tick size of the grid decimal prices go through, as text.
pub const TICK_SIZE: &str = "0.1";
/// The lot size of that grid, as text.
pub const LOT_SIZE: &str = "0.001";

/// One command to both books.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `place` an order.
    Place(NewOrder),
    /// Convert a decimal limit price through [`Grid::price`] and, only if it converts, `place` the
    /// limit order `order` at that price (its own `kind` is replaced).
    PlaceDecimal {
        /// The order; its kind becomes a limit at the converted price.
        order: NewOrder,
        /// The price in hundredths of a currency unit (a tenth of a tick): often off the grid.
        cents: i64,
    },
    /// `place_gated` an order, with a gate that refuses it when `refuse` is set.
    PlaceGated {
        /// The order.
        order: NewOrder,
        /// Whether the caller's gate refuses the order (the book's checks pass first).
        refuse: bool,
    },
    /// `cancel` an order.
    Cancel(OrderId, CancelReason),
    /// `cancel_of`: cancel an order on behalf of an account, which must own it.
    CancelOf(AccountId, OrderId, CancelReason),
    /// `cancel_all` of an account.
    CancelAll(AccountId, CancelReason),
    /// `amend` an order.
    Amend(Amend),
    /// `trigger_stops` with a new reference price.
    TriggerStops(StopReference, Price),
}

/// The configuration the property test and the fuzz target use unless the bytes choose another.
pub fn default_config() -> BookConfig {
    BookConfig {
        max_price: Price(MAX_PRICES[0]),
        max_qty: Qty(20),
        market_protection_bps: 1_000,
        // Tiny capacities, so that the paths that grow the book's storage run too.
        order_capacity: 4,
        level_capacity: 2,
        account_capacity: 1,
    }
}

/// The lowest ordinary price under `config`: low prices for a low-priced market, otherwise a few
/// ticks below the maximum price.
pub fn low_price(config: &BookConfig) -> i64 {
    if config.max_price.0 <= MAX_PRICES[0] { LOW_PRICE } else { config.max_price.0 - PRICE_SPAN - 2 }
}

/// The grid decimal prices are converted with.
pub fn grid() -> Grid {
    // Constant, valid sizes: this cannot fail.
    Grid::new(TICK_SIZE.parse().expect("tick size"), LOT_SIZE.parse().expect("lot size")).expect("grid")
}

/// The decimal text of a price given in hundredths of a currency unit, e.g. `-5` → `-0.05`.
pub fn cents_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Reads bytes one at a time; past the end every read is zero, so decoding is total.
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        let byte = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    fn id(&mut self) -> OrderId {
        OrderId(u64::from(self.next()) % ID_RANGE)
    }

    fn account(&mut self) -> AccountId {
        AccountId(1 + u32::from(self.next()) % ACCOUNTS)
    }

    fn side(&mut self) -> Side {
        if self.next() & 1 == 0 { Side::Buy } else { Side::Sell }
    }

    /// An ordinary price most of the time; otherwise zero, negative, the maximum or beyond it.
    fn price(&mut self, config: &BookConfig) -> Price {
        let byte = self.next();
        Price(match byte {
            0 => 0,
            1 => -1,
            2 => config.max_price.0,
            3 => config.max_price.0.saturating_add(1),
            4 => i64::MAX,
            5 => i64::MIN,
            _ => low_price(config) + i64::from(byte) % PRICE_SPAN,
        })
    }

    /// An ordinary quantity most of the time; otherwise zero, negative, the maximum or beyond it.
    fn qty(&mut self, config: &BookConfig) -> Qty {
        let byte = self.next();
        Qty(match byte {
            0 => 0,
            1 => -3,
            2 => config.max_qty.0,
            3 => config.max_qty.0 + 1,
            4 => i64::MAX,
            5 => i64::MIN,
            _ => 1 + i64::from(byte) % MAX_NORMAL_QTY,
        })
    }

    fn tif(&mut self) -> TimeInForce {
        match self.next() % 8 {
            0 => TimeInForce::Ioc,
            1 => TimeInForce::Fok,
            2 | 3 => TimeInForce::PostOnly,
            _ => TimeInForce::Gtc,
        }
    }

    fn stp(&mut self) -> StpMode {
        match self.next() % 3 {
            0 => StpMode::CancelNewest,
            1 => StpMode::CancelOldest,
            _ => StpMode::CancelBoth,
        }
    }

    fn reference(&mut self) -> StopReference {
        if self.next() & 1 == 0 { StopReference::Mark } else { StopReference::Last }
    }

    fn reason(&mut self) -> CancelReason {
        match self.next() % 4 {
            0 => CancelReason::User,
            1 => CancelReason::CancelAll,
            2 => CancelReason::Liquidation,
            _ => CancelReason::ReduceOnly,
        }
    }

    fn order(&mut self, config: &BookConfig) -> NewOrder {
        let id = self.id();
        let account = self.account();
        let side = self.side();
        let kind = match self.next() % 10 {
            0..=4 => OrderKind::Limit { price: self.price(config) },
            5 | 6 => OrderKind::Market,
            7 => OrderKind::StopMarket { trigger: self.price(config), reference: self.reference() },
            _ => OrderKind::StopLimit {
                trigger: self.price(config),
                price: self.price(config),
                reference: self.reference(),
            },
        };
        let qty = self.qty(config);
        let tif = self.tif();
        let stp = self.stp();
        let reduce_only = self.next() & 1 == 1;
        NewOrder { id, account, side, kind, qty, tif, stp, reduce_only }
    }
}

/// The longest command sequence one input decodes to, which keeps each fuzz run short.
pub const MAX_COMMANDS: usize = 256;

/// Decodes a configuration and a command sequence from arbitrary bytes. Total: every input, even
/// empty, gives a valid configuration and a (possibly empty) sequence, and nothing panics.
pub fn decode(data: &[u8]) -> (BookConfig, Vec<Command>) {
    let mut bytes = Bytes { data, at: 0 };
    let mut config = default_config();
    let choice = bytes.next();
    // Mostly the low-priced market, where prices and protection distances are small.
    config.max_price = Price(MAX_PRICES[usize::from(choice % 8).saturating_sub(5)]);
    config.market_protection_bps = [0, 500, 1_000, 2_500, 10_000, u32::MAX][usize::from(bytes.next() % 6)];
    let mut commands = Vec::new();
    while !bytes.done() && commands.len() < MAX_COMMANDS {
        let command = match bytes.next() % 16 {
            0..=5 => Command::Place(bytes.order(&config)),
            6 => Command::PlaceGated { order: bytes.order(&config), refuse: bytes.next() & 1 == 1 },
            7 => Command::PlaceDecimal {
                order: bytes.order(&config),
                cents: decode_cents(&mut bytes, &config),
            },
            8 => Command::Cancel(bytes.id(), bytes.reason()),
            9 => Command::CancelOf(bytes.account(), bytes.id(), bytes.reason()),
            10 => Command::CancelAll(bytes.account(), bytes.reason()),
            11..=13 => {
                let id = bytes.id();
                let price = if bytes.next() & 1 == 0 { None } else { Some(bytes.price(&config)) };
                Command::Amend(Amend { id, price, qty: bytes.qty(&config) })
            }
            _ => Command::TriggerStops(bytes.reference(), bytes.price(&config)),
        };
        commands.push(command);
    }
    (config, commands)
}

/// A decimal price: a tick count from the price decoder plus 0–9 hundredths (half the time on grid).
fn decode_cents(bytes: &mut Bytes<'_>, config: &BookConfig) -> i64 {
    let ticks = bytes.price(config).0.clamp(-1_000, 1_000);
    let extra = bytes.next();
    let hundredths = if extra & 1 == 0 { 0 } else { i64::from(extra >> 1) % 10 };
    ticks * 10 + hundredths
}

/// Everything a caller can observe of a book, for comparing two books or one book over time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    orders: [Vec<OrderView>; 2],
    levels: [Vec<LevelView>; 2],
    best_bid: Option<Price>,
    best_ask: Option<Price>,
    stops: Vec<NewOrder>,
    by_id: Vec<(Option<OrderView>, bool)>,
    by_account: Vec<Vec<OrderView>>,
    qty_at: Vec<Qty>,
    qty_within: Vec<Qty>,
    estimates: Vec<FillEstimate>,
    counts: (usize, usize),
    last_trade: Option<Price>,
    mark: Option<Price>,
}

/// The prices the per-price queries are asked about: the ordinary range, its edges and extremes.
fn probe_prices(config: &BookConfig) -> impl Iterator<Item = Price> {
    let low = low_price(config);
    let extremes = [0, -1, i64::MIN, i64::MAX, config.max_price.0];
    (low - 2..=low + PRICE_SPAN + 1).chain(extremes).map(Price)
}

const SIDES: [Side; 2] = [Side::Buy, Side::Sell];

fn snapshot_book(book: &OrderBook) -> Snapshot {
    let config = *book.config();
    let mut snap = Snapshot {
        orders: SIDES.map(|side| book.orders(side).collect()),
        levels: SIDES.map(|side| book.levels(side).collect()),
        best_bid: book.best_bid(),
        best_ask: book.best_ask(),
        stops: book.pending_stops().collect(),
        by_id: (0..=ID_RANGE).map(|id| (book.order(OrderId(id)), book.is_live(OrderId(id)))).collect(),
        by_account: (0..=ACCOUNTS).map(|a| book.account_orders(AccountId(a)).collect()).collect(),
        qty_at: Vec::new(),
        qty_within: Vec::new(),
        estimates: Vec::new(),
        counts: (book.resting_count(), book.stop_count()),
        last_trade: book.last_trade_price(),
        mark: book.mark_price(),
    };
    for side in SIDES {
        for price in probe_prices(&config) {
            snap.qty_at.push(book.qty_at(side, price));
            snap.qty_within.push(book.qty_within(side, price, 2));
        }
        for qty in [0, 1, 4, 9, 30] {
            snap.estimates.push(book.estimate_fill_qty(side, Qty(qty)));
        }
    }
    snap
}

fn snapshot_reference(book: &ReferenceBook, config: &BookConfig) -> Snapshot {
    let mut snap = Snapshot {
        orders: SIDES.map(|side| book.orders(side)),
        levels: SIDES.map(|side| book.levels(side)),
        best_bid: book.best_bid(),
        best_ask: book.best_ask(),
        stops: book.pending_stops(),
        by_id: (0..=ID_RANGE).map(|id| (book.order(OrderId(id)), book.is_live(OrderId(id)))).collect(),
        by_account: (0..=ACCOUNTS).map(|a| book.account_orders(AccountId(a))).collect(),
        qty_at: Vec::new(),
        qty_within: Vec::new(),
        estimates: Vec::new(),
        counts: (book.resting_count(), book.stop_count()),
        last_trade: book.last_trade_price(),
        mark: book.mark_price(),
    };
    for side in SIDES {
        for price in probe_prices(config) {
            snap.qty_at.push(book.qty_at(side, price));
            snap.qty_within.push(book.qty_within(side, price, 2));
        }
        for qty in [0, 1, 4, 9, 30] {
            snap.estimates.push(book.estimate_fill_qty(side, Qty(qty)));
        }
    }
    snap
}

/// Per-order quantity bookkeeping from the events alone: what was accepted (adjusted by every
/// amendment to the open quantity), filled and cancelled. What is left must be what is open.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    accepted: i64,
    filled: i64,
    cancelled: i64,
}

impl Tally {
    fn open(&self) -> i64 {
        self.accepted - self.filled - self.cancelled
    }
}

#[derive(Default)]
struct Ledger {
    orders: BTreeMap<OrderId, Tally>,
}

impl Ledger {
    fn tally(&mut self, id: OrderId) -> Result<&mut Tally, String> {
        self.orders.get_mut(&id).ok_or_else(|| format!("event for order {id} that was never accepted"))
    }

    /// Books one event of a command that placed `placed` (if it placed anything), checking that the
    /// event is consistent with what came before.
    fn record(&mut self, event: &BookEvent, placed: Option<&NewOrder>) -> Result<(), String> {
        match *event {
            BookEvent::Accepted { id, account } => {
                // The event names the order; its quantity is the one the caller submitted.
                let Some(order) = placed.filter(|o| o.id == id && o.account == account) else {
                    return Err(format!(
                        "order {id} of account {account} accepted, but {placed:?} was placed"
                    ));
                };
                if let Some(previous) = self.orders.get(&id)
                    && previous.open() != 0
                {
                    return Err(format!("order {id} accepted again while {} was open", previous.open()));
                }
                self.orders.insert(id, Tally { accepted: order.qty.0, ..Tally::default() });
            }
            BookEvent::Rejected { .. } => {}
            BookEvent::Fill { maker, taker, qty, maker_remaining, taker_remaining, .. } => {
                if !qty.is_positive() {
                    return Err(format!("fill of non-positive quantity {qty}"));
                }
                for (id, remaining) in [(maker, maker_remaining), (taker, taker_remaining)] {
                    let tally = self.tally(id)?;
                    tally.filled += qty.0;
                    if tally.open() != remaining.0 || remaining.0 < 0 {
                        return Err(format!(
                            "order {id}: fill says {remaining} remain, events say {}",
                            tally.open()
                        ));
                    }
                }
            }
            BookEvent::Cancelled { id, remaining, .. } => {
                let tally = self.tally(id)?;
                if remaining.0 != tally.open() || !remaining.is_positive() {
                    return Err(format!("order {id}: cancelled {remaining} with {} open", tally.open()));
                }
                tally.cancelled += remaining.0;
            }
            BookEvent::Triggered { id, .. } => {
                let open = self.tally(id)?.open();
                if open <= 0 {
                    return Err(format!("stop {id} triggered with {open} open"));
                }
            }
            BookEvent::Amended { id, qty, .. } => {
                let tally = self.tally(id)?;
                if tally.open() <= 0 || !qty.is_positive() {
                    return Err(format!("order {id} amended to {qty} with {} open", tally.open()));
                }
                tally.accepted += qty.0 - tally.open();
            }
        }
        Ok(())
    }

    /// Every order's accepted quantity must equal filled + cancelled + what the book still holds.
    fn check_conserved(&self, book: &OrderBook) -> Result<(), String> {
        for (&id, tally) in &self.orders {
            let held = match book.order(id) {
                Some(view) => view.qty.0,
                None => book.pending_stops().find(|s| s.id == id).map_or(0, |s| s.qty.0),
            };
            if held != tally.open() {
                return Err(format!(
                    "order {id}: accepted {} = filled {} + cancelled {} + open {} does not hold (book holds {held})",
                    tally.accepted,
                    tally.filled,
                    tally.cancelled,
                    tally.open()
                ));
            }
        }
        Ok(())
    }
}

/// What a command returned, in a form both books produce.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(Result<(), RejectReason>),
    /// The result of `place_gated` (a gate refusal carries nothing).
    Gated(Result<(), Refusal<()>>),
    Count(usize),
    /// The decimal price did not convert; nothing was sent to the books.
    NotConverted,
}

/// What [`Grid::price`] must answer for a price of `cents` hundredths on a grid of tick 0.1.
fn expected_conversion(cents: i64) -> Result<Price, &'static str> {
    if cents <= 0 {
        Err("NotPositive")
    } else if cents % 10 != 0 {
        Err("OffGrid")
    } else {
        Ok(Price(cents / 10))
    }
}

fn conversion_kind(error: &ConversionError) -> &'static str {
    match error {
        ConversionError::OffGrid { .. } => "OffGrid",
        ConversionError::NotPositive { .. } => "NotPositive",
        ConversionError::Negative { .. } => "Negative",
        ConversionError::OutOfRange { .. } => "OutOfRange",
        ConversionError::GridTooFine { .. } => "GridTooFine",
    }
}

/// Applies `commands` to a fresh [`OrderBook`] and a fresh [`ReferenceBook`] and checks after every
/// command: identical events and return values, the real book's invariants, identical observable
/// state, conserved quantities, and an unchanged state after a rejection.
pub fn run_differential(config: BookConfig, commands: &[Command]) -> Result<(), String> {
    let grid = grid();
    let mut book = OrderBook::new(config);
    let mut reference = ReferenceBook::new(config);
    let mut ledger = Ledger::default();
    let mut events = Vec::new();
    let mut expected = Vec::new();
    for (step, command) in commands.iter().enumerate() {
        let fail = |what: String| Err(format!("command #{step} {command:?}: {what}"));
        let before = snapshot_book(&book);
        events.clear();
        expected.clear();
        let (outcome, wanted) = match command {
            Command::Place(order) => (
                Outcome::Done(book.place(*order, &mut events)),
                Outcome::Done(reference.place(*order, &mut expected)),
            ),
            Command::PlaceDecimal { order, cents } => {
                let text = cents_text(*cents);
                let converted = match text.parse() {
                    Ok(value) => grid.price(value),
                    Err(error) => return fail(format!("decimal text {text} does not parse: {error:?}")),
                };
                let matches = match (&converted, expected_conversion(*cents)) {
                    (Ok(got), Ok(want)) => *got == want,
                    (Err(error), Err(want)) => conversion_kind(error) == want,
                    _ => false,
                };
                if !matches {
                    return fail(format!("grid converted {text} to {converted:?}"));
                }
                match converted {
                    Ok(price) => {
                        let order = NewOrder { kind: OrderKind::Limit { price }, ..*order };
                        (
                            Outcome::Done(book.place(order, &mut events)),
                            Outcome::Done(reference.place(order, &mut expected)),
                        )
                    }
                    Err(_) => (Outcome::NotConverted, Outcome::NotConverted),
                }
            }
            Command::PlaceGated { order, refuse } => {
                let gate = |_: &OrderBook, _: &NewOrder| if *refuse { Err(()) } else { Ok(()) };
                // The model: the book's checks, then the gate, then `place`; silent refusals.
                let wanted = match reference.check(order) {
                    Err(reason) => Err(Refusal::Book(reason)),
                    Ok(()) if *refuse => Err(Refusal::Gate(())),
                    Ok(()) => reference.place(*order, &mut expected).map_err(Refusal::Book),
                };
                (Outcome::Gated(book.place_gated(*order, &mut events, gate)), Outcome::Gated(wanted))
            }
            Command::Cancel(id, reason) => (
                Outcome::Done(book.cancel(*id, *reason, &mut events)),
                Outcome::Done(reference.cancel(*id, *reason, &mut expected)),
            ),
            Command::CancelOf(account, id, reason) => {
                // The model: `cancel` when the account owns the order, else a silent refusal.
                let owner = reference.order(*id).map(|o| o.account).or_else(|| {
                    reference.pending_stops().iter().find(|stop| stop.id == *id).map(|stop| stop.account)
                });
                let wanted = if owner == Some(*account) {
                    reference.cancel(*id, *reason, &mut expected)
                } else {
                    Err(RejectReason::UnknownOrder)
                };
                (Outcome::Done(book.cancel_of(*account, *id, *reason, &mut events)), Outcome::Done(wanted))
            }
            Command::CancelAll(account, reason) => (
                Outcome::Count(book.cancel_all(*account, *reason, &mut events)),
                Outcome::Count(reference.cancel_all(*account, *reason, &mut expected)),
            ),
            Command::Amend(amend) => (
                Outcome::Done(book.amend(*amend, &mut events)),
                Outcome::Done(reference.amend(*amend, &mut expected)),
            ),
            Command::TriggerStops(source, price) => (
                Outcome::Count(book.trigger_stops(*source, *price, &mut events)),
                Outcome::Count(reference.trigger_stops(*source, *price, &mut expected)),
            ),
        };
        if events != expected {
            return fail(format!("events differ\n  book:      {events:?}\n  reference: {expected:?}"));
        }
        if outcome != wanted {
            return fail(format!("book returned {outcome:?}, reference {wanted:?}"));
        }
        book.check_invariants().or_else(|error| fail(format!("invariant broken: {error}")))?;
        let after = snapshot_book(&book);
        let model = snapshot_reference(&reference, &config);
        if after != model {
            return fail(format!("state differs\n  book:      {after:?}\n  reference: {model:?}"));
        }
        let placed = match command {
            Command::Place(order)
            | Command::PlaceDecimal { order, .. }
            | Command::PlaceGated { order, .. } => Some(*order),
            _ => None,
        };
        for event in &events {
            ledger
                .record(event, placed.as_ref())
                .or_else(|error| fail(format!("events inconsistent: {error}")))?;
        }
        ledger.check_conserved(&book).or_else(|error| fail(format!("quantity not conserved: {error}")))?;
        let rejected =
            matches!(outcome, Outcome::Done(Err(_)) | Outcome::Gated(Err(_)) | Outcome::NotConverted);
        if rejected {
            // The gated placement and the owner-checked cancel refuse silently; the others with
            // exactly one `Rejected` event.
            let silent = matches!(command, Command::PlaceGated { .. } | Command::CancelOf(..));
            let single_rejection = match outcome {
                Outcome::Done(Err(reason)) if !silent => {
                    matches!(events.as_slice(), [BookEvent::Rejected { reason: r, .. }] if *r == reason)
                }
                _ => events.is_empty(),
            };
            if !single_rejection {
                return fail(format!("a rejection must emit exactly one Rejected event, got {events:?}"));
            }
            if after != before {
                return fail(format!(
                    "rejected command changed the book\n  before: {before:?}\n  after:  {after:?}"
                ));
            }
        } else if events.iter().any(|e| matches!(e, BookEvent::Rejected { .. })) {
            return fail(format!("accepted command emitted a rejection: {events:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn price_strategy(config: BookConfig) -> impl Strategy<Value = Price> {
        let max = config.max_price.0;
        let low = low_price(&config);
        prop_oneof![
            20 => low..low + PRICE_SPAN,
            1 => prop_oneof![Just(0), Just(-1), Just(max), Just(max.saturating_add(1)), Just(i64::MIN)],
        ]
        .prop_map(Price)
    }

    fn qty_strategy() -> impl Strategy<Value = Qty> {
        let max = default_config().max_qty.0;
        prop_oneof![
            20 => 1..=MAX_NORMAL_QTY,
            1 => prop_oneof![Just(0), Just(-2), Just(max), Just(max + 1), Just(i64::MIN)],
        ]
        .prop_map(Qty)
    }

    fn id_strategy() -> impl Strategy<Value = OrderId> {
        (0..ID_RANGE).prop_map(OrderId)
    }

    fn account_strategy() -> impl Strategy<Value = AccountId> {
        (1..=ACCOUNTS).prop_map(AccountId)
    }

    fn side_strategy() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Buy), Just(Side::Sell)]
    }

    fn reference_strategy() -> impl Strategy<Value = StopReference> {
        prop_oneof![Just(StopReference::Mark), Just(StopReference::Last)]
    }

    fn kind_strategy(config: BookConfig) -> impl Strategy<Value = OrderKind> {
        prop_oneof![
            8 => price_strategy(config).prop_map(|price| OrderKind::Limit { price }),
            2 => Just(OrderKind::Market),
            1 => (price_strategy(config), reference_strategy())
                .prop_map(|(trigger, reference)| OrderKind::StopMarket { trigger, reference }),
            1 => (price_strategy(config), price_strategy(config), reference_strategy())
                .prop_map(|(trigger, price, reference)| OrderKind::StopLimit { trigger, price, reference }),
        ]
    }

    fn order_strategy(config: BookConfig) -> impl Strategy<Value = NewOrder> {
        let tif = prop_oneof![
            6 => Just(TimeInForce::Gtc),
            1 => Just(TimeInForce::Ioc),
            1 => Just(TimeInForce::Fok),
            1 => Just(TimeInForce::PostOnly),
        ];
        let stp =
            prop_oneof![Just(StpMode::CancelNewest), Just(StpMode::CancelOldest), Just(StpMode::CancelBoth)];
        (
            id_strategy(),
            account_strategy(),
            side_strategy(),
            kind_strategy(config),
            qty_strategy(),
            tif,
            stp,
            any::<bool>(),
        )
            .prop_map(|(id, account, side, kind, qty, tif, stp, reduce_only)| NewOrder {
                id,
                account,
                side,
                kind,
                qty,
                tif,
                stp,
                reduce_only,
            })
    }

    fn reason_strategy() -> impl Strategy<Value = CancelReason> {
        prop_oneof![
            Just(CancelReason::User),
            Just(CancelReason::CancelAll),
            Just(CancelReason::Liquidation),
            Just(CancelReason::ReduceOnly),
        ]
    }

    fn command_strategy(config: BookConfig) -> impl Strategy<Value = Command> {
        prop_oneof![
            14 => order_strategy(config).prop_map(Command::Place),
            1 => (order_strategy(config), -20i64..250)
                .prop_map(|(order, cents)| Command::PlaceDecimal { order, cents }),
            2 => (id_strategy(), reason_strategy()).prop_map(|(id, reason)| Command::Cancel(id, reason)),
            1 => (account_strategy(), reason_strategy())
                .prop_map(|(account, reason)| Command::CancelAll(account, reason)),
            3 => (id_strategy(), proptest::option::of(price_strategy(config)), qty_strategy())
                .prop_map(|(id, price, qty)| Command::Amend(Amend { id, price, qty })),
            2 => (reference_strategy(), price_strategy(config))
                .prop_map(|(reference, price)| Command::TriggerStops(reference, price)),
        ]
    }

    fn scenario_strategy() -> impl Strategy<Value = (BookConfig, Vec<Command>)> {
        let max_price = prop_oneof![
            6 => Just(MAX_PRICES[0]),
            1 => Just(MAX_PRICES[1]),
            1 => Just(MAX_PRICES[2]),
        ];
        let bps = prop_oneof![Just(0u32), Just(500), Just(1_000), Just(2_500), Just(10_000), Just(u32::MAX)];
        (max_price, bps).prop_flat_map(|(max_price, market_protection_bps)| {
            let config =
                BookConfig { max_price: Price(max_price), market_protection_bps, ..default_config() };
            (Just(config), proptest::collection::vec(command_strategy(config), 1..200))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3_000, ..ProptestConfig::default() })]

        #[test]
        fn book_matches_reference((config, commands) in scenario_strategy()) {
            if let Err(divergence) = run_differential(config, &commands) {
                prop_assert!(false, "{}", divergence);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

        #[test]
        fn book_matches_reference_on_decoded_bytes(data in proptest::collection::vec(any::<u8>(), 0..1_200)) {
            let (config, commands) = decode(&data);
            if let Err(divergence) = run_differential(config, &commands) {
                prop_assert!(false, "{}", divergence);
            }
        }
    }

    fn limit(id: u64, account: u32, side: Side, price: i64, qty: i64) -> NewOrder {
        NewOrder::limit(OrderId(id), AccountId(account), side, Price(price), Qty(qty))
    }

    fn run(commands: &[Command]) {
        if let Err(divergence) = run_differential(default_config(), commands) {
            panic!("{divergence}");
        }
    }

    #[test]
    fn decoder_is_total_on_edge_inputs() {
        for data in [&[][..], &[0], &[255; 3], &[7, 7, 7, 7, 7, 7, 7]] {
            let (config, commands) = decode(data);
            assert!(commands.len() <= MAX_COMMANDS);
            assert!(run_differential(config, &commands).is_ok());
        }
        let (_, commands) = decode(&[0u8; 10_000]);
        assert_eq!(commands.len(), MAX_COMMANDS);
    }

    #[test]
    fn off_grid_decimal_price_is_refused_and_changes_nothing() {
        let grid = grid();
        let refused = grid.price(cents_text(123).parse().expect("decimal"));
        assert!(matches!(refused, Err(ConversionError::OffGrid { what: "price", .. })));
        assert_eq!(grid.price(cents_text(120).parse().expect("decimal")), Ok(Price(12)));
        run(&[
            Command::Place(limit(1, 1, Side::Buy, 10, 3)),
            Command::PlaceDecimal { order: limit(2, 2, Side::Sell, 0, 3), cents: 95 },
            Command::PlaceDecimal { order: limit(2, 2, Side::Sell, 0, 3), cents: -5 },
            Command::PlaceDecimal { order: limit(2, 2, Side::Sell, 0, 3), cents: 100 },
        ]);
    }

    #[test]
    fn self_trade_modes_and_fill_or_kill() {
        let fok =
            |stp| Command::Place(limit(9, 1, Side::Sell, 8, 5).with_tif(TimeInForce::Fok).with_stp(stp));
        run(&[
            Command::Place(limit(1, 2, Side::Buy, 10, 2)),
            Command::Place(limit(2, 1, Side::Buy, 10, 2)),
            Command::Place(limit(3, 3, Side::Buy, 9, 4)),
            fok(StpMode::CancelNewest),
            fok(StpMode::CancelOldest),
            Command::Place(limit(4, 1, Side::Buy, 9, 2)),
            Command::Place(limit(5, 1, Side::Sell, 9, 9).with_stp(StpMode::CancelBoth)),
        ]);
    }

    #[test]
    fn amend_paths_and_rejections() {
        run(&[
            Command::Place(limit(1, 1, Side::Buy, 10, 5).with_tif(TimeInForce::PostOnly)),
            Command::Place(limit(2, 2, Side::Sell, 12, 5)),
            Command::Amend(Amend { id: OrderId(1), price: None, qty: Qty(3) }),
            Command::Amend(Amend { id: OrderId(1), price: Some(Price(12)), qty: Qty(3) }),
            Command::Amend(Amend { id: OrderId(1), price: None, qty: Qty(0) }),
            Command::Amend(Amend { id: OrderId(1), price: Some(Price(0)), qty: Qty(3) }),
            Command::Amend(Amend { id: OrderId(7), price: None, qty: Qty(3) }),
            Command::Amend(Amend { id: OrderId(2), price: Some(Price(9)), qty: Qty(8) }),
        ]);
    }

    #[test]
    fn huge_protection_distance_clamps_instead_of_truncating() {
        // Regression: the protection distance was cast from i128 to i64 with `as`, so a huge best
        // price times a huge protection wrapped into an arbitrary distance: a market sell stopped
        // at a made-up limit (`PriceProtection`) although the spec's limit is one tick.
        let config =
            BookConfig { max_price: Price(i64::MAX), market_protection_bps: u32::MAX, ..default_config() };
        let top = i64::MAX - 5;
        let commands = [
            Command::Place(limit(1, 1, Side::Buy, top, 2)),
            Command::Place(limit(2, 2, Side::Buy, 1_000, 2)),
            Command::Place(NewOrder::market(OrderId(3), AccountId(3), Side::Sell, Qty(4))),
            Command::Place(limit(4, 1, Side::Sell, top, 2)),
            Command::Place(limit(5, 2, Side::Sell, top - 1, 2)),
            Command::Place(NewOrder::market(OrderId(6), AccountId(3), Side::Buy, Qty(3))),
        ];
        if let Err(divergence) = run_differential(config, &commands) {
            panic!("{divergence}");
        }
    }

    #[test]
    fn quantity_at_extreme_prices_is_zero() {
        // Regression: the ask ladder negated the price to rank it, and `qty_at(Sell, i64::MIN)`
        // overflowed (run_differential asks every query at the extreme prices after each command).
        run(&[Command::Place(limit(1, 1, Side::Sell, 10, 2)), Command::Place(limit(2, 1, Side::Buy, 9, 2))]);
    }

    #[test]
    fn extreme_reference_price_triggers_no_buy_stop() {
        // Regression: a reference price of i64::MIN overflowed when negated for the buy-stop queue
        // (a panic in debug builds; in release it wrapped and fired every buy stop).
        let stop = NewOrder {
            kind: OrderKind::StopMarket { trigger: Price(12), reference: StopReference::Mark },
            ..NewOrder::market(OrderId(1), AccountId(1), Side::Buy, Qty(2))
        };
        run(&[
            Command::Place(limit(2, 2, Side::Sell, 11, 4)),
            Command::Place(stop),
            Command::TriggerStops(StopReference::Mark, Price(i64::MIN)),
            Command::TriggerStops(StopReference::Last, Price(i64::MIN)),
            Command::TriggerStops(StopReference::Mark, Price(i64::MAX)),
        ]);
    }

    #[test]
    fn stops_trigger_in_placement_order_and_stay_unamendable() {
        let stop = |id, side, trigger, reference| NewOrder {
            kind: OrderKind::StopMarket { trigger: Price(trigger), reference },
            ..NewOrder::market(OrderId(id), AccountId(3), side, Qty(2))
        };
        run(&[
            Command::Place(limit(1, 1, Side::Sell, 11, 4)),
            Command::Place(limit(2, 2, Side::Buy, 9, 4)),
            Command::Place(stop(3, Side::Buy, 12, StopReference::Mark)),
            Command::Place(stop(4, Side::Buy, 11, StopReference::Mark)),
            Command::Amend(Amend { id: OrderId(3), price: None, qty: Qty(1) }),
            Command::TriggerStops(StopReference::Mark, Price(12)),
            Command::Place(stop(5, Side::Sell, 12, StopReference::Last)),
            Command::Place(stop(5, Side::Sell, 10, StopReference::Last)),
            Command::TriggerStops(StopReference::Last, Price(10)),
            Command::CancelAll(AccountId(3), CancelReason::User),
        ]);
    }
}
