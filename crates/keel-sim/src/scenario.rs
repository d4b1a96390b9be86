//! Hand-written scenarios: commands as JSON Lines in decimals and names, converted exactly to the
//! engine's integer commands; the engine's events rendered back as JSON Lines.
//!
//! The format is specified in `docs/scenario.md`. Three drivers share the parser:
//!
//! - [`run_scenario`] (`keel scenario`): a fresh engine, no journal, a scripted clock.
//! - [`replay_journal`] (`keel replay`): a journal file applied to a fresh engine.
//! - [`run_store`] (`keel run`): the durable engine behind the sequencer, fed from a reader.
//!
//! Nothing a scenario file contains can panic the parser: every value is checked and a bad one
//! becomes a [`LineError`] naming the line and the field.

use keel_engine::journal::FlushPolicy;
use keel_engine::sequencer::{Backpressure, Published, Sequencer, SequencerConfig};
use keel_engine::{Command, Engine, Event, MarketSpec, PlaceOrder, Sequenced, presets, store};
use keel_margin::{
    AccountView, AssetConfig, AssetId, MAX_POSITION_NOTIONAL, MarginMode, MarketConfig, Rate, RiskTierSpec,
    RiskTiers,
};
use keel_types::{
    AccountId, BookEvent, ConversionError, Grid, MarketId, Money, OrderId, OrderKind, Price, Qty, Side,
    StopReference, StpMode, TimeInForce,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Milliseconds between two commands that carry no `at_ms`.
pub const DEFAULT_STEP_MS: u64 = 1_000;

/// Exit code of a run that met a malformed line.
pub const EXIT_BAD_INPUT: i32 = 2;

/// Exit code of a run that could not read its input or write its output, or whose store failed.
pub const EXIT_FAILURE: i32 = 1;

/// Levels per side a `depth` command reports when it names none.
const DEFAULT_DEPTH_LEVELS: u32 = 10;

/// Fields every command may carry besides its own.
const COMMON_FIELDS: [&str; 3] = ["cmd", "at_ms", "note"];

/// Every command name, for the error that lists them.
const COMMANDS: &str = "create_market, add_asset, set_asset_price, open_account, deposit, withdraw, \
     set_leverage, set_margin_mode, place, cancel, amend, cancel_all, index, settle_funding, tick, advance, \
     account, depth, heatmap, digest";

/// A malformed scenario line: where, which field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: usize,
    /// The offending field, when one field is to blame.
    pub field: Option<String>,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "line {}, field \"{field}\": {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for LineError {}

/// An error before the line number is attached.
#[derive(Debug)]
struct FieldError {
    field: Option<String>,
    message: String,
}

impl FieldError {
    fn at(self, line: usize) -> LineError {
        LineError { line, field: self.field, message: self.message }
    }
}

fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: Some(field.to_string()), message: message.into() }
}

fn line_err(message: impl Into<String>) -> FieldError {
    FieldError { field: None, message: message.into() }
}

/// When a command happens on the scenario clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// One step after the previous command (the first command is at 0).
    Next,
    /// At this absolute time in milliseconds (`at_ms`).
    At(u64),
    /// This many milliseconds after the previous command (`advance`).
    After(u64),
}

/// What a parsed line registered in the parser's name tables, undone if the engine refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Registration {
    None,
    Market(MarketId),
    Asset(AssetId),
    Account(String),
}

/// One scenario line, converted.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The engine command.
    pub command: Command,
    /// When it happens (honoured by `keel scenario`; `keel run` stamps the wall clock instead).
    pub when: When,
    /// The label a `place` gives its order, for later `cancel`/`amend` lines.
    pub label: Option<String>,
    registration: Registration,
}

/// A market the parser knows: its id, its symbol (if known) and its grid.
#[derive(Clone, Debug)]
struct MarketEntry {
    id: MarketId,
    symbol: Option<String>,
    grid: Grid,
}

/// A collateral asset the parser knows, indexed by its id.
#[derive(Clone, Debug)]
struct AssetEntry {
    symbol: String,
    decimals: u32,
}

/// Turns scenario lines into engine commands, keeping the names (accounts, markets, assets, order
/// labels) the lines have introduced.
#[derive(Clone, Debug)]
pub struct Parser {
    accounts: HashMap<String, AccountId>,
    used_accounts: HashSet<u32>,
    next_account: u32,
    markets: Vec<MarketEntry>,
    assets: Vec<AssetEntry>,
    orders: HashMap<String, OrderId>,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::new()
    }
}

impl Parser {
    /// A parser for a fresh engine: no markets, no accounts, the settlement asset "USD".
    pub fn new() -> Parser {
        Parser {
            accounts: HashMap::new(),
            used_accounts: HashSet::new(),
            next_account: 1,
            markets: Vec::new(),
            assets: vec![AssetEntry { symbol: "USD".into(), decimals: Money::DECIMALS }],
            orders: HashMap::new(),
        }
    }

    /// A parser for an engine that already has state (after recovery): its markets are known by
    /// id, its assets by symbol, and new account names skip its account ids. Account names and
    /// order labels of earlier sessions are not part of the engine's state and are not known.
    pub fn for_engine(engine: &Engine) -> Parser {
        let mut parser = Parser::new();
        let ch = engine.clearinghouse();
        parser.markets = engine
            .market_ids()
            .filter_map(|id| ch.market(id).ok().map(|c| MarketEntry { id, symbol: None, grid: c.grid }))
            .collect();
        parser.assets = (0..=u16::MAX)
            .map_while(|i| ch.asset(AssetId(i)))
            .map(|a| AssetEntry { symbol: a.symbol.clone(), decimals: a.decimals })
            .collect();
        parser.used_accounts = ch.accounts().iter().map(|a| a.id().0).collect();
        parser
    }

