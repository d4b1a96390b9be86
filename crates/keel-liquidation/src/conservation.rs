//! Value conservation across the clearinghouse and the insurance fund, exact to the money unit.
//!
//! While positions are open, realized PnL of one side of a trade can be unrealized on the other,
//! so the brief's invariant holds with the cost-basis refinement of `docs/margin.md` §10:
//!
//! ```text
//! Σ balances + Σ isolated margins + fees collected + insurance fund − Σ cost bases
//!     = deposits − withdrawals + fund deposits by the venue
//! ```
//!
//! and once every position is flat, `Σ balances + fees + fund = deposits − withdrawals + fund
//! deposits`. The fund's flows go through `Clearinghouse::transfer_settlement`, so the two halves
//! move in lockstep.

use crate::fund::InsuranceFund;
use keel_margin::Clearinghouse;

/// Both sides of the conservation identity, in money units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueCheck {
    /// Σ balances + Σ isolated margins + fees + fund − Σ cost bases.
    pub held: i128,
    /// Settlement deposits − withdrawals + venue deposits into the fund.
    pub contributed: i128,
}

impl ValueCheck {
    /// Computes both sides (a scan of every account: for tests and audits, not the hot path).
    pub fn of(ch: &Clearinghouse, fund: &InsuranceFund) -> ValueCheck {
        ValueCheck {
            held: ch.settlement_held() + fund.total() - ch.total_cost_basis(),
            contributed: ch.net_deposits() + fund.deposits(),
        }
    }

    /// True when value is conserved exactly.
    pub fn holds(&self) -> bool {
        self.held == self.contributed
    }
}
