//! Risk-limit tiers: notional brackets with a maintenance rate, a maintenance amount and a
//! maximum leverage each (Binance's "leverage brackets", Bybit's "risk limits").

use crate::MarginError;
use crate::rate::{Rate, div_round};
use keel_types::{ArithmeticError, Money, Rounding};

/// One bracket as configured: where it starts, its maintenance rate and its leverage ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RiskTierSpec {
    /// The smallest position notional that falls in this tier (the first tier starts at zero).
    pub floor: Money,
    /// Maintenance margin rate (MMR) applied to the whole notional in this tier.
    pub maintenance_rate: Rate,
    /// The highest leverage a position whose notional is in this tier may use.
    pub max_leverage: u32,
}

/// A validated bracket with its maintenance amount ("cum" on Binance, "deduction" on Hyperliquid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RiskTier {
    /// The smallest position notional that falls in this tier.
    pub floor: Money,
    /// Maintenance margin rate (MMR).
    pub maintenance_rate: Rate,
    /// Subtracted from `notional × MMR` so that maintenance margin is continuous across floors.
    pub maintenance_amount: Money,
    /// The highest leverage allowed in this tier.
    pub max_leverage: u32,
}

/// A market's tier table, ascending by floor, with the largest notional any position may reach.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RiskTiers {
    tiers: Vec<RiskTier>,
    max_notional: Money,
}