    /// Parses one line; `Ok(None)` for a blank line or a comment (`#` or `//`).
    pub fn parse_line(&mut self, line: usize, text: &str) -> Result<Option<Parsed>, LineError> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("//") {
            return Ok(None);
        }
        self.parse_text(trimmed).map(Some).map_err(|e| e.at(line))
    }

    fn parse_text(&mut self, text: &str) -> Result<Parsed, FieldError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| line_err(format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(line_err(format!("expected a JSON object, found {}", describe(&value))));
        };
        let cmd = match obj.get("cmd") {
            Some(Value::String(cmd)) => cmd.clone(),
            Some(other) => {
                return Err(field_err("cmd", format!("expected a string, found {}", describe(other))));
            }
            None => return Err(field_err("cmd", format!("missing; one of: {COMMANDS}"))),
        };
        let at = match obj.get("at_ms") {
            Some(v) => Some(integer("at_ms", v)?),
            None => None,
        };
        let fields = Fields { obj: &obj, cmd: &cmd };
        let mut parsed = self.command(&cmd, &fields)?;
        if let Some(at) = at {
            if parsed.when != When::Next {
                return Err(field_err("at_ms", "advance takes a duration, not at_ms (use tick with at_ms)"));
            }
            parsed.when = When::At(at);
        }
        Ok(parsed)
    }

    fn command(&mut self, cmd: &str, f: &Fields<'_>) -> Result<Parsed, FieldError> {
        let parsed =
            |command| Parsed { command, when: When::Next, label: None, registration: Registration::None };
        Ok(match cmd {
            "create_market" => return self.create_market(f),
            "add_asset" => {
                f.allow(&["symbol", "decimals", "price", "haircut"])?;
                let symbol = f.string("symbol")?;
                if self.asset_id(&symbol).is_some() {
                    return Err(field_err("symbol", format!("asset \"{symbol}\" already exists")));
                }
                let decimals = u32_of("decimals", f.req("decimals")?)?;
                if decimals > 18 {
                    return Err(field_err("decimals", format!("{decimals} is more than the 18 allowed")));
                }
                let price = money("price", f.req("price")?)?;
                let haircut = match f.opt("haircut") {
                    Some(v) => rate("haircut", v)?,
                    None => Rate::ZERO,
                };
                let id = u16::try_from(self.assets.len())
                    .map(AssetId)
                    .map_err(|_| field_err("symbol", "too many assets"))?;
                self.assets.push(AssetEntry { symbol: symbol.clone(), decimals });
                Parsed {
                    registration: Registration::Asset(id),
                    ..parsed(Command::AddAsset(AssetConfig { symbol, decimals, price, haircut }))
                }
            }
            "set_asset_price" => {
                f.allow(&["asset", "price"])?;
                let asset = self.asset(f, "asset")?;
                let price = money("price", f.req("price")?)?;
                parsed(Command::SetAssetPrice { asset, price })
            }
            "open_account" => {
                f.allow(&["account"])?;
                let (account, registration) = match f.req("account")? {
                    Value::String(name) => match self.accounts.get(name) {
                        // Opening a name twice is passed on so the engine's refusal is visible.
                        Some(&id) => (id, Registration::None),
                        None => {
                            let id = self.allocate_account();
                            self.accounts.insert(name.clone(), id);
                            (id, Registration::Account(name.clone()))
                        }
                    },
                    v => {
                        let id = AccountId(u32_of("account", v)?);
                        self.used_accounts.insert(id.0);
                        (id, Registration::None)
                    }
                };
                Parsed { registration, ..parsed(Command::OpenAccount { account }) }
            }
            "deposit" | "withdraw" => {
                f.allow(&["account", "asset", "amount"])?;
                let account = self.account(f, "account")?;
                let asset = match f.opt("asset") {
                    Some(_) => self.asset(f, "asset")?,
                    None => AssetId::SETTLEMENT,
                };
                let entry = &self.assets[usize::from(asset.0)];
                let amount = asset_amount("amount", f.req("amount")?, entry)?;
                if cmd == "deposit" {
                    parsed(Command::Deposit { account, asset, amount })
                } else {
                    parsed(Command::Withdraw { account, asset, amount })
                }
            }
            "set_leverage" => {
                f.allow(&["account", "market", "leverage"])?;
                let account = self.account(f, "account")?;
                let market = self.market_id(f, "market")?;
                let leverage = u32_of("leverage", f.req("leverage")?)?;
                parsed(Command::SetLeverage { account, market, leverage })
            }
            "set_margin_mode" => {
                f.allow(&["account", "market", "mode"])?;
                let account = self.account(f, "account")?;
                let market = self.market_id(f, "market")?;
                let mode =
                    f.choice("mode", &[("cross", MarginMode::Cross), ("isolated", MarginMode::Isolated)])?;
                parsed(Command::SetMarginMode { account, market, mode })
            }
            "place" => return self.place(f),
            "cancel" => {
                f.allow(&["account", "market", "order"])?;
                let account = self.account(f, "account")?;
                let market = self.market_id(f, "market")?;
                let id = self.order(f, "order")?;
                parsed(Command::Cancel { account, market, id })
            }
            "amend" => {
                f.allow(&["account", "market", "order", "price", "qty"])?;
                let account = self.account(f, "account")?;
                let grid = self.market(f, "market")?;
                let id = self.order(f, "order")?;
                let price = match f.opt("price") {
                    Some(v) => Some(price("price", v, &grid.grid)?),
                    None => None,
                };
                let qty = qty("qty", f.req("qty")?, &grid.grid)?;
                parsed(Command::Amend { account, market: grid.id, id, price, qty })
            }
            "cancel_all" => {
                f.allow(&["account", "market"])?;
                let account = self.account(f, "account")?;
                let market = match f.opt("market") {
                    Some(_) => Some(self.market_id(f, "market")?),
                    None => None,
                };
                parsed(Command::CancelAll { account, market })
            }
            "index" | "index_price" => {
                f.allow(&["market", "price"])?;
                let market = self.market(f, "market")?;
                let price = price("price", f.req("price")?, &market.grid)?;
                parsed(Command::IndexPrice { market: market.id, price })
            }
            "settle_funding" => {
                f.allow(&["market"])?;
                parsed(Command::SettleFunding { market: self.market_id(f, "market")? })
            }
            "tick" => {
                f.allow(&[])?;
                parsed(Command::Tick)
            }
            "advance" => {
                f.allow(&["ms", "seconds", "minutes", "hours"])?;
                let units = [("ms", 1), ("seconds", 1_000), ("minutes", 60_000), ("hours", 3_600_000)];
                let given: Vec<_> = units.iter().filter(|(name, _)| f.opt(name).is_some()).collect();
                let &[&(name, scale)] = given.as_slice() else {
                    return Err(line_err("advance needs exactly one of ms, seconds, minutes, hours"));
                };
                let ms = duration_ms(name, f.req(name)?, scale)?;
                Parsed { when: When::After(ms), ..parsed(Command::Tick) }
            }
            "account" | "account_view" => {
                f.allow(&["account"])?;
                parsed(Command::AccountView { account: self.account(f, "account")? })
            }
            "depth" => {
                f.allow(&["market", "levels"])?;
                let market = self.market_id(f, "market")?;
                let levels = match f.opt("levels") {
                    Some(v) => u32_of("levels", v)?,
                    None => DEFAULT_DEPTH_LEVELS,
                };
                parsed(Command::Depth { market, levels })
            }
            "heatmap" => {
                f.allow(&["market", "bucket"])?;
                let market = self.market(f, "market")?;
                // The bucket width is a price distance, converted on the market's tick grid.
                let bucket = price("bucket", f.req("bucket")?, &market.grid)?;
                parsed(Command::Heatmap { market: market.id, bucket_ticks: bucket.0 })
            }
            "digest" => {
                f.allow(&[])?;
                parsed(Command::Digest)
            }
            other => {
                return Err(field_err("cmd", format!("unknown command \"{other}\"; one of: {COMMANDS}")));
            }
        })
    }

    fn create_market(&mut self, f: &Fields<'_>) -> Result<Parsed, FieldError> {
        const OVERRIDES: [&str; 7] = [
            "symbol",
            "id",
            "maker_fee",
            "taker_fee",
            "default_leverage",
            "funding_interval_ms",
            "impact_sample_ms",
        ];
        let mut spec = match f.opt("preset") {
            Some(_) => {
                let mut allowed = vec!["preset", "impact_notional"];
                allowed.extend(OVERRIDES);
                f.allow(&allowed)?;
                let preset = f.string("preset")?;
                match preset.to_ascii_uppercase().as_str() {
                    "BTC-PERP" => presets::btc_perp(0),
                    "ETH-PERP" => presets::eth_perp(0),
                    _ => {
                        return Err(field_err(
                            "preset",
                            format!("unknown preset \"{preset}\"; one of: BTC-PERP, ETH-PERP"),
                        ));
                    }
                }
            }
            None => {
                let mut allowed = vec![
                    "tick",
                    "lot",
                    "max_price",
                    "max_position",
                    "tiers",
                    "max_notional",
                    "impact_notional",
                ];
                allowed.extend(OVERRIDES);
                f.allow(&allowed)?;
                custom_market(f)?
            }
        };
        if let Some(v) = f.opt("symbol") {
            spec.symbol = string_of("symbol", v)?;
        }
        let id = match f.opt("id") {
            Some(v) => MarketId(u32_of("id", v)?),
            None => MarketId(self.markets.iter().map(|m| m.id.0).max().map_or(1, |m| m.saturating_add(1))),
        };
        if self.markets.iter().any(|m| m.id == id) {
            return Err(field_err("id", format!("market {id} already exists")));
        }
        if self.markets.iter().any(|m| m.symbol.as_deref() == Some(spec.symbol.as_str())) {
            return Err(field_err("symbol", format!("market \"{}\" already exists", spec.symbol)));
        }
        spec.margin.id = id;
        if let Some(v) = f.opt("maker_fee") {
            spec.margin.maker_fee = rate("maker_fee", v)?;
        }
        if let Some(v) = f.opt("taker_fee") {
            spec.margin.taker_fee = rate("taker_fee", v)?;
        }
        if let Some(v) = f.opt("default_leverage") {
            spec.margin.default_leverage = u32_of("default_leverage", v)?;
        }
        if let Some(v) = f.opt("funding_interval_ms") {
            spec.margin.funding.interval_ms = integer("funding_interval_ms", v)?;
        }
        if let Some(v) = f.opt("impact_notional") {
            spec.impact_notional = money("impact_notional", v)?;
        }
        if let Some(v) = f.opt("impact_sample_ms") {
            spec.impact_sample_ms = integer("impact_sample_ms", v)?;
        }
        self.markets.push(MarketEntry { id, symbol: Some(spec.symbol.clone()), grid: spec.margin.grid });
        Ok(Parsed {
            command: Command::CreateMarket(Box::new(spec)),
            when: When::Next,
            label: None,
            registration: Registration::Market(id),
        })
    }

    fn place(&mut self, f: &Fields<'_>) -> Result<Parsed, FieldError> {
        f.allow(&[
            "account",
            "market",
            "side",
            "type",
            "price",
            "trigger",
            "trigger_by",
            "qty",
            "tif",
            "stp",
            "reduce_only",
            "label",
        ])?;
        let account = self.account(f, "account")?;
        let market = self.market(f, "market")?;
        let grid = &market.grid;
        let side = f.choice("side", &[("buy", Side::Buy), ("sell", Side::Sell)])?;
        let has_price = f.opt("price").is_some();
        let has_trigger = f.opt("trigger").is_some();
        let kind_name = match f.opt("type") {
            Some(v) => string_of("type", v)?,
            None => match (has_price, has_trigger) {
                (true, false) => "limit".into(),
                (false, false) => "market".into(),
                (false, true) => "stop_market".into(),
                (true, true) => "stop_limit".into(),
            },
        };
        let (needs_price, needs_trigger) = match kind_name.as_str() {
            "limit" => (true, false),
            "market" => (false, false),
            "stop_market" => (false, true),
            "stop_limit" => (true, true),
            other => {
                return Err(field_err(
                    "type",
                    format!("unknown order type \"{other}\"; one of: limit, market, stop_market, stop_limit"),
                ));
            }
        };
        for (field, needed, present) in
            [("price", needs_price, has_price), ("trigger", needs_trigger, has_trigger)]
        {
            if needed && !present {
                return Err(field_err(field, format!("missing; a {kind_name} order needs one")));
            }
            if !needed && present {
                return Err(field_err(field, format!("a {kind_name} order takes no {field}")));
            }
        }
        if !needs_trigger && f.opt("trigger_by").is_some() {
            return Err(field_err("trigger_by", format!("a {kind_name} order has no trigger")));
        }
        let reference = match f.opt("trigger_by") {
            Some(_) => {
                f.choice("trigger_by", &[("last", StopReference::Last), ("mark", StopReference::Mark)])?
            }
            None => StopReference::Last,
        };
        let limit = if needs_price { Some(price("price", f.req("price")?, grid)?) } else { None };
        let trigger = if needs_trigger { Some(price("trigger", f.req("trigger")?, grid)?) } else { None };
        let kind = match (limit, trigger) {
            (Some(price), None) => OrderKind::Limit { price },
            (None, None) => OrderKind::Market,
            (None, Some(trigger)) => OrderKind::StopMarket { trigger, reference },
            (Some(price), Some(trigger)) => OrderKind::StopLimit { trigger, price, reference },
        };
        let qty = qty("qty", f.req("qty")?, grid)?;
        // Orders that become market orders are immediate by nature; resting orders default to GTC.
        let default_tif = if limit.is_some() { TimeInForce::Gtc } else { TimeInForce::Ioc };
        let tif = match f.opt("tif") {
            Some(_) => f.choice(
                "tif",
                &[
                    ("gtc", TimeInForce::Gtc),
                    ("ioc", TimeInForce::Ioc),
                    ("fok", TimeInForce::Fok),
                    ("post_only", TimeInForce::PostOnly),
                ],
            )?,
            None => default_tif,
        };
        let stp = match f.opt("stp") {
            Some(_) => f.choice(
                "stp",
                &[
                    ("cancel_newest", StpMode::CancelNewest),
                    ("cancel_oldest", StpMode::CancelOldest),
                    ("cancel_both", StpMode::CancelBoth),
                ],
            )?,
            None => StpMode::CancelNewest,
        };
        let reduce_only = match f.opt("reduce_only") {
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(field_err(
                    "reduce_only",
                    format!("expected true or false, found {}", describe(other)),
                ));
            }
            None => false,
        };
        let label = match f.opt("label") {
            Some(v) => Some(string_of("label", v)?),
            None => None,
        };
        let order = PlaceOrder { account, market: market.id, side, kind, qty, tif, stp, reduce_only };
        Ok(Parsed {
            command: Command::Place(order),
            when: When::Next,
            label,
            registration: Registration::None,
        })
    }

    /// Learns from a command's outcome: binds a `place` label to the order id the engine gave, and
    /// forgets a name whose registration the engine refused.
    pub fn observe(&mut self, parsed: &Parsed, events: &[Event]) {
        let rejected = events.iter().any(|e| matches!(e, Event::Rejected { .. }));
        if rejected {
            match &parsed.registration {
                Registration::None => {}
                Registration::Market(id) => self.markets.retain(|m| m.id != *id),
                Registration::Asset(id) => {
                    if usize::from(id.0) + 1 == self.assets.len() {
                        self.assets.pop();
                    }
                }
                Registration::Account(name) => {
                    if let Some(id) = self.accounts.remove(name) {
                        self.used_accounts.remove(&id.0);
                    }
                }
            }
            return;
        }
        if let Some(label) = &parsed.label {
            let accepted = events.iter().find_map(|e| match e {
                Event::Book { event: BookEvent::Accepted { id, .. }, .. } => Some(*id),
                _ => None,
            });
            if let Some(id) = accepted {
                self.orders.insert(label.clone(), id);
            }
        }
    }

    fn allocate_account(&mut self) -> AccountId {
        while self.used_accounts.contains(&self.next_account) {
            self.next_account = self.next_account.saturating_add(1);
        }
        let id = self.next_account;
        self.used_accounts.insert(id);
        AccountId(id)
    }

    fn account(&self, f: &Fields<'_>, field: &str) -> Result<AccountId, FieldError> {
        match f.req(field)? {
            Value::String(name) => self.accounts.get(name).copied().ok_or_else(|| {
                field_err(field, format!("unknown account \"{name}\" (open it first with open_account)"))
            }),
            v => Ok(AccountId(u32_of(field, v)?)),
        }
    }

    fn find_market(&self, f: &Fields<'_>, field: &str) -> Result<Result<&MarketEntry, MarketId>, FieldError> {
        match f.req(field)? {
            Value::String(symbol) => self
                .markets
                .iter()
                .find(|m| m.symbol.as_deref() == Some(symbol.as_str()))
                .map(Ok)
                .ok_or_else(|| field_err(field, format!("unknown market \"{symbol}\""))),
            v => {
                let id = MarketId(u32_of(field, v)?);
                Ok(self.markets.iter().find(|m| m.id == id).ok_or(id))
            }
        }
    }

    /// A market by symbol or id; an unknown id is passed on for the engine to refuse.
    fn market_id(&self, f: &Fields<'_>, field: &str) -> Result<MarketId, FieldError> {
        Ok(match self.find_market(f, field)? {
            Ok(entry) => entry.id,
            Err(id) => id,
        })
    }

    /// A market whose grid is needed to convert prices and quantities.
    fn market(&self, f: &Fields<'_>, field: &str) -> Result<MarketEntry, FieldError> {
        match self.find_market(f, field)? {
            Ok(entry) => Ok(entry.clone()),
            Err(id) => Err(field_err(field, format!("unknown market {id}"))),
        }
    }

    fn asset_id(&self, symbol: &str) -> Option<AssetId> {
        let index = self.assets.iter().position(|a| a.symbol == symbol)?;
        u16::try_from(index).ok().map(AssetId)
    }

    fn asset(&self, f: &Fields<'_>, field: &str) -> Result<AssetId, FieldError> {
        match f.req(field)? {
            Value::String(symbol) => {
                self.asset_id(symbol).ok_or_else(|| field_err(field, format!("unknown asset \"{symbol}\"")))
            }
            v => {
                let id = integer(field, v)?;
                u16::try_from(id)
                    .ok()
                    .filter(|&i| usize::from(i) < self.assets.len())
                    .map(AssetId)
                    .ok_or_else(|| field_err(field, format!("unknown asset {id}")))
            }
        }
    }

    fn order(&self, f: &Fields<'_>, field: &str) -> Result<OrderId, FieldError> {
        match f.req(field)? {
            Value::String(label) => self.orders.get(label).copied().ok_or_else(|| {
                field_err(
                    field,
                    format!("unknown order label \"{label}\" (its place was refused or not yet run)"),
                )
            }),
            v => Ok(OrderId(integer(field, v)?)),
        }
    }
}

