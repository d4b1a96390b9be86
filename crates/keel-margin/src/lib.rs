//! Keel's margin system: accounts, collateral with haircuts, positions, risk-limit tiers, initial
//! and maintenance margin, liquidation and bankruptcy prices, mark price and funding, and the maintenance index that finds
//! the accounts a mark move has pushed below maintenance without scanning the others.
//!
//! Everything on the hot path is integer arithmetic on the shared fixed-point types: prices in
//! ticks, quantities in lots, money in millionths of the settlement asset, and rates in parts per
//! 10^8 ([`Rate`]). Every product that could overflow is checked and surfaces as a
//! [`MarginError`]; `rust_decimal` appears only where configuration and views meet humans.
//!
//! Rounding rule: a requirement (initial or maintenance margin, a fee, a payer's funding) rounds
//! up, a credit (collateral value, realized PnL of a partial close, a receiver's funding) rounds
//! down — every residue falls against the trader, never against the venue's solvency. The
//! formulas and the venue each follows are in `docs/margin.md`.
//!
//! The crate knows nothing of the order book: impact bid and ask prices, trades and fills arrive
//! as plain inputs from the engine.

mod clearinghouse;
mod collateral;
mod error;
mod funding;
mod hints;
mod liquidation;
mod maintenance;
mod mark;
mod market;
mod position;
mod rate;
mod slots;
mod tier;
mod valuation;
mod view;

#[cfg(test)]
mod tests;

pub use clearinghouse::{
    Account, Clearinghouse, Fill, FillOutcome, Holding, Liquidity, MarginSummary, OrderIntent, PreTrade,
    Rejection,
};
pub use collateral::{AssetConfig, AssetId};
pub use error::MarginError;
pub use funding::{
    FundingConfig, FundingNotional, FundingSettlement, PremiumAveraging, distribute_funding,
    dydx_funding_cap, funding_rate, premium_index,
};
pub use maintenance::{HeatmapBucket, LiquidationTarget, MarginCall};
pub use mark::{MarkConfig, MarkInputs, MarkMethod, funding_basis_price, mark_price, median3};
pub use market::{MAX_POSITION_NOTIONAL, MarginBasis, MarketConfig};
pub use position::{MarginMode, OpenOrders, Position};
pub use rate::Rate;
pub use tier::{RiskTier, RiskTierSpec, RiskTiers};
pub use view::{AccountView, PositionView};
