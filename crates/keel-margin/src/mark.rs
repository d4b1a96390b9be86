//! Mark price: the fair price margin and liquidation are computed on, so that one trade in a thin
//! book cannot liquidate anyone.

use crate::rate::{Rate, narrow};
use keel_types::{ArithmeticError, Price};

/// Which rule turns the index and the book into a mark price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum MarkMethod {
    /// Binance USDⓈ-M: the median of (index × (1 + last funding rate × time to funding / interval),
    /// index + moving average of (impact mid − index), last trade price).
    #[default]
    MedianOfThree,
    /// BitMEX "fair price": the index carried by the funding basis,
    /// `index × (1 + last funding rate × time to funding / interval)`.
    FundingBasis,
    /// Bybit/OKX style: the index plus the moving average of (impact mid − index).
    MovingAverageBasis,
}

/// Mark-price configuration of a market.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MarkConfig {
    /// The rule.
    pub method: MarkMethod,
    /// How many impact-price samples the moving-average basis spans (Binance: 30 one-minute samples).
    pub basis_window: usize,
}

impl Default for MarkConfig {
    fn default() -> MarkConfig {
        MarkConfig { method: MarkMethod::MedianOfThree, basis_window: 30 }
    }
}

/// `num / den` rounded to the nearest integer, ties away from zero; `den` must be positive.
pub(crate) fn div_nearest(num: i128, den: i128) -> Result<i128, ArithmeticError> {
    if den <= 0 {
        return Err(ArithmeticError::DivisionByZero);
    }
    let half = den / 2;
    let biased = if num >= 0 { num.checked_add(half) } else { num.checked_sub(half) };
    Ok(biased.ok_or(ArithmeticError::Overflow)? / den)
}

/// Price 1 of the Binance rule and BitMEX's fair price: `index × (1 + rate × until / interval)`,
/// rounded to the nearest tick. The basis decays linearly to zero as funding approaches.
pub fn funding_basis_price(
    index: Price,
    last_funding_rate: Rate,
    ms_until_funding: u64,
    interval_ms: u64,
) -> Result<Price, ArithmeticError> {
    let until = i128::from(ms_until_funding.min(interval_ms));
    let num = i128::from(index.0)
        .checked_mul(i128::from(last_funding_rate.0))
        .and_then(|v| v.checked_mul(until))
        .ok_or(ArithmeticError::Overflow)?;
    let den = i128::from(Rate::SCALE) * i128::from(interval_ms);
    let basis = narrow(div_nearest(num, den)?)?;
    index.checked_add(Price(basis))
}

/// Median of three prices.
#[inline]
pub fn median3(a: Price, b: Price, c: Price) -> Price {
    a.max(b).min(a.min(b).max(c))
}

/// A fixed-size window of book basis samples, `impact bid + impact ask − 2 × index`, in half ticks
/// so that a mid between two ticks stays exact. Pre-sized: sampling never allocates.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct BasisWindow {
    samples: Vec<i64>,
    next: usize,
    len: usize,
    sum: i128,
}

impl BasisWindow {
    /// An empty window that will hold `capacity` samples.
    pub(crate) fn new(capacity: usize) -> BasisWindow {
        BasisWindow { samples: vec![0; capacity.max(1)], next: 0, len: 0, sum: 0 }
    }

    /// Adds a sample, evicting the oldest when full.
    pub(crate) fn push(&mut self, half_ticks: i64) {
        let cap = self.samples.len();
        if self.len == cap {
            self.sum -= i128::from(self.samples[self.next]);
        } else {
            self.len += 1;
        }
        self.samples[self.next] = half_ticks;
        self.sum += i128::from(half_ticks);
        self.next = (self.next + 1) % cap;
    }

    /// Price 2 of the Binance rule: index plus the average basis, to the nearest tick; `None` before
    /// the first sample.
    pub(crate) fn basis_price(&self, index: Price) -> Result<Option<Price>, ArithmeticError> {
        if self.len == 0 {
            return Ok(None);
        }
        let basis = narrow(div_nearest(self.sum, 2 * self.len as i128)?)?;
        index.checked_add(Price(basis)).map(Some)
    }
}