/// A fully specified market: grid, limits and risk tiers from the line.
fn custom_market(f: &Fields<'_>) -> Result<MarketSpec, FieldError> {
    let symbol = f.string("symbol")?;
    let tick = decimal("tick", f.req("tick")?)?;
    let lot = decimal("lot", f.req("lot")?)?;
    let grid = Grid::new(tick, lot).map_err(|e| field_err("tick", e.to_string()))?;
    let max_price = price("max_price", f.req("max_price")?, &grid)?;
    let max_position = qty("max_position", f.req("max_position")?, &grid)?;
    let Value::Array(rows) = f.req("tiers")? else {
        return Err(field_err(
            "tiers",
            "expected an array of {\"floor\", \"mmr\", \"max_leverage\"} objects",
        ));
    };
    let mut specs = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let name = |key: &str| format!("tiers[{i}].{key}");
        let Value::Object(row) = row else {
            return Err(field_err(
                &format!("tiers[{i}]"),
                format!("expected an object, found {}", describe(row)),
            ));
        };
        let get = |key: &str| row.get(key).ok_or_else(|| field_err(&name(key), "missing"));
        if let Some(key) = row.keys().find(|k| !["floor", "mmr", "max_leverage"].contains(&k.as_str())) {
            return Err(field_err(&name(key), "unknown field; expected floor, mmr, max_leverage"));
        }
        specs.push(RiskTierSpec {
            floor: money(&name("floor"), get("floor")?)?,
            maintenance_rate: rate(&name("mmr"), get("mmr")?)?,
            max_leverage: u32_of(&name("max_leverage"), get("max_leverage")?)?,
        });
    }
    let max_notional = match f.opt("max_notional") {
        Some(v) => money("max_notional", v)?,
        None => MAX_POSITION_NOTIONAL,
    };
    let tiers = RiskTiers::new(&specs, max_notional).map_err(|e| field_err("tiers", e.to_string()))?;
    let first_leverage = specs.first().map_or(1, |s| s.max_leverage);
    let mut margin = MarketConfig::new(MarketId(0), grid, tiers, max_price, max_position);
    margin.mark.basis_window = presets::BASIS_WINDOW;
    Ok(MarketSpec {
        symbol,
        margin,
        book: keel_book::BookConfig { max_price, max_qty: max_position, ..keel_book::BookConfig::default() },
        // The presets' rule: 200 units of margin at the first tier's leverage.
        impact_notional: Money(200 * Money::SCALE * i64::from(first_leverage.min(1_000))),
        impact_sample_ms: presets::IMPACT_SAMPLE_MS,
    })
}

