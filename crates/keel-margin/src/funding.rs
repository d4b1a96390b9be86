//! Funding: the premium index, the funding rate and the zero-sum settlement between longs and shorts.

use crate::MarginError;
use crate::rate::{Rate, div_round_wide, narrow};
use keel_types::{AccountId, ArithmeticError, MarketId, Money, Price, Rounding};

/// How premium-index samples are averaged over the interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum PremiumAveraging {
    /// Plain mean of the samples (BitMEX, Bybit, Hyperliquid).
    #[default]
    Simple,
    /// Binance: sample `i` (1-based) weighs `i`, so later samples count more.
    TimeWeighted,
}

/// Which price values a position for its funding payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum FundingNotional {
    /// Position notional at the mark price (Binance, Bybit, BitMEX, OKX).
    #[default]
    Mark,
    /// Position notional at the index (oracle) price (Hyperliquid, dYdX).
    Index,
}

/// Funding configuration of a market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FundingConfig {
    /// Time between settlements.
    pub interval_ms: u64,
    /// Interest term `I` per rate period (0.01% per 8 hours on most venues).
    pub interest_rate: Rate,
    /// Band on `I − P` (0.05% on Binance, Bybit, BitMEX, Hyperliquid).
    pub interest_clamp: Rate,
    /// Cap on the magnitude of the rate actually paid per interval.
    pub cap: Rate,
    /// The rate `P + clamp(I − P)` is for this many intervals; each interval pays its share
    /// (Hyperliquid: an 8-hour rate paid hourly, divisor 8; elsewhere 1).
    pub rate_divisor: i64,
    /// How samples are averaged.
    pub averaging: PremiumAveraging,
    /// Which price values the payment.
    pub notional: FundingNotional,
}

impl Default for FundingConfig {
    /// Binance USDⓈ-M defaults: 8 hours, I = 0.01%, clamp 0.05%, cap 0.75%, time-weighted, at mark.
    fn default() -> FundingConfig {
        FundingConfig {
            interval_ms: 8 * 3_600_000,
            interest_rate: Rate(10_000),
            interest_clamp: Rate(50_000),
            cap: Rate(750_000),
            rate_divisor: 1,
            averaging: PremiumAveraging::TimeWeighted,
            notional: FundingNotional::Mark,
        }
    }
}

/// Premium index of one sample: `(max(0, impact bid − index) − max(0, index − impact ask)) / index`,
/// truncated towards zero at 10^-8 so that positive and negative premiums are treated alike.
pub fn premium_index(index: Price, impact_bid: Price, impact_ask: Price) -> Result<Rate, ArithmeticError> {
    if index.0 <= 0 {
        return Err(ArithmeticError::DivisionByZero);
    }
    let over = (impact_bid.0 - index.0).max(0);
    let under = (index.0 - impact_ask.0).max(0);
    let num = i128::from(over - under) * i128::from(Rate::SCALE);
    narrow(num / i128::from(index.0)).map(Rate)
}

/// Funding rate for one interval: `clamp_cap((P + clamp(I − P, ±band)) / divisor)`, the formula of
/// Binance, Bybit, BitMEX and Hyperliquid; division truncates towards zero.
pub fn funding_rate(average_premium: Rate, config: &FundingConfig) -> Result<Rate, ArithmeticError> {
    let interest_term = config.interest_rate.checked_sub(average_premium)?.clamp_abs(config.interest_clamp);
    let period_rate = average_premium.checked_add(interest_term)?;
    if config.rate_divisor <= 0 {
        return Err(ArithmeticError::DivisionByZero);
    }
    Ok(Rate(period_rate.0 / config.rate_divisor).clamp_abs(config.cap))
}

/// dYdX v4's funding-rate cap: `clamp factor × (initial margin fraction − maintenance fraction)`.
pub fn dydx_funding_cap(
    clamp_factor: Rate,
    initial: Rate,
    maintenance: Rate,
) -> Result<Rate, ArithmeticError> {
    clamp_factor.times(initial.checked_sub(maintenance)?, Rounding::Floor)
}

/// Running sums of the premium samples of the current interval; no storage per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct PremiumSamples {
    count: i64,
    sum: i128,
    weighted_sum: i128,
}

impl PremiumSamples {
    /// Records one sample.
    pub(crate) fn push(&mut self, premium: Rate) {
        // Saturating: unreachable with prices inside any configured range, but never a panic.
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(i128::from(premium.0));
        self.weighted_sum =
            self.weighted_sum.saturating_add(i128::from(premium.0).saturating_mul(i128::from(self.count)));
    }

