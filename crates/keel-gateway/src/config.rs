//! The exchange's configuration: where it listens, where it journals, which markets it lists,
//! which accounts may log on with which keys, and the per-session limits.
//!
//! `keel serve` runs on [`ServeConfig::demo`] unless given a TOML file; every field of the file
//! is optional and falls back to the demo value, so a file can override just the port.

use keel_engine::journal::FlushPolicy;
use keel_engine::{Command, MarketSpec, presets};
use keel_margin::AssetId;
use keel_types::{AccountId, MarketId, Money, Price};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a field of the wrong type.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// When the journal is flushed to disk (see `keel_engine::journal::FlushPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flush {
    /// `fdatasync` every committed batch: acknowledged orders survive power loss.
    Fsync,
    /// Written to the operating system every batch: acknowledged orders survive a process crash.
    Buffered,
}

impl From<Flush> for FlushPolicy {
    fn from(flush: Flush) -> FlushPolicy {
        match flush {
            Flush::Fsync => FlushPolicy::Fsync,
            Flush::Buffered => FlushPolicy::Buffered,
        }
    }
}

/// A listed market: a preset by name, under an id.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketEntry {
    /// `BTC-PERP` or `ETH-PERP`.
    pub preset: String,
    /// The market id clients use.
    pub id: u32,
    /// Index price (ticks) sent once at setup so the market has a mark from the start.
    #[serde(default)]
    pub index_price: Option<i64>,
    /// Funding interval in milliseconds, replacing the preset's (8 hours) when given.
    #[serde(default)]
    pub funding_interval_ms: Option<u64>,
    /// Impact-price sampling window in milliseconds, replacing the preset's (5 seconds) when
    /// given; 0 samples on every index update.
    #[serde(default)]
    pub impact_sample_ms: Option<u64>,
}

impl MarketEntry {
    /// The listing: the preset under this id, with the configured overrides.
    pub fn spec(&self) -> Option<MarketSpec> {
        let mut spec = preset(&self.preset, self.id)?;
        if let Some(interval) = self.funding_interval_ms {
            spec.margin.funding.interval_ms = interval;
        }
        if let Some(every) = self.impact_sample_ms {
            spec.impact_sample_ms = every;
        }
        Some(spec)
    }
}

/// An account that may log on.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    /// The account id.
    pub id: u32,
    /// The logon key (at most 32 bytes of UTF-8).
    pub key: String,
    /// Settlement-asset deposit at setup, in whole USD.
    #[serde(default)]
    pub deposit: i64,
}

/// A price feeder that may log on: its sessions send index prices instead of orders.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeederEntry {
    /// The id it logs on with (in the logon's account field; must not be an account's id).
    pub id: u32,
    /// The logon key (at most 32 bytes of UTF-8).
    pub key: String,
}

/// Per-session limits.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Sustained order-entry messages per second per session (token-bucket refill rate).
    pub orders_per_second: u32,
    /// Messages a session may send in a burst above the sustained rate.
    pub burst: u32,
    /// Outbound bytes buffered for a session before it is disconnected as a slow consumer.
    pub outbound_bytes: usize,
    /// Interval of server heartbeats, and of client heartbeats the server expects (ms).
    pub heartbeat_ms: u32,
    /// A session that sends nothing for this long is disconnected (ms).
    pub idle_timeout_ms: u32,
    /// Most concurrent sessions.
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            orders_per_second: 200_000,
            burst: 20_000,
            outbound_bytes: 4 << 20,
            heartbeat_ms: 1_000,
            idle_timeout_ms: 10_000,
            max_sessions: 256,
        }
    }
}

/// Everything `keel serve` needs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// Journal and snapshot directory.
    pub data_dir: PathBuf,
    /// Journal flush policy.
    pub flush: Flush,
    /// Write a snapshot every this many commands (none when absent).
    pub snapshot_every: Option<u64>,
    /// Insurance-fund seed per market, in whole USD.
    pub insurance_fund: i64,
    /// Listed markets.
    pub markets: Vec<MarketEntry>,
    /// Accounts allowed to log on.
    pub accounts: Vec<AccountEntry>,
    /// Index-price feeders allowed to log on.
    pub feeders: Vec<FeederEntry>,
    /// Per-session limits.
    pub limits: Limits,
    /// Width of a liquidation-heatmap bucket, in ticks.
    pub heatmap_bucket_ticks: i64,
    /// How long the engine thread keeps polling its sockets and queue after the last command
    /// before it sleeps in `poll(2)`, in microseconds (default 50). Polling saves a steady flow
    /// the thread's wake-up (p50 at 100 k orders/s: 8.5 µs against 18.5 µs sleeping at once); an
    /// idle exchange sleeps either way.
    pub engine_spin_us: u32,
    /// Lets engine time pass every this many milliseconds (a journalled `Tick`, which settles
    /// funding when an interval has elapsed); 0 never does (funding then settles only when the
    /// operator asks).
    pub tick_ms: u64,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig::demo()
    }
}

