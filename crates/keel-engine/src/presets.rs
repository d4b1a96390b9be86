//! Realistic market listings, used by the default configuration, the examples and the tests.
//!
//! Tick and lot sizes and the risk tiers follow Binance USDⓈ-M's published BTCUSDT and ETHUSDT
//! brackets (notional floor, maintenance rate, maximum leverage); fees are its base-tier 0.02%
//! maker / 0.05% taker. Live parameters change over time; these are fixed so results are stable.

use crate::command::MarketSpec;
use keel_book::BookConfig;
use keel_margin::{MarketConfig, Rate, RiskTierSpec, RiskTiers};
use keel_types::{Grid, MarketId, Money, Price, Qty};
use rust_decimal::Decimal;

/// How often the presets sample their impact prices: Binance computes its premium index every
/// 5 seconds.
pub const IMPACT_SAMPLE_MS: u64 = 5_000;

/// How many basis samples the presets' mark averages: one per impact sample, 30 minutes of
/// them (Binance averages its basis over 30 minutes).
pub const BASIS_WINDOW: usize = (30 * 60_000 / IMPACT_SAMPLE_MS) as usize;

/// (notional floor in whole USD, maintenance rate in 10^-8, max leverage).
type Bracket = (i64, i64, u32);

/// Binance BTCUSDT brackets.
const BTC_BRACKETS: [Bracket; 10] = [
    (0, 400_000, 125),
    (50_000, 500_000, 100),
    (600_000, 650_000, 75),
    (3_000_000, 1_000_000, 50),
    (12_000_000, 2_000_000, 25),
    (70_000_000, 2_500_000, 20),
    (100_000_000, 5_000_000, 10),
    (230_000_000, 10_000_000, 5),
    (480_000_000, 12_500_000, 4),
    (600_000_000, 15_000_000, 3),
];

/// Binance ETHUSDT brackets.
const ETH_BRACKETS: [Bracket; 9] = [
    (0, 500_000, 100),
    (50_000, 650_000, 75),
    (600_000, 1_000_000, 50),
    (3_000_000, 2_000_000, 25),
    (12_000_000, 2_500_000, 20),
    (50_000_000, 5_000_000, 10),
    (65_000_000, 10_000_000, 5),
    (150_000_000, 12_500_000, 4),
    (320_000_000, 15_000_000, 3),
];

fn tiers(brackets: &[Bracket], max_notional_usd: i64) -> RiskTiers {
    let specs: Vec<RiskTierSpec> = brackets
        .iter()
        .map(|&(floor, rate, max_leverage)| RiskTierSpec {
            floor: Money(floor * Money::SCALE),
            maintenance_rate: Rate(rate),
            max_leverage,
        })
        .collect();
    RiskTiers::new(&specs, Money(max_notional_usd * Money::SCALE)).expect("preset tiers are valid")
}

fn spec(
    id: u32,
    symbol: &str,
    tick: Decimal,
    lot: Decimal,
    brackets: &[Bracket],
    max_price: i64,
    max_position: i64,
) -> MarketSpec {
    let grid = Grid::new(tick, lot).expect("preset grid is valid");
    let mut margin = MarketConfig::new(
        MarketId(id),
        grid,
        tiers(brackets, 800_000_000),
        Price(max_price),
        Qty(max_position),
    );
    margin.maker_fee = Rate(20_000);
    margin.taker_fee = Rate(50_000);
    margin.mark.basis_window = BASIS_WINDOW;
    // Binance's impact margin notional: 200 USDT of margin at the first tier's maximum leverage.
    let impact_notional = Money(200 * Money::SCALE * i64::from(brackets[0].2));
    MarketSpec {
        symbol: symbol.to_string(),
        margin,
        book: BookConfig {
            max_price: Price(max_price),
            max_qty: Qty(max_position),
            market_protection_bps: 500,
            order_capacity: 1 << 16,
            level_capacity: 1 << 12,
            account_capacity: 1 << 12,
        },
        impact_notional,
        impact_sample_ms: IMPACT_SAMPLE_MS,
    }
}

/// BTC-PERP: tick 0.1 USD, lot 0.001 BTC, prices up to 10,000,000 USD, positions up to 10,000 BTC.
pub fn btc_perp(id: u32) -> MarketSpec {
    spec(id, "BTC-PERP", Decimal::new(1, 1), Decimal::new(1, 3), &BTC_BRACKETS, 100_000_000, 10_000_000)
}

/// ETH-PERP: tick 0.01 USD, lot 0.001 ETH, prices up to 1,000,000 USD, positions up to 100,000 ETH.
pub fn eth_perp(id: u32) -> MarketSpec {
    spec(id, "ETH-PERP", Decimal::new(1, 2), Decimal::new(1, 3), &ETH_BRACKETS, 100_000_000, 100_000_000)
}