/// The fields of one line's object, checked against what its command accepts.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    cmd: &'a str,
}

impl Fields<'_> {
    /// Refuses any field the command does not know: a typo must not be silently ignored.
    fn allow(&self, allowed: &[&str]) -> Result<(), FieldError> {
        for key in self.obj.keys() {
            if !allowed.contains(&key.as_str()) && !COMMON_FIELDS.contains(&key.as_str()) {
                let mut all: Vec<&str> = allowed.to_vec();
                all.extend(["at_ms", "note"]);
                return Err(field_err(
                    key,
                    format!("unknown field for {}; it accepts: {}", self.cmd, all.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn opt(&self, field: &str) -> Option<&Value> {
        self.obj.get(field)
    }

    fn req(&self, field: &str) -> Result<&Value, FieldError> {
        self.obj.get(field).ok_or_else(|| field_err(field, format!("missing; {} needs it", self.cmd)))
    }

    fn string(&self, field: &str) -> Result<String, FieldError> {
        string_of(field, self.req(field)?)
    }

    fn choice<T: Copy>(&self, field: &str, options: &[(&str, T)]) -> Result<T, FieldError> {
        let text = self.string(field)?;
        options.iter().find(|(name, _)| name.eq_ignore_ascii_case(&text)).map(|&(_, v)| v).ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            field_err(field, format!("\"{text}\" is not one of: {}", names.join(", ")))
        })
    }
}

/// A short description of a JSON value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("\"{}\"", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn string_of(field: &str, value: &Value) -> Result<String, FieldError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(field_err(field, format!("expected a string, found {}", describe(other)))),
    }
}

/// A decimal from a string (exact) or a JSON number. A JSON number goes through `f64`, whose
/// shortest round-trip rendering gives back what was typed for up to 15 significant digits;
/// longer values belong in strings (documented).
fn decimal(field: &str, value: &Value) -> Result<Decimal, FieldError> {
    match value {
        Value::String(s) => Decimal::from_str_exact(s.trim())
            .map_err(|_| field_err(field, format!("\"{s}\" is not a decimal number"))),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Decimal::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(Decimal::from(u))
            } else {
                let float = n.as_f64().filter(|f| f.is_finite());
                float
                    .and_then(|f| Decimal::from_str_exact(&f.to_string()).ok())
                    .ok_or_else(|| field_err(field, format!("{n} is out of range")))
            }
        }
        other => Err(field_err(
            field,
            format!(
                "expected a decimal number (a string like \"65000.5\" or a JSON number), found {}",
                describe(other)
            ),
        )),
    }
}

/// A whole non-negative number from a JSON integer or a string of digits.
fn integer(field: &str, value: &Value) -> Result<u64, FieldError> {
    let d = decimal(field, value)?;
    if !d.fract().is_zero() || d.is_sign_negative() && !d.is_zero() {
        return Err(field_err(field, format!("{d} is not a whole number ≥ 0")));
    }
    d.to_u64().ok_or_else(|| field_err(field, format!("{d} is out of range")))
}

fn u32_of(field: &str, value: &Value) -> Result<u32, FieldError> {
    let n = integer(field, value)?;
    u32::try_from(n).map_err(|_| field_err(field, format!("{n} is out of range (at most {})", u32::MAX)))
}

/// Explains a grid conversion failure in terms of the market's steps.
fn grid_message(error: ConversionError, step_name: &str) -> String {
    match error {
        ConversionError::OffGrid { value, step, .. } => {
            format!("{value} is not a multiple of the {step_name} {step}")
        }
        ConversionError::NotPositive { value, .. } => format!("{value} must be positive"),
        ConversionError::Negative { value, .. } => format!("{value} must not be negative"),
        ConversionError::OutOfRange { value, .. } => format!("{value} is out of range"),
        other => other.to_string(),
    }
}

fn price(field: &str, value: &Value, grid: &Grid) -> Result<Price, FieldError> {
    grid.price(decimal(field, value)?).map_err(|e| field_err(field, grid_message(e, "tick size")))
}

fn qty(field: &str, value: &Value, grid: &Grid) -> Result<Qty, FieldError> {
    grid.qty(decimal(field, value)?).map_err(|e| field_err(field, grid_message(e, "lot size")))
}

fn money(field: &str, value: &Value) -> Result<Money, FieldError> {
    Money::from_decimal(decimal(field, value)?).map_err(|e| field_err(field, grid_message(e, "money unit")))
}

/// An amount in an asset's whole units, as an integer of its smallest unit; must be positive.
fn asset_amount(field: &str, value: &Value, asset: &AssetEntry) -> Result<i64, FieldError> {
    let d = decimal(field, value)?;
    if d <= Decimal::ZERO {
        return Err(field_err(field, format!("{d} must be positive")));
    }
    let unit = 10u64.checked_pow(asset.decimals).map(Decimal::from).unwrap_or(Decimal::MAX);
    let scaled = d.checked_mul(unit).ok_or_else(|| field_err(field, format!("{d} is out of range")))?;
    if !scaled.fract().is_zero() {
        return Err(field_err(
            field,
            format!("{d} has more than {} decimal places, the precision of {}", asset.decimals, asset.symbol),
        ));
    }
    scaled.to_i64().ok_or_else(|| field_err(field, format!("{d} is out of range")))
}

/// A rate as a fraction ("0.0005", 0.0005) or a percentage string ("0.05%"), exact to 10^-8.
fn rate(field: &str, value: &Value) -> Result<Rate, FieldError> {
    let fraction = match value {
        Value::String(s) if s.trim_end().ends_with('%') => {
            let number = s.trim().trim_end_matches('%').trim();
            let d = Decimal::from_str_exact(number)
                .map_err(|_| field_err(field, format!("\"{s}\" is not a percentage")))?;
            d.checked_div(Decimal::ONE_HUNDRED)
                .ok_or_else(|| field_err(field, format!("{s} is out of range")))?
        }
        other => decimal(field, other)?,
    };
    let scaled = fraction
        .checked_mul(Decimal::from(Rate::SCALE))
        .ok_or_else(|| field_err(field, format!("{fraction} is out of range")))?;
    if !scaled.fract().is_zero() {
        return Err(field_err(field, format!("{fraction} is finer than the rate unit 0.00000001")));
    }
    scaled.to_i64().map(Rate).ok_or_else(|| field_err(field, format!("{fraction} is out of range")))
}

fn duration_ms(field: &str, value: &Value, scale: u64) -> Result<u64, FieldError> {
    let d = decimal(field, value)?;
    let ms = d.checked_mul(Decimal::from(scale)).filter(|ms| ms.fract().is_zero() && *ms > Decimal::ZERO);
    ms.and_then(|ms| ms.to_u64())
        .ok_or_else(|| field_err(field, format!("{d} is not a positive whole number of milliseconds")))
}

// ----- output -----------------------------------------------------------------------------

