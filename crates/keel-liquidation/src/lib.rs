//! Keel's liquidation pipeline: the liquidation queue, liquidation orders, the insurance fund and
//! auto-deleveraging (ADL).
//!
//! The engine owns a [`keel_margin::Clearinghouse`], one [`keel_book::OrderBook`] per market and
//! a [`Liquidator`]. After every command (in particular after it moves marks) it calls
//! [`Liquidator::run`], which finds the accounts the maintenance index reports below
//! maintenance, queues them by severity and liquidates them through the books: orders cancelled,
//! immediate-or-cancel closes at no worse than the bankruptcy price, surpluses and shortfalls
//! settled with the [`InsuranceFund`], and what neither the book nor the fund can absorb
//! deleveraged against the top of the [`AdlRanking`]. Every step is a [`LiquidationEvent`].
//!
//! Deterministic: no clock (time arrives as an argument), no randomness, no I/O, ordered
//! containers only. Integer money, checked arithmetic, typed errors. The process, its rules and
//! sources, and the complexity of each part are in `docs/liquidation.md`.

mod adl;
mod books;
mod conservation;
mod error;
mod event;
mod fund;
mod liquidator;
pub mod settle;

pub use adl::{ADL_SCORE_SCALE, AdlRanking, RefreshBudget, adl_score};
pub use books::BookSet;
pub use conservation::ValueCheck;
pub use error::LiquidationError;
pub use event::{CloseKind, LiquidationEvent};
pub use fund::{FundFlowKind, FundScope, InsuranceFund};
pub use liquidator::{LiquidationConfig, Liquidator, QueueEntry, RunReport, Throttle};
pub use settle::{LIQUIDATION_ORDER_BIT, SettledSide, is_liquidation_order, settle_fill, settle_fills};