/// The inputs of a mark-price computation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkInputs {
    /// The index (spot) price.
    pub index: Price,
    /// The funding rate of the last settled interval.
    pub last_funding_rate: Rate,
    /// Time left to the next funding.
    pub ms_until_funding: u64,
    /// The funding interval.
    pub interval_ms: u64,
    /// Index plus moving-average book basis, when the book has been sampled.
    pub basis_price: Option<Price>,
    /// The last trade price, when there has been a trade.
    pub last_trade: Option<Price>,
}

/// Applies a mark rule. A missing basis or last trade is replaced by the funding-basis price, so
/// that a market without a book or without trades is marked at its carried index.
pub fn mark_price(method: MarkMethod, inputs: &MarkInputs) -> Result<Price, ArithmeticError> {
    let price1 = funding_basis_price(
        inputs.index,
        inputs.last_funding_rate,
        inputs.ms_until_funding,
        inputs.interval_ms,
    )?;
    let price2 = inputs.basis_price.unwrap_or(price1);
    Ok(match method {
        MarkMethod::FundingBasis => price1,
        MarkMethod::MovingAverageBasis => price2,
        MarkMethod::MedianOfThree => median3(price1, price2, inputs.last_trade.unwrap_or(price1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_three_picks_the_middle() {
        let (a, b, c) = (Price(1), Price(2), Price(3));
        for (x, y, z) in [(a, b, c), (a, c, b), (b, a, c), (b, c, a), (c, a, b), (c, b, a)] {
            assert_eq!(median3(x, y, z), b);
        }
        assert_eq!(median3(a, a, c), a);
    }

    #[test]
    fn funding_basis_decays_towards_the_funding_time() {
        // Index 30,000.0 (ticks of 0.1), last rate 0.01%, 4h of an 8h interval left: +1.5 USD.
        let idx = Price(300_000);
        let r = Rate(10_000);
        assert_eq!(funding_basis_price(idx, r, 4 * 3_600_000, 8 * 3_600_000), Ok(Price(300_015)));
        assert_eq!(funding_basis_price(idx, r, 0, 8 * 3_600_000), Ok(idx));
        assert_eq!(funding_basis_price(idx, Rate(-10_000), 8 * 3_600_000, 8 * 3_600_000), Ok(Price(299_970)));
    }

    #[test]
    fn binance_rule_ignores_an_outlier_last_trade() {
        let mut w = BasisWindow::new(3);
        // Impact bid 100.0 / ask 100.2 over index 100.0: mid 100.1, basis +0.1 (ticks 0.1).
        for _ in 0..3 {
            w.push(1_000 + 1_002 - 2 * 1_000);
        }
        let inputs = MarkInputs {
            index: Price(1_000),
            last_funding_rate: Rate::ZERO,
            ms_until_funding: 0,
            interval_ms: 1,
            basis_price: w.basis_price(Price(1_000)).unwrap(),
            last_trade: Some(Price(500)),
        };
        assert_eq!(inputs.basis_price, Some(Price(1_001)));
        assert_eq!(mark_price(MarkMethod::MedianOfThree, &inputs), Ok(Price(1_000)));
        assert_eq!(mark_price(MarkMethod::MovingAverageBasis, &inputs), Ok(Price(1_001)));
        let high = MarkInputs { last_trade: Some(Price(1_100)), ..inputs };
        assert_eq!(mark_price(MarkMethod::MedianOfThree, &high), Ok(Price(1_001)));
    }

    #[test]
    fn window_evicts_the_oldest_sample() {
        let mut w = BasisWindow::new(2);
        w.push(10);
        w.push(20);
        w.push(40);
        // Average of 20 and 40 half ticks = 30 half ticks = 15 ticks.
        assert_eq!(w.basis_price(Price(100)), Ok(Some(Price(115))));
        assert_eq!(BasisWindow::new(4).basis_price(Price(100)), Ok(None));
    }
}