/// The demo configuration's index-price feeder id.
pub const DEMO_FEEDER: u32 = 1_000;

/// Port `keel serve` listens on by default.
pub const DEFAULT_PORT: u16 = 7700;

impl ServeConfig {
    /// The embedded demo: BTC-PERP (id 1) and ETH-PERP (id 2), four accounts with fixed keys and
    /// one million USD each, an index-price feeder (id [`DEMO_FEEDER`]), listening on
    /// 127.0.0.1:7700, journaling to `./keel-data`.
    pub fn demo() -> ServeConfig {
        ServeConfig {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
            data_dir: PathBuf::from("keel-data"),
            flush: Flush::Buffered,
            snapshot_every: Some(1_000_000),
            insurance_fund: 1_000_000,
            markets: vec![
                MarketEntry {
                    preset: "BTC-PERP".into(),
                    id: 1,
                    index_price: Some(650_000),
                    funding_interval_ms: None,
                    impact_sample_ms: None,
                },
                MarketEntry {
                    preset: "ETH-PERP".into(),
                    id: 2,
                    index_price: Some(350_000),
                    funding_interval_ms: None,
                    impact_sample_ms: None,
                },
            ],
            accounts: (1..=4)
                .map(|id| AccountEntry { id, key: format!("keel-demo-key-{id}"), deposit: 1_000_000 })
                .collect(),
            feeders: vec![FeederEntry { id: DEMO_FEEDER, key: "keel-demo-feeder".into() }],
            limits: Limits::default(),
            heatmap_bucket_ticks: 1_000,
            engine_spin_us: 50,
            tick_ms: 1_000,
        }
    }

    /// Parses a TOML configuration (missing fields take the demo's values).
    pub fn from_toml(text: &str) -> Result<ServeConfig, ConfigError> {
        let config: ServeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML configuration file.
    pub fn load(path: &Path) -> Result<ServeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        ServeConfig::from_toml(&text)
    }

    /// Checks what the types cannot: known presets, unique ids, short keys, sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (i, market) in self.markets.iter().enumerate() {
            if preset(&market.preset, market.id).is_none() {
                return invalid(format!("unknown market preset {:?}", market.preset));
            }
            if market.funding_interval_ms == Some(0) {
                return invalid(format!("market {}: funding_interval_ms must be positive", market.id));
            }
            if self.markets[..i].iter().any(|m| m.id == market.id) {
                return invalid(format!("market id {} is listed twice", market.id));
            }
        }
        for (i, account) in self.accounts.iter().enumerate() {
            if account.key.is_empty() || account.key.len() > crate::codec::KEY_LEN {
                return invalid(format!("account {}: key must be 1 to 32 bytes", account.id));
            }
            if account.deposit < 0 || account.deposit.checked_mul(Money::SCALE).is_none() {
                return invalid(format!("account {}: deposit out of range", account.id));
            }
            if self.accounts[..i].iter().any(|a| a.id == account.id) {
                return invalid(format!("account id {} is listed twice", account.id));
            }
        }
        for (i, feeder) in self.feeders.iter().enumerate() {
            if feeder.key.is_empty() || feeder.key.len() > crate::codec::KEY_LEN {
                return invalid(format!("feeder {}: key must be 1 to 32 bytes", feeder.id));
            }
            if self.accounts.iter().any(|a| a.id == feeder.id)
                || self.feeders[..i].iter().any(|f| f.id == feeder.id)
            {
                return invalid(format!("feeder id {} is listed twice or is an account's id", feeder.id));
            }
        }
        if self.insurance_fund < 0 || self.insurance_fund.checked_mul(Money::SCALE).is_none() {
            return invalid("insurance fund out of range".into());
        }
        let l = &self.limits;
        if l.orders_per_second == 0 || l.burst == 0 || l.heartbeat_ms == 0 || l.idle_timeout_ms == 0 {
            return invalid("rate, burst, heartbeat and idle timeout must be positive".into());
        }
        if self.heatmap_bucket_ticks <= 0 {
            return invalid("heatmap_bucket_ticks must be positive".into());
        }
        if l.outbound_bytes < 64 * 1024 || l.max_sessions == 0 {
            return invalid("outbound_bytes must be at least 65536 and max_sessions positive".into());
        }
        Ok(())
    }

    /// The commands that set a fresh store up: markets, insurance fund, accounts, deposits and
    /// index prices. Applied only when the store is empty, so a restart keeps the journalled state.
    pub fn setup_commands(&self) -> Vec<Command> {
        let mut commands = Vec::new();
        for market in &self.markets {
            if let Some(spec) = market.spec() {
                commands.push(Command::CreateMarket(Box::new(spec)));
            }
            if self.insurance_fund > 0 {
                commands.push(Command::FundDeposit {
                    market: MarketId(market.id),
                    amount: Money(self.insurance_fund * Money::SCALE),
                });
            }
        }
        for account in &self.accounts {
            commands.push(Command::OpenAccount { account: AccountId(account.id) });
            if account.deposit > 0 {
                commands.push(Command::Deposit {
                    account: AccountId(account.id),
                    asset: AssetId::SETTLEMENT,
                    amount: account.deposit * Money::SCALE,
                });
            }
        }
        for market in &self.markets {
            if let Some(price) = market.index_price {
                commands.push(Command::IndexPrice { market: MarketId(market.id), price: Price(price) });
            }
        }
        commands
    }
}