/// Decimal renderings of an event's prices, quantities and money, using the engine's grids.
pub fn decimals(engine: &Engine, event: &Event) -> Option<Value> {
    let ch = engine.clearinghouse();
    let grid = |market: MarketId| ch.market(market).ok().map(|c| c.grid);
    let p = |g: &Grid, price: Price| g.price_to_decimal(price).to_string();
    let q = |g: &Grid, qty: Qty| g.qty_to_decimal(qty).to_string();
    Some(match event {
        Event::Settled { market, price, qty, realized_pnl, fee, position, balance, .. } => {
            let g = grid(*market)?;
            json!({
                "price": p(&g, *price), "qty": q(&g, *qty), "realized_pnl": m(*realized_pnl),
                "fee": m(*fee), "position": q(&g, *position), "balance": m(*balance),
            })
        }
        Event::Book { market, event } => {
            let g = grid(*market)?;
            match *event {
                BookEvent::Fill { price, qty, maker_remaining, taker_remaining, .. } => json!({
                    "price": p(&g, price), "qty": q(&g, qty),
                    "maker_remaining": q(&g, maker_remaining), "taker_remaining": q(&g, taker_remaining),
                }),
                BookEvent::Cancelled { remaining, .. } => json!({ "remaining": q(&g, remaining) }),
                BookEvent::Triggered { reference_price, .. } => {
                    json!({ "reference_price": p(&g, reference_price) })
                }
                BookEvent::Amended { price, qty, .. } => json!({ "price": p(&g, price), "qty": q(&g, qty) }),
                BookEvent::Accepted { .. } | BookEvent::Rejected { .. } => return None,
            }
        }
        Event::Mark { market, index, mark } => {
            let g = grid(*market)?;
            json!({ "index": p(&g, *index), "mark": p(&g, *mark) })
        }
        Event::Funding { market, rate, price, payments } => {
            let g = grid(*market)?;
            let payments: Vec<Value> = payments.iter().map(|(a, amount)| json!([a.0, m(*amount)])).collect();
            json!({ "rate": percent(*rate), "price": p(&g, *price), "payments": payments })
        }
        Event::Depth { market, bids, asks } => {
            let g = grid(*market)?;
            let side = |levels: &[(Price, Qty)]| -> Vec<Value> {
                levels.iter().map(|&(price, qty)| json!([p(&g, price), q(&g, qty)])).collect()
            };
            json!({ "bids": side(bids), "asks": side(asks) })
        }
        Event::AccountView(view) => account_decimals(engine, view),
        Event::Deposited { asset, amount, .. } | Event::Withdrew { asset, amount, .. } => {
            let decimals = ch.asset(*asset)?.decimals;
            let amount = Decimal::try_from_i128_with_scale(i128::from(*amount), decimals).ok()?;
            json!({ "amount": amount.normalize().to_string() })
        }
        Event::AssetPriced { price, .. } => json!({ "price": m(*price) }),
        _ => return None,
    })
}

fn m(money: Money) -> String {
    money.to_decimal().normalize().to_string()
}

fn percent(rate: Rate) -> String {
    format!("{}%", (Decimal::new(rate.0, 8) * Decimal::ONE_HUNDRED).normalize())
}

fn account_decimals(engine: &Engine, view: &AccountView) -> Value {
    let ch = engine.clearinghouse();
    let positions: Vec<Value> = view
        .positions
        .iter()
        .map(|pos| {
            let grid = ch.market(pos.market).ok().map(|c| c.grid);
            let price = |price: Option<Price>| match (grid, price) {
                (Some(g), Some(price)) => Value::String(g.price_to_decimal(price).to_string()),
                _ => Value::Null,
            };
            let size = grid.map_or(Value::Null, |g| Value::String(g.qty_to_decimal(pos.size).to_string()));
            // The view's entry price is already in the market's price unit, exact; twelve places
            // are plenty for a human and keep repeating fractions short.
            let entry = pos.entry_price.round_dp(12).normalize().to_string();
            json!({
                "market": pos.market.0, "size": size, "entry_price": entry,
                "mark_price": price(Some(pos.mark_price)), "unrealized_pnl": m(pos.unrealized_pnl),
                "realized_pnl": m(pos.realized_pnl), "fees_paid": m(pos.fees_paid), "funding": m(pos.funding),
                "initial_margin": m(pos.initial_margin), "maintenance_margin": m(pos.maintenance_margin),
                "isolated_margin": m(pos.isolated_margin), "margin_ratio": pos.margin_ratio.map(percent),
                "liquidation_price": price(pos.liquidation_price),
                "bankruptcy_price": price(pos.bankruptcy_price),
            })
        })
        .collect();
    json!({
        "balance": m(view.balance), "collateral_value": m(view.collateral_value), "equity": m(view.equity),
        "available": m(view.available), "initial_margin": m(view.initial_margin),
        "maintenance_margin": m(view.maintenance_margin), "margin_ratio": view.margin_ratio.map(percent),
        "positions": positions,
    })
}

/// The envelope of one printed event; fields print in this order.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    seq: u64,
    time_ms: u64,
    event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    decimal: Option<Value>,
}

/// One event as a JSON line: `{"line":..,"seq":..,"time_ms":..,"event":..,"decimal":..}`.
pub fn event_line(engine: &Engine, line: Option<usize>, seq: u64, time_ms: u64, event: &Event) -> String {
    let envelope = EventLine { line, seq, time_ms, event, decimal: decimals(engine, event) };
    serde_json::to_string(&envelope)
        .unwrap_or_else(|e| json!({ "seq": seq, "unserializable": e.to_string() }).to_string())
}

// ----- keel scenario ------------------------------------------------------------------------

/// A fresh engine driven by scenario lines on a scripted clock.
pub struct Runner {
    engine: Engine,
    parser: Parser,
    last_time: Option<u64>,
    step_ms: u64,
    seq: u64,
    events: Vec<Event>,
}

impl Default for Runner {
    fn default() -> Runner {
        Runner::new()
    }
}

impl Runner {
    /// A runner on a fresh engine with the default step of [`DEFAULT_STEP_MS`].
    pub fn new() -> Runner {
        Runner {
            engine: Engine::new(),
            parser: Parser::new(),
            last_time: None,
            step_ms: DEFAULT_STEP_MS,
            seq: 0,
            events: Vec::new(),
        }
    }

    /// Runs one line. Returns the (seq, time) it ran at, or `None` for a blank or comment line;
    /// its events are then in [`Runner::events`].
    pub fn execute(&mut self, line: usize, text: &str) -> Result<Option<(u64, u64)>, LineError> {
        self.events.clear();
        let Some(parsed) = self.parser.parse_line(line, text)? else { return Ok(None) };
        let (seq, time_ms) = if parsed.command.is_query() {
            (self.seq, self.last_time.unwrap_or(0))
        } else {
            let time = self.time_of(parsed.when).map_err(|e| e.at(line))?;
            self.seq += 1;
            self.last_time = Some(time);
            (self.seq, time)
        };
        let command = Sequenced { seq, time_ms, command: parsed.command.clone() };
        self.engine.apply(&command, &mut self.events);
        self.parser.observe(&parsed, &self.events);
        Ok(Some((seq, time_ms)))
    }

    fn time_of(&self, when: When) -> Result<u64, FieldError> {
        let last = self.last_time;
        match when {
            When::Next => Ok(last.map_or(0, |t| t.saturating_add(self.step_ms))),
            When::At(at) => match last {
                Some(last) if at < last => Err(field_err(
                    "at_ms",
                    format!("{at} is before the previous command's time {last}; time cannot go backwards"),
                )),
                _ => Ok(at),
            },
            When::After(ms) => Ok(last.unwrap_or(0).saturating_add(ms)),
        }
    }

    /// The events of the last line run.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Reads lines without failing the whole input on one line of invalid UTF-8.
fn for_each_line(
    mut input: impl BufRead,
    mut visit: impl FnMut(usize, Result<&str, LineError>) -> io::Result<bool>,
) -> io::Result<()> {
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        buffer.clear();
        if input.read_until(b'\n', &mut buffer)? == 0 {
            return Ok(());
        }
        line += 1;
        let text = std::str::from_utf8(&buffer)
            .map(|t| t.trim_end_matches(['\n', '\r']))
            .map_err(|e| LineError { line, field: None, message: format!("not valid UTF-8: {e}") });
        if !visit(line, text)? {
            return Ok(());
        }
    }
}

/// `keel scenario`: runs `input` on a fresh engine, writing every event to `out` as a JSON line and
/// malformed lines to `err`. Stops at the first malformed line unless `keep_going`. Returns the exit
/// code: 0, or [`EXIT_BAD_INPUT`] if any line was malformed, or [`EXIT_FAILURE`] on an I/O error.
pub fn run_scenario(
    input: impl BufRead,
    keep_going: bool,
    out: &mut impl Write,
    err: &mut impl Write,
) -> i32 {
    let mut runner = Runner::new();
    let mut bad = false;
    let result = for_each_line(input, |line, text| match text.and_then(|text| runner.execute(line, text)) {
        Ok(None) => Ok(true),
        Ok(Some((seq, time_ms))) => {
            for event in runner.events() {
                writeln!(out, "{}", event_line(runner.engine(), Some(line), seq, time_ms, event))?;
            }
            Ok(true)
        }
        Err(error) => {
            bad = true;
            writeln!(err, "error: {error}")?;
            Ok(keep_going)
        }
    });
    let flushed = result.and_then(|()| out.flush());
    match flushed {
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            EXIT_FAILURE
        }
        Ok(()) if bad => EXIT_BAD_INPUT,
        Ok(()) => 0,
    }
}

