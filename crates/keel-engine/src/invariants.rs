//! The exchange-wide invariants, checked from outside the state machine after any command.
//!
//! Each book checks its own structure; what only the engine can see is how the parts agree:
//! every market's longs equal its shorts, every account's open-order reservation is exactly its
//! resting orders, and value is conserved to the money unit (`docs/margin.md` §10). The check
//! scans every account and order, so it is for tests, fuzzing and audits, never the hot path.

use crate::engine::Engine;
use keel_liquidation::ValueCheck;
use keel_types::{AccountId, MarketId, Side};
use std::collections::BTreeMap;

/// The first exchange-wide invariant found broken, described for whoever investigates.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant broken: {0}")]
pub struct InvariantViolation(pub String);

impl Engine {
    /// Checks the exchange-wide invariants (see the module documentation): every book's own
    /// invariants, including that it is not crossed; long open interest equal to short in every
    /// market; each account's reserved quantity and notional equal to its resting orders'; value
    /// conserved exactly.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let broken = |what: String| Err(InvariantViolation(what));
        for market in self.market_ids() {
            let Some(book) = self.book(market) else { return broken(format!("market {market} has no book")) };
            if let Err(what) = book.check_invariants() {
                return broken(format!("market {market}: {what}"));
            }
        }

        let ch = self.clearinghouse();
        let mut open_interest: BTreeMap<MarketId, i64> = BTreeMap::new();
        for account in ch.accounts() {
            for position in account.positions() {
                let net = open_interest.entry(position.market()).or_default();
                *net = net.saturating_add(position.size().0);
            }
        }
        if let Some((market, net)) = open_interest.into_iter().find(|&(_, net)| net != 0) {
            return broken(format!("market {market}: long and short open interest differ by {net} lots"));
        }

        for market in self.market_ids() {
            self.check_reservations(market)?;
        }

        let value = ValueCheck::of(ch, self.liquidator().fund());
        if !value.holds() {
            return broken(format!(
                "value not conserved: {} held against {} contributed",
                value.held, value.contributed
            ));
        }
        Ok(())
    }

    /// Every account's reservation in `market` is exactly its resting orders there, side by
    /// side: the quantity in lots, and the notional at the orders' own prices.
    fn check_reservations(&self, market: MarketId) -> Result<(), InvariantViolation> {
        let ch = self.clearinghouse();
        let (Some(book), Ok(config)) = (self.book(market), ch.market(market)) else {
            return Err(InvariantViolation(format!(
                "market {market} is not listed in both the books and margin"
            )));
        };
        let k = i128::from(config.grid.money_per_tick_lot());
        // (quantity, notional) of each account's resting orders, keyed by the account and whether
        // the side is the buy side (an ordered map keeps the first report deterministic).
        let mut resting: BTreeMap<(AccountId, bool), (i128, i128)> = BTreeMap::new();
        for side in [Side::Buy, Side::Sell] {
            for order in book.orders(side) {
                let entry = resting.entry((order.account, side == Side::Buy)).or_default();
                entry.0 += i128::from(order.qty.0);
                entry.1 += i128::from(order.price.0) * i128::from(order.qty.0) * k;
            }
        }
        for account in ch.accounts() {
            let Some(position) = account.position(market) else { continue };
            for (side, open) in [(Side::Buy, position.open_buys()), (Side::Sell, position.open_sells())] {
                let orders = resting.remove(&(account.id(), side == Side::Buy)).unwrap_or_default();
                let reserved = (i128::from(open.qty.0), i128::from(open.notional.0));
                if reserved != orders {
                    return Err(InvariantViolation(format!(
                        "market {market}: account {} {side:?}: reserves {reserved:?} (lots, notional) \
                         for resting orders of {orders:?}",
                        account.id()
                    )));
                }
            }
        }
        match resting.into_iter().next() {
            Some(((account, buys), orders)) => Err(InvariantViolation(format!(
                "market {market}: account {account} {}: orders {orders:?} (lots, notional) rest unreserved",
                if buys { "Buy" } else { "Sell" }
            ))),
            None => Ok(()),
        }
    }
}