/// A market preset by name.
pub fn preset(name: &str, id: u32) -> Option<MarketSpec> {
    match name {
        "BTC-PERP" => Some(presets::btc_perp(id)),
        "ETH-PERP" => Some(presets::eth_perp(id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_configuration_is_valid_and_sets_up_markets_accounts_and_prices() {
        let demo = ServeConfig::demo();
        demo.validate().expect("demo is valid");
        let setup = demo.setup_commands();
        assert_eq!(setup.iter().filter(|c| matches!(c, Command::CreateMarket(_))).count(), 2);
        assert_eq!(setup.iter().filter(|c| matches!(c, Command::OpenAccount { .. })).count(), 4);
        assert!(matches!(setup.last(), Some(Command::IndexPrice { .. })));
    }

    #[test]
    fn toml_overrides_only_what_it_names() {
        let config = ServeConfig::from_toml(
            "port = 9000\nflush = \"fsync\"\n[limits]\norders_per_second = 5\n\
             [[accounts]]\nid = 7\nkey = \"secret\"\ndeposit = 10\n",
        )
        .expect("valid");
        assert_eq!(config.port, 9000);
        assert_eq!(config.flush, Flush::Fsync);
        assert_eq!(config.limits.orders_per_second, 5);
        assert_eq!(config.limits.burst, Limits::default().burst);
        assert_eq!(config.accounts, vec![AccountEntry { id: 7, key: "secret".into(), deposit: 10 }]);
        assert_eq!(config.markets, ServeConfig::demo().markets);
    }

    #[test]
    fn a_market_entry_overrides_the_presets_funding_and_impact_sampling() {
        let config = ServeConfig::from_toml(
            "[[markets]]\npreset = \"BTC-PERP\"\nid = 5\nfunding_interval_ms = 3600000\nimpact_sample_ms = 0\n",
        )
        .expect("valid");
        let spec = config.markets[0].spec().expect("known preset");
        assert_eq!(spec.margin.id, MarketId(5));
        assert_eq!(spec.margin.funding.interval_ms, 3_600_000);
        assert_eq!(spec.impact_sample_ms, 0);
        let preset = ServeConfig::demo().markets[0].spec().expect("known preset");
        assert_eq!(preset.impact_sample_ms, presets::IMPACT_SAMPLE_MS);
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        for (text, needle) in [
            ("[[markets]]\npreset = \"DOGE-PERP\"\nid = 3\n", "unknown market preset"),
            ("[[accounts]]\nid = 1\nkey = \"\"\n", "key must be"),
            ("[[accounts]]\nid = 1\nkey = \"a\"\n[[accounts]]\nid = 1\nkey = \"b\"\n", "listed twice"),
            ("port = \"x\"\n", "invalid configuration"),
            ("colour = 1\n", "unknown field"),
        ] {
            let error = ServeConfig::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