// ----- keel replay --------------------------------------------------------------------------

/// `keel replay`: applies every good record of a journal (a file, or a store directory's journal)
/// to a fresh engine, writing its events as JSON lines and, last, one line with the journal report
/// and the state digest. Returns the exit code (0 also for a damaged journal: the report says so).
pub fn replay_journal(path: &Path, out: &mut impl Write, err: &mut impl Write) -> i32 {
    let path: PathBuf = if path.is_dir() { store::journal_path(path) } else { path.to_path_buf() };
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let mut write_error: Option<io::Error> = None;
    let result = store::read_journal(&path, |command| {
        events.clear();
        engine.apply(&command, &mut events);
        if write_error.is_some() {
            return;
        }
        for event in &events {
            let line = event_line(&engine, None, command.seq, command.time_ms, event);
            if let Err(e) = writeln!(out, "{line}") {
                write_error = Some(e);
                return;
            }
        }
    });
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            let _ = writeln!(err, "error: cannot replay {}: {error}", path.display());
            return EXIT_FAILURE;
        }
    };
    let _ = writeln!(err, "journal {}: {report}", path.display());
    let summary = json!({
        "journal": {
            "path": path.display().to_string(),
            "records": report.records,
            "first_seq": report.first_seq,
            "last_seq": report.last_seq,
            "valid_bytes": report.valid_bytes,
            "damage": report.damage.map(|d| d.to_string()),
            "report": report.to_string(),
        },
        "last_seq": engine.last_seq(),
        "digest": engine.digest(),
    });
    let written = match write_error {
        Some(e) => Err(e),
        None => writeln!(out, "{summary}").and_then(|()| out.flush()),
    };
    match written {
        Ok(()) => 0,
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            EXIT_FAILURE
        }
    }
}

// ----- keel run -----------------------------------------------------------------------------

/// How `keel run` makes acknowledged commands durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// `fdatasync` every batch before acknowledging it.
    Fsync,
    /// Write every batch to the operating system before acknowledging it (survives a process
    /// crash, not a power loss).
    Buffered,
}

/// Options of `keel run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The store directory (journal and snapshots).
    pub store: PathBuf,
    /// Durability of an acknowledgement.
    pub flush: Flush,
    /// Write a snapshot every this many commands.
    pub snapshot_every: Option<u64>,
    /// Report malformed lines and carry on instead of stopping.
    pub keep_going: bool,
}

/// How long `keel run` waits for a labelled order's acknowledgement before giving up on the label.
const LABEL_WAIT: Duration = Duration::from_secs(30);

/// One published outcome as `{"seq":..,"tag":..,"events":[..]}`.
fn outcome_line(outcome: &Published) -> String {
    #[derive(serde::Serialize)]
    struct OutcomeLine<'a> {
        seq: u64,
        tag: u64,
        events: &'a [Event],
    }
    let line = OutcomeLine { seq: outcome.seq, tag: outcome.tag, events: &outcome.events };
    serde_json::to_string(&line)
        .unwrap_or_else(|e| json!({ "seq": outcome.seq, "unserializable": e.to_string() }).to_string())
}

