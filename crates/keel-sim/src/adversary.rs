//! Arbitrary bytes as a hostile command stream: the engine must answer every command with
//! events or a typed refusal, never panic, and keep the exchange's invariants after each one.
//!
//! [`run`] lists two markets, opens four accounts (funded thinly or richly as the first bytes
//! say) and a second collateral asset, then reads commands from the rest of the bytes. Values
//! are drawn mostly from small ranges near the current index — so orders trade, stops trigger,
//! self-trades meet and thin accounts are liquidated — and sometimes from the edges: zero and
//! negative quantities and prices, `i64` extremes, unknown accounts, markets, assets and orders,
//! a cancel by someone who does not own the order, leverage of 0 or `u32::MAX`.
//!
//! After every command it checks:
//! - no [`Event::Fault`] (an internal contract broken);
//! - a refused command (one [`Event::Rejected`]) and every query left the state digest as it
//!   was;
//! - [`Engine::check_invariants`]: books sound and uncrossed, open interest balanced,
//!   reservations equal to resting orders, value conserved to the unit.
//!
//! The sequence number is the same for every command, and time moves only with the stream's
//! own `Tick`s, because the digest covers both: a refused command may not change anything else.
//! The fuzz target `engine_commands` feeds it libFuzzer's inputs; a property test feeds it
//! random bytes in the ordinary test suite.

use keel_engine::{Command, Engine, Event, InvariantViolation, PlaceOrder, Sequenced, presets};
use keel_liquidation::{FundScope, LiquidationConfig, Throttle};
use keel_margin::{AssetConfig, AssetId, MarginMode, Rate};
use keel_types::{
    AccountId, BookEvent, MarketId, Money, OrderId, OrderKind, Price, Qty, Side, StopReference, StpMode,
    TimeInForce,
};
use std::fmt;

/// The listed markets, with their first index prices (in ticks) and the step of an index move.
const MARKETS: [(MarketId, i64, i64); 2] = [(MarketId(1), 650_000, 50), (MarketId(2), 350_000, 20)];
/// A market id that is never listed.
const UNLISTED: MarketId = MarketId(7);
/// The opened accounts; [`STRANGER`] is never opened.
const ACCOUNTS: [AccountId; 4] = [AccountId(1), AccountId(2), AccountId(3), AccountId(4)];
/// An account id that is never opened.
const STRANGER: AccountId = AccountId(99);
/// The second collateral asset (the settlement asset is 0).
const COLLATERAL: AssetId = AssetId(1);
/// How many recently accepted orders cancels and amends choose from.
const REMEMBERED_ORDERS: usize = 64;
/// Where time starts (milliseconds since the Unix epoch).
const START_MS: u64 = 1_700_000_000_000;

/// What a run did, for a caller that wants to see the stream was not all refusals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Commands applied, setup included.
    pub commands: usize,
    /// Commands refused with a typed error.
    pub refused: usize,
    /// Fills booked.
    pub fills: usize,
    /// Liquidation events.
    pub liquidations: usize,
}

/// The first rule a run broke: the command, what the engine said, and what was wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// The command's position in the stream (setup included), from 0.
    pub index: usize,
    /// The command.
    pub command: Command,
    /// Its events.
    pub events: Vec<Event>,
    /// The rule it broke.
    pub broken: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command {} ({:?}): {}; events: {:?}", self.index, self.command, self.broken, self.events)
    }
}

impl std::error::Error for Finding {}

/// Runs `bytes` as a command stream (see the module documentation); the first broken rule is
/// the error.
pub fn run(bytes: &[u8]) -> Result<Summary, Finding> {
    run_observed(bytes, &mut |_, _, _| {})
}

/// [`run`], showing `observe` each command with its position and events as it is applied
/// (to print the stream behind a finding).
pub fn run_observed(
    bytes: &[u8],
    observe: &mut dyn FnMut(usize, &Command, &[Event]),
) -> Result<Summary, Finding> {
    let mut input = Input { bytes, at: 0 };
    let mut config = LiquidationConfig::default();
    let venue = input.byte();
    if venue & 1 != 0 {
        // A throttled liquidation queue: margin calls wait for the next slice of time.
        let max_notional = Money((1 + i64::from(venue >> 4)) * 1_000 * Money::SCALE);
        config.throttle = Some(Throttle { slice_ms: 1_000, max_notional });
    }
    if venue & 2 != 0 {
        config.fund_scope = FundScope::PerMarket;
    }
    let mut world = World {
        engine: Engine::with_liquidation(config),
        now_ms: START_MS,
        index: MARKETS.map(|(_, price, _)| price),
        orders: Vec::with_capacity(REMEMBERED_ORDERS),
        summary: Summary::default(),
        observe,
    };
    world.setup(&mut input)?;
    while !input.is_empty() {
        let command = world.next_command(&mut input);
        world.apply(command)?;
    }
    Ok(world.summary)
}