    /// The interval's average premium (zero without samples), truncated towards zero.
    pub(crate) fn average(&self, averaging: PremiumAveraging) -> Result<Rate, ArithmeticError> {
        if self.count == 0 {
            return Ok(Rate::ZERO);
        }
        let n = i128::from(self.count);
        let avg = match averaging {
            PremiumAveraging::Simple => self.sum / n,
            PremiumAveraging::TimeWeighted => self.weighted_sum / (n * (n + 1) / 2),
        };
        narrow(avg).map(Rate)
    }
}

/// Funding payments of one settlement: who paid, who received, at which rate and price.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FundingSettlement {
    /// The market.
    pub market: MarketId,
    /// The rate applied (positive: longs pay shorts).
    pub rate: Rate,
    /// The price positions were valued at.
    pub price: Price,
    /// Per account, the amount credited (positive) or debited (negative); sums to exactly zero.
    pub payments: Vec<(AccountId, Money)>,
}

/// Splits funding between the holders of a market so that the payments sum to exactly zero.
///
/// Rule: each payer owes `|size| × price × |rate|` rounded up to the money unit; the collected
/// total is shared among receivers pro rata to `|size|`, each share rounded down, and the few units
/// left over go one each to the receivers with the largest remainders, ties to the lowest account
/// id. Receivers thus get at least their exact due, payers pay at most one unit more.
/// `holders` are `(account, signed size in lots)`; `money_per_tick_lot` is the market grid's.
pub fn distribute_funding(
    market: MarketId,
    holders: &[(AccountId, i64)],
    price: Price,
    money_per_tick_lot: i64,
    rate: Rate,
) -> Result<Vec<(AccountId, Money)>, MarginError> {
    let mut payments = Vec::with_capacity(holders.len());
    if rate.0 == 0 {
        return Ok(payments);
    }
    let abs_rate = Rate(rate.0.checked_abs().ok_or(ArithmeticError::Overflow)?);
    // Positive rate: longs (positive size) pay.
    let payer_sign = rate.0.signum();
    let mut collected: i128 = 0;
    let mut receiver_weight: i128 = 0;
    for &(account, size) in holders {
        if size == 0 {
            continue;
        }
        if size.signum() == payer_sign {
            let notional =
                i128::from(size.unsigned_abs()) * i128::from(price.0) * i128::from(money_per_tick_lot);
            let owed = abs_rate.of(Money(narrow(notional)?), Rounding::Ceil)?;
            collected += i128::from(owed.0);
            payments.push((account, Money(owed.0.checked_neg().ok_or(ArithmeticError::Overflow)?)));
        } else {
            receiver_weight += i128::from(size.unsigned_abs());
        }
    }
    if collected > 0 && receiver_weight == 0 {
        return Err(MarginError::FundingWithoutCounterparty(market));
    }
    // Shares, remainders for the largest-remainder step.
    let mut shares: Vec<(AccountId, i128, i128)> = Vec::with_capacity(holders.len());
    let mut distributed: i128 = 0;
    for &(account, size) in holders {
        if size == 0 || size.signum() == payer_sign {
            continue;
        }
        let num = collected * i128::from(size.unsigned_abs());
        let share = div_round_wide(num, receiver_weight, Rounding::Floor)?;
        distributed += share;
        shares.push((account, share, num - share * receiver_weight));
    }
    let leftover = collected - distributed;
    shares.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    for (i, (account, share, _)) in shares.into_iter().enumerate() {
        let bonus = i128::from((i as i128) < leftover);
        payments.push((account, Money(narrow(share + bonus)?)));
    }
    payments.sort_by_key(|p| p.0);
    Ok(payments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    /// BitMEX funding (reference case 93, ONDOUSDT): P = −0.00184, I = 0.0001,
    /// `F = P + clamp(I − P, 0.0005, −0.0005)` = −0.00134.
    #[test]
    fn bitmex_negative_premium_is_pulled_back_by_the_clamp() {
        let cfg = FundingConfig {
            interest_rate: rate("0.0001"),
            interest_clamp: rate("0.0005"),
            cap: rate("0.0075"),
            ..FundingConfig::default()
        };
        assert_eq!(funding_rate(rate("-0.00184"), &cfg), Ok(rate("-0.00134")));
    }

    /// Hyperliquid funding (reference case 94): I = 0.01%, impact bid 10,100 over oracle 10,000
    /// gives P = 1%, the 8-hour rate F = 0.95%, and each hourly payment is size × oracle × F / 8.
    #[test]
    fn hyperliquid_hourly_funding_from_impact_bid() {
        let p = premium_index(Price(10_000), Price(10_100), Price(10_150)).unwrap();
        assert_eq!(p, rate("0.01"));
        let eight_hour = FundingConfig {
            interest_rate: rate("0.0001"),
            interest_clamp: rate("0.0005"),
            cap: rate("0.04"),
            rate_divisor: 1,
            ..FundingConfig::default()
        };
        assert_eq!(funding_rate(p, &eight_hour), Ok(rate("0.0095")));
        let hourly = FundingConfig { rate_divisor: 8, interval_ms: 3_600_000, ..eight_hour };
        let f = funding_rate(p, &hourly).unwrap();
        assert_eq!(f, rate("0.0011875"));
        // 2 BTC long against 2 BTC short at oracle 10,000 (tick 1, lot 1 BTC: 1e6 money per tick-lot).
        let pays = distribute_funding(
            MarketId(1),
            &[(AccountId(1), 2), (AccountId(2), -2)],
            Price(10_000),
            1_000_000,
            f,
        )
        .unwrap();
        // 2 × 10,000 × 0.95% / 8 = 23.75 USD.
        assert_eq!(pays, vec![(AccountId(1), Money(-23_750_000)), (AccountId(2), Money(23_750_000))]);
    }

    /// dYdX v4 funding cap (reference case 92): large-cap BTC, IMF 5%, MMF 3%, clamp factor 600%
    /// gives an 8-hour rate cap of 12%.
    #[test]
    fn dydx_cap_from_margin_fractions() {
        assert_eq!(dydx_funding_cap(rate("6"), rate("0.05"), rate("0.03")), Ok(rate("0.12")));
    }

    #[test]
    fn premium_reads_only_the_side_that_crosses_the_index() {
        // Book straddling the index: no premium.
        assert_eq!(premium_index(Price(1_000), Price(999), Price(1_001)), Ok(Rate::ZERO));
        // Impact ask below the index: negative premium of 0.3%.
        assert_eq!(premium_index(Price(1_000), Price(990), Price(997)), Ok(rate("-0.003")));
        assert!(premium_index(Price(0), Price(1), Price(2)).is_err());
    }

    #[test]
    fn averages_samples_plainly_or_by_time_weight() {
        let mut s = PremiumSamples::default();
        for p in [100, 200, 600] {
            s.push(Rate(p));
        }
        assert_eq!(s.average(PremiumAveraging::Simple), Ok(Rate(300)));
        // (1·100 + 2·200 + 3·600) / 6 = 383.33 → 383.
        assert_eq!(s.average(PremiumAveraging::TimeWeighted), Ok(Rate(383)));
        assert_eq!(PremiumSamples::default().average(PremiumAveraging::Simple), Ok(Rate::ZERO));
    }

    #[test]
    fn funding_is_capped() {
        let cfg = FundingConfig { cap: rate("0.003"), ..FundingConfig::default() };
        assert_eq!(funding_rate(rate("0.02"), &cfg), Ok(rate("0.003")));
        assert_eq!(funding_rate(rate("-0.02"), &cfg), Ok(rate("-0.003")));
        // Inside the band the interest term pins the rate to I: Binance's 0.01% baseline.
        assert_eq!(funding_rate(rate("0.0003"), &FundingConfig::default()), Ok(rate("0.0001")));
    }

    #[test]
    fn leftover_units_go_to_largest_remainders_then_lowest_id() {
        let holders = [(AccountId(9), 1), (AccountId(3), -1), (AccountId(5), -1), (AccountId(4), -1)];
        let pays = distribute_funding(MarketId(1), &holders, Price(1), 1, Rate(Rate::SCALE)).unwrap();
        // One payer owes exactly 1 unit; receivers split 1 three ways: lowest id (3) gets it.
        assert_eq!(
            pays,
            vec![
                (AccountId(3), Money(1)),
                (AccountId(4), Money(0)),
                (AccountId(5), Money(0)),
                (AccountId(9), Money(-1))
            ]
        );
        assert!(matches!(
            distribute_funding(MarketId(1), &[(AccountId(1), 5)], Price(10), 1, Rate(1)),
            Err(MarginError::FundingWithoutCounterparty(_))
        ));
    }
}