/// Prints outcomes as the sequencer publishes them (`pop` takes the next one), one flushed line
/// each, and hands each back to the reading thread (which binds order labels from them). Runs until
/// `done` is set and nothing is left to pop.
fn print_outcomes(
    mut pop: impl FnMut() -> Option<Published>,
    done: &AtomicBool,
    out: &mut impl Write,
    feedback: &mpsc::Sender<Published>,
) -> io::Result<()> {
    let mut last_seq: Option<u64> = None;
    loop {
        // Read the flag before polling: once it is set the sequencer has published everything.
        let finished = done.load(Ordering::Acquire);
        let Some(outcome) = pop() else {
            if finished {
                return Ok(());
            }
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        // A query repeats the previous seq; a state change advances it by one. A larger jump means
        // the ring overwrote outcomes this thread had not printed yet.
        if let Some(last) = last_seq
            && outcome.seq > last + 1
        {
            eprintln!(
                "warning: outcomes of seq {}..{} were overwritten before being printed",
                last + 1,
                outcome.seq
            );
        }
        last_seq = Some(outcome.seq);
        writeln!(out, "{}", outcome_line(&outcome))?;
        out.flush()?;
        // The reader may have finished; then nobody needs the outcome back.
        let _ = feedback.send(outcome);
    }
}

/// `keel run`: recovers the engine from the store (report on `err`), starts the sequencer, submits
/// every scenario line of `input`, prints each published outcome on `out` as it is published, and
/// at the end of input shuts down and prints the final digest. Returns the exit code.
pub fn run_store(
    options: &RunOptions,
    input: impl BufRead,
    out: impl Write + Send + 'static,
    err: &mut impl Write,
) -> i32 {
    let flush = match options.flush {
        Flush::Fsync => FlushPolicy::Fsync,
        Flush::Buffered => FlushPolicy::Buffered,
    };
    let (engine, journal, report) = match store::recover(&options.store, flush) {
        Ok(recovered) => recovered,
        Err(error) => {
            let _ = writeln!(err, "error: cannot recover {}: {error}", options.store.display());
            return EXIT_FAILURE;
        }
    };
    let _ = writeln!(err, "recovery: {report}");
    let _ = writeln!(err, "recovered state: last seq {}, digest {}", engine.last_seq(), engine.digest());
    let mut parser = Parser::for_engine(&engine);
    let config = SequencerConfig {
        queue_capacity: 4096,
        max_batch: 256,
        ring_capacity: 1 << 16,
        snapshot_every: options.snapshot_every,
        snapshots_kept: 3,
        store_dir: options.store.clone(),
    };
    let sequencer = Sequencer::start(engine, journal, config);
    let ring = sequencer.events();
    let done = Arc::new(AtomicBool::new(false));
    let (feedback_tx, feedback) = mpsc::channel();
    let printer = {
        let (ring, done) = (Arc::clone(&ring), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut out = out;
            let result = print_outcomes(|| ring.pop(), &done, &mut out, &feedback_tx);
            (out, result)
        })
    };

    let mut pending: HashMap<u64, Parsed> = HashMap::new();
    let mut bad = false;
    let mut failure = false;
    let mut warned_time = false;
    let read = for_each_line(input, |line, text| {
        // Learn from what has been published so far (labels, refused registrations).
        while let Ok(outcome) = feedback.try_recv() {
            if let Some(parsed) = pending.remove(&outcome.tag) {
                parser.observe(&parsed, &outcome.events);
            }
        }
        let parsed = match text.and_then(|text| parser.parse_line(line, text)) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(true),
            Err(error) => {
                bad = true;
                writeln!(err, "error: {error}")?;
                return Ok(options.keep_going);
            }
        };
        if parsed.when != When::Next && !warned_time {
            warned_time = true;
            writeln!(err, "note: keel run stamps the wall clock; at_ms and advance durations are ignored")?;
        }
        let tag = line as u64;
        let wait = parsed.label.is_some();
        if wait || parsed.registration != Registration::None {
            pending.insert(tag, parsed.clone());
        }
        if sequencer.submit(tag, parsed.command, Backpressure::Wait).is_err() {
            failure = true;
            writeln!(err, "error: the sequencer stopped; line {line} was not submitted")?;
            return Ok(false);
        }
        // A labelled order is waited for so that the next lines can name it.
        if wait {
            let deadline = Instant::now() + LABEL_WAIT;
            while pending.contains_key(&tag) {
                let left = deadline.saturating_duration_since(Instant::now());
                match feedback.recv_timeout(left) {
                    Ok(outcome) => {
                        if let Some(parsed) = pending.remove(&outcome.tag) {
                            parser.observe(&parsed, &outcome.events);
                        }
                    }
                    Err(_) => {
                        writeln!(
                            err,
                            "warning: line {line}: no acknowledgement yet; its label stays unbound"
                        )?;
                        pending.remove(&tag);
                    }
                }
            }
        }
        Ok(true)
    });
    let shutdown = sequencer.shutdown();
    done.store(true, Ordering::Release);
    let (mut out, printed) = match printer.join() {
        Ok(joined) => joined,
        Err(_) => {
            let _ = writeln!(err, "error: the output thread panicked");
            return EXIT_FAILURE;
        }
    };
    if let Err(error) = read {
        let _ = writeln!(err, "error: reading input: {error}");
        failure = true;
    }
    if let Err(error) = printed {
        let _ = writeln!(err, "error: writing output: {error}");
        failure = true;
    }
    match shutdown {
        Ok(engine) => {
            let _ = writeln!(err, "shutdown: last seq {}, digest {}", engine.last_seq(), engine.digest());
            let summary = json!({ "shutdown": { "last_seq": engine.last_seq(), "digest": engine.digest() } });
            if writeln!(out, "{summary}").and_then(|()| out.flush()).is_err() {
                failure = true;
            }
        }
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            failure = true;
        }
    }
    if failure {
        EXIT_FAILURE
    } else if bad {
        EXIT_BAD_INPUT
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(lines: &[&str]) -> (Parser, Vec<Result<Option<Parsed>, LineError>>) {
        let mut parser = Parser::new();
        let results = lines.iter().enumerate().map(|(i, l)| parser.parse_line(i + 1, l)).collect();
        (parser, results)
    }

    fn setup() -> Parser {
        let mut parser = Parser::new();
        for line in [
            r#"{"cmd":"create_market","preset":"BTC-PERP","id":1}"#,
            r#"{"cmd":"open_account","account":"alice"}"#,
            r#"{"cmd":"open_account","account":"bob"}"#,
        ] {
            parser.parse_line(1, line).unwrap().unwrap();
        }
        parser
    }

    fn command(parser: &mut Parser, line: &str) -> Command {
        parser.parse_line(9, line).unwrap().unwrap().command
    }

    fn error(parser: &mut Parser, line: &str) -> LineError {
        parser.parse_line(7, line).unwrap_err()
    }

    #[test]
    fn skips_blank_lines_and_comments() {
        let (_, results) = parse_all(&["", "   ", "# a comment", "// another", "\t# indented"]);
        assert!(results.iter().all(|r| matches!(r, Ok(None))));
    }

    #[test]
    fn names_get_the_next_free_id_and_numbers_are_ids() {
        let mut p = Parser::new();
        assert_eq!(
            command(&mut p, r#"{"cmd":"open_account","account":2}"#),
            Command::OpenAccount { account: AccountId(2) }
        );
        assert_eq!(
            command(&mut p, r#"{"cmd":"open_account","account":"alice"}"#),
            Command::OpenAccount { account: AccountId(1) }
        );
        assert_eq!(
            command(&mut p, r#"{"cmd":"open_account","account":"bob"}"#),
            Command::OpenAccount { account: AccountId(3) }
        );
        assert_eq!(
            command(&mut p, r#"{"cmd":"deposit","account":"bob","amount":"10.5"}"#),
            Command::Deposit { account: AccountId(3), asset: AssetId::SETTLEMENT, amount: 10_500_000 }
        );
    }

    #[test]
    fn converts_prices_and_quantities_exactly_from_strings_and_numbers() {
        let mut p = setup();
        let expected = Command::Place(PlaceOrder {
            account: AccountId(1),
            market: MarketId(1),
            side: Side::Buy,
            kind: OrderKind::Limit { price: Price(650_001) },
            qty: Qty(1_500),
            tif: TimeInForce::Gtc,
            stp: StpMode::CancelNewest,
            reduce_only: false,
        });
        for line in [
            r#"{"cmd":"place","account":"alice","market":"BTC-PERP","side":"buy","price":"65000.1","qty":"1.5"}"#,
            r#"{"cmd":"place","account":"alice","market":1,"side":"buy","price":65000.1,"qty":1.5}"#,
            r#"{"cmd":"place","account":1,"market":"BTC-PERP","side":"BUY","type":"limit","price":"65000.10","qty":"1.500"}"#,
        ] {
            assert_eq!(command(&mut p, line), expected, "{line}");
        }
    }

    #[test]
    fn a_market_samples_its_impact_prices_every_5_s_unless_told_otherwise() {
        let mut p = Parser::new();
        let sampling = |c: Command| match c {
            Command::CreateMarket(spec) => spec.impact_sample_ms,
            other => panic!("{other:?}"),
        };
        let preset = command(&mut p, r#"{"cmd":"create_market","preset":"BTC-PERP"}"#);
        assert_eq!(sampling(preset), 5_000);
        let every = command(&mut p, r#"{"cmd":"create_market","preset":"ETH-PERP","impact_sample_ms":0}"#);
        assert_eq!(sampling(every), 0);
        let e = error(
            &mut p,
            r#"{"cmd":"create_market","preset":"BTC-PERP","symbol":"X","impact_sample_ms":-1}"#,
        );
        assert!(e.to_string().starts_with("line 7, field \"impact_sample_ms\""), "{e}");
    }

    #[test]
    fn an_off_grid_price_names_the_line_the_field_and_the_tick() {
        let mut p = setup();
        let e = error(
            &mut p,
            r#"{"cmd":"place","account":"alice","market":"BTC-PERP","side":"buy","price":65000.05,"qty":"1"}"#,
        );
        assert_eq!(e.to_string(), "line 7, field \"price\": 65000.05 is not a multiple of the tick size 0.1");
        let e = error(
            &mut p,
            r#"{"cmd":"place","account":"alice","market":"BTC-PERP","side":"buy","price":"65000","qty":"0.0005"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("qty"));
        assert!(e.message.contains("lot size 0.001"), "{e}");
        let e = error(
            &mut p,
            r#"{"cmd":"place","account":"alice","market":"BTC-PERP","side":"buy","price":"-1","qty":"1"}"#,
        );
        assert_eq!(e.to_string(), "line 7, field \"price\": -1 must be positive");
        let e = error(
            &mut p,
            r#"{"cmd":"place","account":"alice","market":"BTC-PERP","side":"buy","price":"0","qty":"1"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("price"));
    }

    #[test]
    fn infers_and_checks_order_types() {
        let mut p = setup();
        let Command::Place(order) = command(
            &mut p,
            r#"{"cmd":"place","account":"bob","market":"BTC-PERP","side":"sell","trigger":"60000","qty":"1","trigger_by":"mark"}"#,
        ) else {
            panic!("not a place")
        };
        assert_eq!(
            order.kind,
            OrderKind::StopMarket { trigger: Price(600_000), reference: StopReference::Mark }
        );
        assert_eq!(order.tif, TimeInForce::Ioc);
        let Command::Place(order) =
            command(&mut p, r#"{"cmd":"place","account":"bob","market":"BTC-PERP","side":"sell","qty":"1"}"#)
        else {
            panic!("not a place")
        };
        assert_eq!(order.kind, OrderKind::Market);
        let e = error(
            &mut p,
            r#"{"cmd":"place","account":"bob","market":"BTC-PERP","side":"sell","type":"market","price":"1","qty":"1"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("price"));
        let e = error(
            &mut p,
            r#"{"cmd":"place","account":"bob","market":"BTC-PERP","side":"sell","type":"stop_limit","price":"1","qty":"1"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("trigger"));
        let e = error(
            &mut p,
            r#"{"cmd":"place","account":"bob","market":"BTC-PERP","side":"up","price":"1","qty":"1"}"#,
        );
        assert_eq!(e.field.as_deref(), Some("side"));
    }

    #[test]
    fn unknown_fields_commands_and_names_are_errors() {
        let mut p = setup();
        let e = error(&mut p, r#"{"cmd":"deposit","account":"alice","amont":"1"}"#);
        assert_eq!(e.field.as_deref(), Some("amont"));
        let e = error(&mut p, r#"{"cmd":"deposti","account":"alice","amount":"1"}"#);
        assert_eq!(e.field.as_deref(), Some("cmd"));
        let e = error(&mut p, r#"{"cmd":"deposit","account":"carol","amount":"1"}"#);
        assert!(e.message.contains("unknown account \"carol\""), "{e}");
        let e = error(&mut p, r#"{"cmd":"index","market":"SOL-PERP","price":"1"}"#);
        assert_eq!(e.field.as_deref(), Some("market"));
        let e = error(&mut p, r#"{"account":"alice"}"#);
        assert_eq!(e.field.as_deref(), Some("cmd"));
        let e = error(&mut p, "[1,2]");
        assert_eq!(e.field, None);
        let e = error(&mut p, "{not json");
        assert!(e.message.starts_with("not valid JSON"), "{e}");
    }

    #[test]
    fn amounts_respect_the_asset_precision_and_rates_accept_percentages() {
        let mut p = setup();
        assert_eq!(
            command(
                &mut p,
                r#"{"cmd":"add_asset","symbol":"BTC","decimals":8,"price":"65000","haircut":"5%"}"#
            ),
            Command::AddAsset(AssetConfig {
                symbol: "BTC".into(),
                decimals: 8,
                price: Money(65_000_000_000),
                haircut: Rate(5_000_000),
            })
        );
        assert_eq!(
            command(&mut p, r#"{"cmd":"deposit","account":"alice","asset":"BTC","amount":"0.5"}"#),
            Command::Deposit { account: AccountId(1), asset: AssetId(1), amount: 50_000_000 }
        );
        let e = error(&mut p, r#"{"cmd":"deposit","account":"alice","asset":"BTC","amount":"0.000000001"}"#);
        assert!(e.message.contains("more than 8 decimal places"), "{e}");
        let e = error(&mut p, r#"{"cmd":"deposit","account":"alice","amount":0}"#);
        assert_eq!(e.to_string(), "line 7, field \"amount\": 0 must be positive");
        let Command::CreateMarket(spec) = command(
            &mut p,
            r#"{"cmd":"create_market","preset":"ETH-PERP","maker_fee":"-0.01%","taker_fee":0.0004}"#,
        ) else {
            panic!("not a market")
        };
        assert_eq!(
            (spec.margin.id, spec.margin.maker_fee, spec.margin.taker_fee),
            (MarketId(2), Rate(-10_000), Rate(40_000))
        );
        let e = error(&mut p, r#"{"cmd":"create_market","preset":"BTC-PERP","symbol":"ETH-PERP"}"#);
        assert_eq!(e.field.as_deref(), Some("symbol"));
    }

    #[test]
    fn custom_markets_are_fully_specified() {
        let mut p = Parser::new();
        let Command::CreateMarket(spec) = command(
            &mut p,
            r#"{"cmd":"create_market","symbol":"SOL-PERP","tick":"0.01","lot":"0.1","max_price":"100000","max_position":"1000000","tiers":[{"floor":0,"mmr":"1%","max_leverage":50},{"floor":"100000","mmr":"2.5%","max_leverage":20}],"max_notional":"5000000"}"#,
        ) else {
            panic!("not a market")
        };
        assert_eq!(spec.symbol, "SOL-PERP");
        assert_eq!(spec.margin.grid.money_per_tick_lot(), 1_000);
        assert_eq!(spec.margin.tiers.tiers().len(), 2);
        let e = error(
            &mut p,
            r#"{"cmd":"create_market","symbol":"X","tick":"0.01","lot":"0.1","max_price":"1","max_position":"1","tiers":[{"floor":0,"mmr":"1%","leverage":5}]}"#,
        );
        assert_eq!(e.field.as_deref(), Some("tiers[0].leverage"));
    }

    #[test]
    fn refused_registrations_are_forgotten_and_labels_bind_to_accepted_orders() {
        let mut p = setup();
        let market =
            p.parse_line(1, r#"{"cmd":"create_market","preset":"ETH-PERP","id":2}"#).unwrap().unwrap();
        let refusal =
            [Event::Rejected { code: keel_engine::ErrorCode::DuplicateMarket, message: String::new() }];
        p.observe(&market, &refusal);
        assert!(p.parse_line(2, r#"{"cmd":"depth","market":"ETH-PERP"}"#).is_err());
        let place = p
            .parse_line(3, r#"{"cmd":"place","account":"alice","market":1,"side":"buy","price":"1","qty":"1","label":"b1"}"#)
            .unwrap()
            .unwrap();
        let accepted = Event::Book {
            market: MarketId(1),
            event: BookEvent::Accepted { id: OrderId(42), account: AccountId(1) },
        };
        p.observe(&place, &[accepted]);
        assert_eq!(
            command(&mut p, r#"{"cmd":"cancel","account":"alice","market":"BTC-PERP","order":"b1"}"#),
            Command::Cancel { account: AccountId(1), market: MarketId(1), id: OrderId(42) }
        );
        assert!(p.parse_line(4, r#"{"cmd":"cancel","account":"alice","market":1,"order":"b2"}"#).is_err());
    }

    #[test]
    fn the_scenario_clock_steps_honours_at_ms_and_never_goes_back() {
        let mut r = Runner::new();
        assert_eq!(r.execute(1, r#"{"cmd":"open_account","account":"a"}"#), Ok(Some((1, 0))));
        assert_eq!(r.execute(2, r#"{"cmd":"deposit","account":"a","amount":1}"#), Ok(Some((2, 1_000))));
        assert_eq!(r.execute(3, r#"{"cmd":"account","account":"a"}"#), Ok(Some((2, 1_000))));
        assert_eq!(r.execute(4, r#"{"cmd":"tick","at_ms":5000}"#), Ok(Some((3, 5_000))));
        assert_eq!(r.execute(5, r#"{"cmd":"advance","hours":1}"#), Ok(Some((4, 3_605_000))));
        let e = r.execute(6, r#"{"cmd":"tick","at_ms":10}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("at_ms"));
        assert!(r.execute(7, r#"{"cmd":"advance","ms":0}"#).is_err());
        assert!(r.execute(8, r#"{"cmd":"advance","ms":1,"hours":1}"#).is_err());
    }

    #[test]
    fn a_scenario_run_stops_at_the_first_bad_line_unless_told_to_keep_going() {
        let input =
            "{\"cmd\":\"open_account\",\"account\":\"a\"}\n{\"cmd\":\"bogus\"}\n{\"cmd\":\"digest\"}\n";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_scenario(input.as_bytes(), false, &mut out, &mut err), EXIT_BAD_INPUT);
        assert_eq!(String::from_utf8_lossy(&out).lines().count(), 1);
        assert!(String::from_utf8_lossy(&err).contains("line 2, field \"cmd\""));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run_scenario(input.as_bytes(), true, &mut out, &mut err), EXIT_BAD_INPUT);
        assert_eq!(String::from_utf8_lossy(&out).lines().count(), 2);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const SEEDS: [&str; 6] = [
            r#"{"cmd":"place","account":"alice","market":"BTC-PERP","side":"buy","price":"65000.1","qty":"1.5","tif":"ioc"}"#,
            r#"{"cmd":"create_market","symbol":"X","tick":"0.01","lot":"0.1","max_price":"1000","max_position":"10","tiers":[{"floor":0,"mmr":"1%","max_leverage":5}]}"#,
            r#"{"cmd":"deposit","account":"bob","asset":"USD","amount":1e3}"#,
            r#"{"cmd":"advance","hours":8}"#,
            r#"{"cmd":"amend","account":1,"market":1,"order":3,"price":65000,"qty":"0.5"}"#,
            r#"{"cmd":"add_asset","symbol":"ETH","decimals":18,"price":"3000","haircut":"10%"}"#,
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
                let mut runner = Runner::new();
                let _ = runner.execute(1, &text);
            }

            #[test]
            fn mutated_commands_never_panic(seed in 0usize..SEEDS.len(), at in 0usize..400, byte in any::<u8>()) {
                let mut bytes = SEEDS[seed].as_bytes().to_vec();
                let at = at % bytes.len();
                bytes[at] = byte;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut runner = Runner::new();
                for line in [r#"{"cmd":"create_market","preset":"BTC-PERP","id":1}"#,
                             r#"{"cmd":"open_account","account":"alice"}"#,
                             r#"{"cmd":"open_account","account":"bob"}"#] {
                    prop_assert!(runner.execute(1, line).is_ok());
                }
                let _ = runner.execute(2, &text);
            }

            #[test]
            fn extreme_numbers_never_panic(value in prop_oneof![
                Just("1e400".to_string()), Just("-0".to_string()), Just("1e-400".to_string()),
                Just("18446744073709551616".to_string()), Just("\"79228162514264337593543950336\"".to_string()),
                Just("\"-79228162514264337593543950335\"".to_string()), Just("\"0.0000000000000000000000000001\"".to_string()),
                any::<f64>().prop_map(|f| f.to_string()), any::<i64>().prop_map(|i| i.to_string()),
                any::<u64>().prop_map(|u| u.to_string()),
            ], field in prop::sample::select(vec!["price", "qty", "amount", "at_ms", "leverage", "hours", "decimals", "haircut"])) {
                let mut runner = Runner::new();
                for line in [r#"{"cmd":"create_market","preset":"BTC-PERP","id":1}"#,
                             r#"{"cmd":"open_account","account":"alice"}"#] {
                    prop_assert!(runner.execute(1, line).is_ok());
                }
                for template in [
                    r#"{"cmd":"place","account":"alice","market":1,"side":"buy","price":"1","qty":"1","FIELD":VALUE}"#,
                    r#"{"cmd":"deposit","account":"alice","FIELD":VALUE}"#,
                    r#"{"cmd":"advance","FIELD":VALUE}"#,
                    r#"{"cmd":"add_asset","symbol":"Z","price":"1","FIELD":VALUE}"#,
                    r#"{"cmd":"set_leverage","account":"alice","market":1,"FIELD":VALUE}"#,
                ] {
                    let line = template.replace("FIELD", field).replace("VALUE", &value);
                    let _ = runner.execute(2, &line);
                }
            }
        }
    }
}