/// The bytes still to read; reads past the end give zeros.
struct Input<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// One of `choices`, by the next byte.
    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[usize::from(self.byte()) % choices.len()]
    }
}

/// The engine under test and what the stream needs to know of it.
struct World<'o> {
    engine: Engine,
    now_ms: u64,
    /// Each listed market's current index price, in ticks.
    index: [i64; 2],
    /// Recently accepted orders: (market, id, owner).
    orders: Vec<(MarketId, OrderId, AccountId)>,
    summary: Summary,
    /// Shown every command and its events.
    observe: &'o mut dyn FnMut(usize, &Command, &[Event]),
}

impl World<'_> {
    fn setup(&mut self, input: &mut Input<'_>) -> Result<(), Finding> {
        for (market, _, _) in MARKETS {
            let spec = if market == MARKETS[0].0 {
                presets::btc_perp(market.0)
            } else {
                presets::eth_perp(market.0)
            };
            self.apply(Command::CreateMarket(Box::new(spec)))?;
        }
        self.apply(Command::AddAsset(AssetConfig {
            symbol: "BTC".to_string(),
            decimals: 8,
            price: Money(65_000 * Money::SCALE),
            haircut: Rate(5_000_000),
        }))?;
        for account in ACCOUNTS {
            self.apply(Command::OpenAccount { account })?;
            // From a few hundred dollars (liquidated by the first moves) to a market maker's millions.
            let usd = [300, 2_000, 50_000, 5_000_000][usize::from(input.byte() % 4)];
            self.apply(Command::Deposit { account, asset: AssetId::SETTLEMENT, amount: usd * Money::SCALE })?;
        }
        self.apply(Command::FundDeposit { market: MARKETS[0].0, amount: Money(1_000 * Money::SCALE) })?;
        for (i, (market, _, _)) in MARKETS.iter().enumerate() {
            self.apply(Command::IndexPrice { market: *market, price: Price(self.index[i]) })?;
        }
        Ok(())
    }

    fn next_command(&mut self, input: &mut Input<'_>) -> Command {
        match input.byte() % 21 {
            0..=5 => self.place(input, OrderKindChoice::Limit),
            6 => self.place(input, OrderKindChoice::Market),
            7 => self.place(input, OrderKindChoice::Stop),
            8 | 9 => {
                let (market, id, owner) = self.order(input);
                let account = if input.byte() % 4 == 0 { self.account(input) } else { owner };
                Command::Cancel { account, market, id }
            }
            10 => {
                let (market, id, owner) = self.order(input);
                let price = if input.byte() % 2 == 0 { Some(self.price(input, market)) } else { None };
                Command::Amend { account: owner, market, id, price, qty: qty(input) }
            }
            11 => {
                let account = self.account(input);
                let market = if input.byte() % 2 == 0 { Some(self.market(input)) } else { None };
                Command::CancelAll { account, market }
            }
            12 | 13 => self.move_index(input),
            14 => {
                let account = self.account(input);
                let asset = input.pick(&[AssetId::SETTLEMENT, AssetId::SETTLEMENT, COLLATERAL, AssetId(5)]);
                let amount = amount(input);
                if input.byte() % 2 == 0 {
                    Command::Deposit { account, asset, amount }
                } else {
                    Command::Withdraw { account, asset, amount }
                }
            }
            15 => {
                let account = self.account(input);
                let market = self.market(input);
                if input.byte() % 2 == 0 {
                    let leverage = input.pick(&[1, 2, 5, 10, 20, 50, 75, 100, 125, 126, 0, u32::MAX]);
                    Command::SetLeverage { account, market, leverage }
                } else {
                    let mode = input.pick(&[MarginMode::Cross, MarginMode::Isolated]);
                    Command::SetMarginMode { account, market, mode }
                }
            }
            16 => {
                // Time moves only here, up to four hours at a time: funding intervals come due.
                self.now_ms += u64::from(input.byte()) * 60_000;
                Command::Tick
            }
            17 => Command::SettleFunding { market: self.market(input) },
            18 => match input.byte() % 3 {
                0 => Command::FundDeposit { market: self.market(input), amount: Money(amount(input)) },
                _ => {
                    let price =
                        input.pick(&[1, 10_000 * Money::SCALE, 65_000 * Money::SCALE, 0, -1, i64::MAX]);
                    let asset = input.pick(&[COLLATERAL, AssetId(5)]);
                    Command::SetAssetPrice { asset, price: Money(price) }
                }
            },
            19 => match input.byte() % 4 {
                0 => Command::AccountView { account: self.account(input) },
                1 => Command::Depth { market: self.market(input), levels: u32::from(input.byte()) },
                2 => Command::Heatmap {
                    market: self.market(input),
                    bucket_ticks: input.pick(&[0, -1, 1, 100, 10_000, i64::MAX, i64::MIN]),
                },
                _ => Command::Digest,
            },
            _ => self.place(input, OrderKindChoice::Limit),
        }
    }

    fn place(&mut self, input: &mut Input<'_>, kind: OrderKindChoice) -> Command {
        let account = self.account(input);
        let market = self.market(input);
        let side = input.pick(&[Side::Buy, Side::Sell]);
        let kind = match kind {
            OrderKindChoice::Limit => OrderKind::Limit { price: self.price(input, market) },
            OrderKindChoice::Market => OrderKind::Market,
            OrderKindChoice::Stop => {
                let trigger = self.price(input, market);
                let reference = input.pick(&[StopReference::Mark, StopReference::Last]);
                if input.byte() % 2 == 0 {
                    OrderKind::StopMarket { trigger, reference }
                } else {
                    OrderKind::StopLimit { trigger, price: self.price(input, market), reference }
                }
            }
        };
        let tif = input.pick(&[
            TimeInForce::Gtc,
            TimeInForce::Gtc,
            TimeInForce::Ioc,
            TimeInForce::Fok,
            TimeInForce::PostOnly,
        ]);
        let stp = input.pick(&[StpMode::CancelNewest, StpMode::CancelOldest, StpMode::CancelBoth]);
        let reduce_only = input.byte() % 8 == 0;
        Command::Place(PlaceOrder { account, market, side, kind, qty: qty(input), tif, stp, reduce_only })
    }

    /// An opened account, or now and then one that was never opened.
    fn account(&self, input: &mut Input<'_>) -> AccountId {
        let b = usize::from(input.byte());
        if b % 16 == 15 { STRANGER } else { ACCOUNTS[b % ACCOUNTS.len()] }
    }

    /// A listed market, or now and then one that is not.
    fn market(&self, input: &mut Input<'_>) -> MarketId {
        let b = usize::from(input.byte());
        if b % 16 == 15 { UNLISTED } else { MARKETS[b % MARKETS.len()].0 }
    }

    /// A recently accepted order, or one that never existed.
    fn order(&self, input: &mut Input<'_>) -> (MarketId, OrderId, AccountId) {
        let b = usize::from(input.byte());
        match self.orders.get(b % (self.orders.len() + 1)) {
            Some(&order) => order,
            None => (self.market(input), OrderId(u64::from(input.byte())), self.account(input)),
        }
    }

    /// Near the market's index mostly; sometimes far from it or at the edges of the range.
    fn price(&self, input: &mut Input<'_>, market: MarketId) -> Price {
        let (index, step) = match MARKETS.iter().position(|(m, _, _)| *m == market) {
            Some(i) => (self.index[i], MARKETS[i].2),
            None => (MARKETS[0].1, MARKETS[0].2),
        };
        let choice = input.byte() % 8;
        let offset = i64::from(input.byte() as i8);
        Price(match choice {
            0..=5 => index + offset * step / 4,
            6 => index + offset * index / 512,
            _ => [0, -1, 1, 99_999_999, 100_000_000, 100_000_001, i64::MAX, i64::MIN][(offset & 7) as usize],
        })
    }

    /// A small index move most of the time, a crash or a spike now and then.
    fn move_index(&mut self, input: &mut Input<'_>) -> Command {
        let i = usize::from(input.byte()) % MARKETS.len();
        let (market, _, step) = MARKETS[i];
        let offset = i64::from(input.byte() as i8);
        let moved = match input.byte() % 8 {
            0 => self.index[i] + offset * self.index[i] / 256,
            _ => self.index[i] + offset * step,
        };
        // The engine refuses a price outside its range; the stream keeps its own index inside it
        // so that the markets stay tradeable after a refused move.
        if (1..=100_000_000).contains(&moved) {
            self.index[i] = moved;
        }
        Command::IndexPrice { market, price: Price(moved) }
    }

    /// Applies one command and checks the rules of the module documentation.
    fn apply(&mut self, command: Command) -> Result<(), Finding> {
        let before = self.engine.digest();
        let mut events = Vec::new();
        let sequenced = Sequenced { seq: 1, time_ms: self.now_ms, command: command.clone() };
        self.engine.apply(&sequenced, &mut events);
        let index = self.summary.commands;
        self.summary.commands += 1;
        (self.observe)(index, &command, &events);
        let finding =
            |broken: String| Finding { index, command: command.clone(), events: events.clone(), broken };

        if events.iter().any(|event| matches!(event, Event::Fault { .. })) {
            return Err(finding("an internal fault".to_string()));
        }
        let refused = matches!(events.as_slice(), [Event::Rejected { .. }]);
        if (refused || command.is_query()) && self.engine.digest() != before {
            let what = if refused { "a refused command" } else { "a query" };
            return Err(finding(format!("{what} changed the state digest")));
        }
        if let Err(InvariantViolation(broken)) = self.engine.check_invariants() {
            return Err(finding(broken));
        }

        self.summary.refused += usize::from(refused);
        for event in &events {
            match event {
                Event::Book { market, event: BookEvent::Accepted { id, account } } => {
                    if self.orders.len() == REMEMBERED_ORDERS {
                        self.orders.remove(0);
                    }
                    self.orders.push((*market, *id, *account));
                }
                Event::Book { event: BookEvent::Fill { .. }, .. } => self.summary.fills += 1,
                Event::Liquidation(_) => self.summary.liquidations += 1,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Which kind of order a placement makes.
#[derive(Clone, Copy)]
enum OrderKindChoice {
    Limit,
    Market,
    Stop,
}

/// A handful of lots mostly; sometimes many, sometimes a value no book accepts.
fn qty(input: &mut Input<'_>) -> Qty {
    let b = input.byte();
    Qty(match input.byte() % 8 {
        0..=5 => 1 + i64::from(b % 200),
        6 => 1_000 * (1 + i64::from(b)),
        _ => [0, -1, 10_000_000, 10_000_001, 100_000_001, i64::MAX, i64::MIN, 1 << 40][usize::from(b % 8)],
    })
}

/// An amount of money or collateral units: ordinary, or at the edges.
fn amount(input: &mut Input<'_>) -> i64 {
    let b = input.byte();
    match input.byte() % 4 {
        0..=2 => (1 + i64::from(b)) * 100 * Money::SCALE,
        _ => [0, -1, 1, i64::MAX, i64::MIN, i64::MAX / 2, 1 << 62, -(1 << 62)][usize::from(b % 8)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_crossing_stream_in_a_falling_market_trades_and_liquidates() {
        // The default venue; two thin accounts, one modest, one rich. Then alternating buys and
        // sells that cross each other, and every tenth order a crash step of the BTC index.
        let mut bytes = vec![0, 0, 0, 1, 3];
        for i in 0..200u8 {
            let (side, offset) = if i % 2 == 0 { (0, 4) } else { (1, (-4i8) as u8) };
            // Place: account, market (BTC), side, a price near the index (choice, offset), GTC,
            // cancel-newest, not reduce-only, 51 lots.
            bytes.extend([0, i % 4, 0, side, 0, offset, 0, 0, 1, 50, 0]);
            if i % 10 == 9 {
                // Index move: BTC, down by 16/256 of the index.
                bytes.extend([12, 0, (-16i8) as u8, 0]);
            }
        }
        let summary = run(&bytes).unwrap_or_else(|finding| panic!("{finding}"));
        assert!(summary.fills > 0, "{summary:?}");
        assert!(summary.liquidations > 0, "{summary:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        /// The same driver as the fuzz target `engine_commands`, on random bytes.
        #[test]
        fn no_command_stream_breaks_the_exchange(bytes in proptest::collection::vec(any::<u8>(), 0..1_500)) {
            if let Err(finding) = run(&bytes) {
                prop_assert!(false, "{}", finding);
            }
        }
    }
}