impl RiskTiers {
    /// Validates brackets and derives each maintenance amount by the Binance recurrence
    /// `cum_n = cum_{n-1} + floor_n × (MMR_n − MMR_{n-1})`, which makes maintenance margin continuous.
    ///
    /// `max_notional` is the cap of the last tier: no position may be larger.
    pub fn new(specs: &[RiskTierSpec], max_notional: Money) -> Result<RiskTiers, MarginError> {
        let first = specs.first().ok_or(MarginError::InvalidConfig("at least one risk tier is required"))?;
        if first.floor != Money::ZERO {
            return Err(MarginError::InvalidConfig("the first risk tier must start at notional zero"));
        }
        let mut tiers: Vec<RiskTier> = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.maintenance_rate.0 <= 0 || spec.maintenance_rate.0 >= Rate::SCALE {
                return Err(MarginError::InvalidConfig("maintenance rate must lie strictly between 0 and 1"));
            }
            if spec.max_leverage == 0 {
                return Err(MarginError::InvalidConfig("maximum leverage must be at least 1"));
            }
            // MMR × max leverage < 1: maintenance stays below the initial margin at full leverage,
            // so a position opened at maximum leverage is not liquidatable on arrival.
            if i128::from(spec.maintenance_rate.0) * i128::from(spec.max_leverage) >= i128::from(Rate::SCALE)
            {
                return Err(MarginError::InvalidConfig("maintenance rate must be below 1 / max leverage"));
            }
            let cum = match tiers.last() {
                None => Money::ZERO,
                Some(prev) => {
                    if spec.floor <= prev.floor {
                        return Err(MarginError::InvalidConfig("risk tier floors must increase"));
                    }
                    if spec.maintenance_rate < prev.maintenance_rate {
                        return Err(MarginError::InvalidConfig("maintenance rates must not decrease"));
                    }
                    if spec.max_leverage > prev.max_leverage {
                        return Err(MarginError::InvalidConfig("maximum leverage must not increase"));
                    }
                    let step = spec.maintenance_rate.checked_sub(prev.maintenance_rate)?;
                    // Rounded down: a smaller maintenance amount means a larger requirement, so any
                    // sub-unit residue of the recurrence is borne by the trader, never the venue.
                    prev.maintenance_amount.checked_add(step.of(spec.floor, Rounding::Floor)?)?
                }
            };
            tiers.push(RiskTier {
                floor: spec.floor,
                maintenance_rate: spec.maintenance_rate,
                maintenance_amount: cum,
                max_leverage: spec.max_leverage,
            });
        }
        let last = tiers[tiers.len() - 1];
        if max_notional <= last.floor {
            return Err(MarginError::InvalidConfig("max notional must exceed the last tier's floor"));
        }
        Ok(RiskTiers { tiers, max_notional })
    }

    /// Hyperliquid's rule: brackets given as `(floor, max leverage)` with the maintenance rate set
    /// to half the initial rate at maximum leverage, `MMR = 1 / (2 × max leverage)`.
    ///
    /// Rates are rounded up to 10^-8 where `1/(2L)` has no finite decimal (L = 3 gives 16.666667%).
    pub fn half_of_initial(brackets: &[(Money, u32)], max_notional: Money) -> Result<RiskTiers, MarginError> {
        let mut specs = Vec::with_capacity(brackets.len());
        for &(floor, max_leverage) in brackets {
            if max_leverage == 0 {
                return Err(MarginError::InvalidConfig("maximum leverage must be at least 1"));
            }
            let rate = div_round(Rate::SCALE, 2 * i64::from(max_leverage), Rounding::Ceil)?;
            specs.push(RiskTierSpec { floor, maintenance_rate: Rate(rate), max_leverage });
        }
        RiskTiers::new(&specs, max_notional)
    }

    /// The tiers, ascending by floor.
    pub fn tiers(&self) -> &[RiskTier] {
        &self.tiers
    }

    /// The largest notional a position may reach in this market.
    pub fn max_notional(&self) -> Money {
        self.max_notional
    }

    /// The index of the tier a position of this notional (sign ignored) falls in.
    #[inline]
    pub fn tier_index(&self, notional: Money) -> usize {
        let n = notional.0.saturating_abs();
        // Few tiers (≤ ~20) and most positions in the first one or two: a forward scan that
        // stops at the first floor above the notional beats a binary search. Floors ascend and
        // the first is zero, so the count is at least one.
        self.tiers.iter().skip(1).take_while(|t| t.floor.0 <= n).count()
    }

    /// The tier a position of this notional falls in.
    #[inline]
    pub fn tier_for(&self, notional: Money) -> &RiskTier {
        &self.tiers[self.tier_index(notional)]
    }

    /// Maintenance margin of a position of this notional: `|notional| × MMR − cum`, rounded up.
    #[inline]
    pub fn maintenance_margin(&self, notional: Money) -> Result<Money, ArithmeticError> {
        let n = Money(notional.0.checked_abs().ok_or(ArithmeticError::Overflow)?);
        let tier = self.tier_for(n);
        tier.maintenance_rate.of(n, Rounding::Ceil)?.checked_sub(tier.maintenance_amount)
    }

    /// The highest leverage a position of this notional may use.
    #[inline]
    pub fn max_leverage_for(&self, notional: Money) -> u32 {
        self.tier_for(notional).max_leverage
    }

    /// The largest notional a position may have at `leverage`: the cap of the last tier that
    /// still allows it, or `None` when even the first tier does not.
    pub fn max_notional_at_leverage(&self, leverage: u32) -> Option<Money> {
        let last_ok = self.tiers.iter().rposition(|t| t.max_leverage >= leverage)?;
        Some(self.tiers.get(last_ok + 1).map_or(self.max_notional, |next| next.floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(units: i64) -> Money {
        Money::from_whole(units).unwrap()
    }

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    fn tiers(rows: &[(i64, &str, u32)], cap: i64) -> RiskTiers {
        let specs: Vec<RiskTierSpec> = rows
            .iter()
            .map(|&(floor, mmr, lev)| RiskTierSpec {
                floor: usd(floor),
                maintenance_rate: rate(mmr),
                max_leverage: lev,
            })
            .collect();
        RiskTiers::new(&specs, usd(cap)).unwrap()
    }

    fn cums(t: &RiskTiers) -> Vec<Money> {
        t.tiers().iter().map(|t| t.maintenance_amount).collect()
    }

    /// Binance USDⓈ-M leverage brackets, ADA/BUSD (reference case D72): the `cum` field of the
    /// leverage-bracket API is 0, 2,500, 27,500, 77,500, 277,500, 1,527,500.
    #[test]
    fn binance_ada_busd_maintenance_amounts() {
        let t = tiers(
            &[
                (0, "0.025", 20),
                (100_000, "0.05", 10),
                (500_000, "0.10", 5),
                (1_000_000, "0.15", 3),
                (2_000_000, "0.25", 2),
                (5_000_000, "0.50", 1),
            ],
            10_000_000,
        );
        let expected = [0, 2_500, 27_500, 77_500, 277_500, 1_527_500].map(usd);
        assert_eq!(cums(&t), expected);
    }

    /// Binance USDⓈ-M leverage brackets, ZEC/USDT (reference case D73): cum 0, 750, 4,500, 17,000,
    /// 29,500, 154,500, 654,500.
    #[test]
    fn binance_zec_usdt_maintenance_amounts() {
        let t = tiers(
            &[
                (0, "0.01", 50),
                (50_000, "0.025", 20),
                (150_000, "0.05", 10),
                (250_000, "0.10", 5),
                (500_000, "0.125", 4),
                (1_000_000, "0.25", 2),
                (2_000_000, "0.50", 1),
            ],
            5_000_000,
        );
        let expected = [0, 750, 4_500, 17_000, 29_500, 154_500, 654_500].map(usd);
        assert_eq!(cums(&t), expected);
    }

    /// Hyperliquid margin tiers, BTC testnet table (reference case D75): `mmr = 1/(2·maxLev)` and
    /// deductions 0, 75, 1,575, 6,575, 26,575 (computed from Hyperliquid's documented formula).
    /// The 3x tier's 1/6 has no finite decimal; at 10^-8 it is 16.666667%, which makes the last
    /// deduction 26,575.001 — equal to the cent, the precision Hyperliquid displays.
    #[test]
    fn hyperliquid_half_initial_deductions() {
        let t = RiskTiers::half_of_initial(
            &[(usd(0), 40), (usd(10_000), 25), (usd(50_000), 10), (usd(100_000), 5), (usd(300_000), 3)],
            usd(1_000_000),
        )
        .unwrap();
        let rates: Vec<Rate> = t.tiers().iter().map(|t| t.maintenance_rate).collect();
        assert_eq!(rates, vec![rate("0.0125"), rate("0.02"), rate("0.05"), rate("0.10"), rate("0.16666667")]);
        let c = cums(&t);
        assert_eq!(&c[..4], &[0, 75, 1_575, 6_575].map(usd));
        assert!((c[4].0 - usd(26_575).0).abs() < 10_000, "deduction {} not 26,575.00", c[4]);
    }

    #[test]
    fn maintenance_margin_is_continuous_at_every_floor() {
        let t = tiers(&[(0, "0.004", 125), (50_000, "0.005", 100), (250_000, "0.01", 50)], 1_000_000);
        for tier in &t.tiers()[1..] {
            let below = Money(tier.floor.0 - 1);
            let at = tier.floor;
            let mm_below = t.maintenance_margin(below).unwrap();
            let mm_at = t.maintenance_margin(at).unwrap();
            assert!((mm_at.0 - mm_below.0).abs() <= 1, "jump at {}: {} -> {}", at, mm_below, mm_at);
        }
        // 100,000 USD is in the 0.5% tier: 500 − 50 = 450.
        assert_eq!(t.maintenance_margin(usd(100_000)), Ok(usd(450)));
        assert_eq!(t.maintenance_margin(usd(-100_000)), Ok(usd(450)));
    }

    #[test]
    fn leverage_limits_follow_the_brackets() {
        let t = tiers(&[(0, "0.004", 125), (50_000, "0.005", 100), (250_000, "0.01", 50)], 1_000_000);
        assert_eq!(t.max_leverage_for(usd(49_999)), 125);
        assert_eq!(t.max_leverage_for(usd(50_000)), 100);
        assert_eq!(t.max_notional_at_leverage(125), Some(usd(50_000)));
        assert_eq!(t.max_notional_at_leverage(60), Some(usd(250_000)));
        assert_eq!(t.max_notional_at_leverage(50), Some(usd(1_000_000)));
        assert_eq!(t.max_notional_at_leverage(126), None);
    }

    #[test]
    fn refuses_broken_tables() {
        let spec = |floor: i64, mmr: &str, lev: u32| RiskTierSpec {
            floor: usd(floor),
            maintenance_rate: rate(mmr),
            max_leverage: lev,
        };
        let bad = [
            vec![],
            vec![spec(1, "0.01", 10)],
            vec![spec(0, "0.01", 10), spec(0, "0.02", 5)],
            vec![spec(0, "0.02", 10), spec(10, "0.01", 5)],
            vec![spec(0, "0.01", 10), spec(10, "0.02", 20)],
            vec![spec(0, "0.01", 100)],
            vec![spec(0, "0", 10)],
            vec![spec(0, "0.01", 0)],
        ];
        for specs in bad {
            assert!(
                matches!(RiskTiers::new(&specs, usd(100)), Err(MarginError::InvalidConfig(_))),
                "{specs:?}"
            );
        }
        assert!(RiskTiers::new(&[spec(0, "0.01", 10)], usd(0)).is_err());
    }
}
