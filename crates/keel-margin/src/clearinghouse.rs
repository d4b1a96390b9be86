//! The clearinghouse: accounts, their collateral and positions, and every margin decision on them.

use crate::MarginError;
use crate::collateral::{Asset, AssetConfig, AssetId};
use crate::funding::{FundingNotional, FundingSettlement, distribute_funding, funding_rate, premium_index};
use crate::hints::PositionHints;
use crate::liquidation::Solver;
use crate::maintenance::MaintenanceIndex;
use crate::mark::{MarkInputs, mark_price};
use crate::market::{Market, MarketConfig};
use crate::position::{MarginMode, OpenOrders, Position, abs, notional, reservation};
use crate::rate::{Divisor, Rate, div_round_wide, narrow};
use crate::slots::PositionSlots;
use crate::valuation::{Share, SummaryCache};
use crate::view::{AccountView, PositionView};
use keel_types::{
    AccountId, AccountSlots, ArithmeticError, MarketId, MarketSlots, Money, Price, Qty, Rounding, Side,
};
use rust_decimal::Decimal;

/// An amount of a non-settlement collateral asset held by an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holding {
    /// The asset.
    pub asset: AssetId,
    /// Amount in the asset's smallest unit.
    pub amount: i64,
}

/// A trading account: a settlement balance, collateral holdings and one position slot per market
/// it has touched. A small vector of positions, one appended the first time a market is touched
/// and kept when it closes, with a table in the record that says where each market's position is
/// (see `slots.rs`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "StoredAccount")]
pub struct Account {
    pub(crate) id: AccountId,
    pub(crate) balance: Money,
    pub(crate) collateral: Vec<Holding>,
    /// Appended to by `Clearinghouse::position_at_or_insert` and taken back by `set_leverage`,
    /// both keeping `slots` in step.
    pub(crate) positions: Vec<Position>,
    /// The cross totals last computed for this account (see `valuation`).
    #[serde(skip)]
    pub(crate) summary: SummaryCache,
    /// Where the position of each market is in `positions`; derived from them.
    #[serde(skip)]
    slots: PositionSlots,
}

/// The serialized form of an [`Account`]: everything but what is derived from it.
#[derive(serde::Deserialize)]
struct StoredAccount {
    id: AccountId,
    balance: Money,
    collateral: Vec<Holding>,
    positions: Vec<Position>,
}

impl From<StoredAccount> for Account {
    fn from(s: StoredAccount) -> Account {
        Account {
            slots: PositionSlots::of(&s.positions),
            id: s.id,
            balance: s.balance,
            collateral: s.collateral,
            positions: s.positions,
            summary: SummaryCache::default(),
        }
    }
}

impl Account {
    /// The account id.
    pub fn id(&self) -> AccountId {
        self.id
    }

    /// Settlement-asset balance (wallet balance); may be negative when collateral backs a loss.
    pub fn balance(&self) -> Money {
        self.balance
    }

    /// Non-settlement collateral holdings.
    pub fn collateral(&self) -> &[Holding] {
        &self.collateral
    }

    /// Position slots, in the order the markets were first touched.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// The position in `market`, if the account has touched it.
    pub fn position(&self, market: MarketId) -> Option<&Position> {
        self.positions.iter().find(|p| p.market == market)
    }

    #[inline]
    pub(crate) fn position_index(&self, slot: u32) -> Option<usize> {
        self.slots.find(slot, &self.positions)
    }

    /// The position at `idx`, to change: its cached share and the account's cached totals are
    /// forgotten first. Every change to a position goes through here, so no cache outlives the
    /// numbers it was computed from.
    #[inline]
    pub(crate) fn position_mut(&mut self, idx: usize) -> &mut Position {
        self.summary.clear();
        let p = &mut self.positions[idx];
        p.share.clear();
        p.worst.clear();
        p
    }
}

/// An order the engine is about to accept, as the pre-trade check sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderIntent {
    /// The market.
    pub market: MarketId,
    /// Buy or sell.
    pub side: Side,
    /// Quantity in lots.
    pub qty: Qty,
    /// Limit price, or for a market order the worst price it may reach (its protection bound).
    pub price: Price,
}

/// The answer of the pre-trade check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTrade {
    /// The order may be accepted: it only reduces what the account reserves, or the account's
    /// available margin covers what it adds (its reservation and the taker fee).
    Accept,
    /// The order must be rejected.
    Reject(Rejection),
}

/// Why the pre-trade check rejects an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The account lacks this much equity to reserve the order's initial margin and fee.
    InsufficientMargin {
        /// Exactly how much is missing.
        shortfall: Money,
    },
    /// The position the order could build exceeds what the chosen leverage allows.
    RiskLimit {
        /// Worst-case notional of the position if the side fills.
        notional: Money,
        /// Largest notional at the account's leverage in this market.
        max_notional: Money,
    },
    /// The position the order could build exceeds the market's size limit.
    PositionLimit {
        /// Worst-case size if the side fills.
        size: Qty,
        /// The market's limit.
        max: Qty,
    },
}

/// Whether a fill's account rested in the book or took liquidity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Liquidity {
    /// Resting order: pays the maker fee and its open-order reservation shrinks by the fill.
    Maker,
    /// Incoming order: pays the taker fee.
    Taker,
}

/// One side of a trade, to be booked on one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// The account.
    pub account: AccountId,
    /// The market.
    pub market: MarketId,
    /// The account's side.
    pub side: Side,
    /// Filled quantity in lots.
    pub qty: Qty,
    /// Fill price.
    pub price: Price,
    /// Maker or taker.
    pub liquidity: Liquidity,
}

/// What a fill did to the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillOutcome {
    /// PnL realized by the reducing part of the fill.
    pub realized_pnl: Money,
    /// Fee charged (negative: rebate).
    pub fee: Money,
    /// Lots of the previous position closed.
    pub closed: Qty,
    /// Position size after the fill.
    pub size: Qty,
    /// Settlement balance after the fill.
    pub balance: Money,
}

/// Cross-margin totals of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MarginSummary {
    /// Balance + haircut collateral + unrealized PnL of cross positions.
    pub equity: Money,
    /// Equity counting unrealized PnL only where negative: what may back a withdrawal.
    pub realized_equity: Money,
    /// Initial margin of cross positions plus every open-order reservation.
    pub initial_margin: Money,
    /// Maintenance margin of cross positions.
    pub maintenance_margin: Money,
    /// Value of the collateral after haircuts.
    pub collateral_value: Money,
}

impl MarginSummary {
    /// Equity minus initial margin: what new orders can use.
    pub fn available(&self) -> Result<Money, ArithmeticError> {
        self.equity.checked_sub(self.initial_margin)
    }

    /// True when cross equity has fallen to or below cross maintenance margin.
    pub fn liquidatable(&self) -> bool {
        self.maintenance_margin.is_positive() && self.equity <= self.maintenance_margin
    }
}

/// Maintenance margin over equity, rounded up; `None` when equity is zero or negative.
pub(crate) fn margin_ratio(maintenance: Money, equity: Money) -> Result<Option<Rate>, ArithmeticError> {
    if !equity.is_positive() {
        return Ok(None);
    }
    let r = div_round_wide(
        i128::from(maintenance.0) * i128::from(Rate::SCALE),
        i128::from(equity.0),
        Rounding::Ceil,
    )?;
    narrow(r).map(|r| Some(Rate(r)))
}

/// Accounts, collateral assets and markets, and the margin arithmetic that ties them together.
///
/// A snapshot (serde) holds the vectors and the maintenance index; the id lookups are rebuilt
/// from the vectors on restore, so a restored clearinghouse does not depend on hash-map layout.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(from = "StoredClearinghouse")]
pub struct Clearinghouse {
    pub(crate) assets: Vec<Asset>,
    pub(crate) markets: Vec<Market>,
    #[serde(skip)]
    market_slots: MarketSlots,
    pub(crate) accounts: Vec<Account>,
    #[serde(skip)]
    account_slots: AccountSlots,
    /// Where each account's positions are, by id, for prefetching (see `hints.rs`). Not state.
    #[serde(skip)]
    hints: PositionHints,
    pub(crate) fees_collected: Money,
    pub(crate) net_deposits: i128,
    /// Settlement money moved into accounts from pools outside the clearinghouse (the insurance
    /// fund) minus money moved out to them.
    pub(crate) external_net: i128,
    /// Accounts indexed by the mark at which they reach maintenance (see `maintenance.rs`).
    pub(crate) index: MaintenanceIndex,
    /// The valuation epoch: starts at 1 and moves on every mark or collateral price change, so
    /// that every account's [`SummaryCache`] goes stale at once. Not state.
    #[serde(skip)]
    epoch: u64,
}

/// The serialized form of a [`Clearinghouse`]: everything but the id lookups.
#[derive(serde::Deserialize)]
struct StoredClearinghouse {
    assets: Vec<Asset>,
    markets: Vec<Market>,
    accounts: Vec<Account>,
    fees_collected: Money,
    net_deposits: i128,
    external_net: i128,
    index: MaintenanceIndex,
}

impl From<StoredClearinghouse> for Clearinghouse {
    fn from(s: StoredClearinghouse) -> Clearinghouse {
        let market_slots = s.markets.iter().enumerate().map(|(i, m)| (m.config.id, i as u32)).collect();
        let account_slots = s.accounts.iter().enumerate().map(|(i, a)| (a.id, i as u32)).collect();
        let hints = PositionHints::of(&s.accounts);
        let mut index = s.index;
        index.rescan_all();
        Clearinghouse {
            assets: s.assets,
            markets: s.markets,
            market_slots,
            accounts: s.accounts,
            account_slots,
            hints,
            fees_collected: s.fees_collected,
            net_deposits: s.net_deposits,
            external_net: s.external_net,
            index,
            epoch: 1,
        }
    }
}

impl Default for Clearinghouse {
    fn default() -> Clearinghouse {
        Clearinghouse::new()
    }
}

impl Clearinghouse {
    /// An empty clearinghouse whose settlement asset (id 0) is a USD stablecoin with six decimals.
    pub fn new() -> Clearinghouse {
        let usd = AssetConfig {
            symbol: "USD".into(),
            decimals: 6,
            price: Money(Money::SCALE),
            haircut: Rate::ZERO,
        };
        Clearinghouse {
            // Cannot fail: six decimals, a positive price and no haircut are all valid.
            assets: Asset::new(usd).into_iter().collect(),
            markets: Vec::new(),
            market_slots: MarketSlots::default(),
            accounts: Vec::new(),
            account_slots: AccountSlots::default(),
            hints: PositionHints::default(),
            fees_collected: Money::ZERO,
            net_deposits: 0,
            external_net: 0,
            index: MaintenanceIndex::default(),
            epoch: 1,
        }
    }

    // ----- configuration -------------------------------------------------------------------

    /// Registers a collateral asset and returns its id.
    pub fn add_asset(&mut self, config: AssetConfig) -> Result<AssetId, MarginError> {
        let id =
            u16::try_from(self.assets.len()).map_err(|_| MarginError::InvalidConfig("too many assets"))?;
        self.assets.push(Asset::new(config)?);
        Ok(AssetId(id))
    }

    /// Sets a collateral asset's price (a depeg is a lower price); every holder's equity follows.
    pub fn set_asset_price(&mut self, asset: AssetId, price: Money) -> Result<(), MarginError> {
        let a = self.collateral_asset_mut(asset)?;
        let haircut = a.config.haircut;
        a.reprice(price, haircut)?;
        self.touch_holders(asset);
        self.new_epoch();
        Ok(())
    }

    /// Sets a collateral asset's haircut.
    pub fn set_haircut(&mut self, asset: AssetId, haircut: Rate) -> Result<(), MarginError> {
        let a = self.collateral_asset_mut(asset)?;
        let price = a.config.price;
        a.reprice(price, haircut)?;
        self.touch_holders(asset);
        self.new_epoch();
        Ok(())
    }

    /// Marks every holder of `asset` for re-indexing: a collateral price or haircut change moves
    /// the equity of each of them (a scan of all accounts; collateral repricing is rare).
    fn touch_holders(&mut self, asset: AssetId) {
        for (i, a) in self.accounts.iter().enumerate() {
            if a.collateral.iter().any(|h| h.asset == asset) {
                self.index.touch(i);
            }
        }
    }

    /// A registered asset's configuration (current price and haircut).
    pub fn asset(&self, asset: AssetId) -> Option<&AssetConfig> {
        self.assets.get(usize::from(asset.0)).map(|a| &a.config)
    }

    /// Configures a market.
    pub fn add_market(&mut self, config: MarketConfig) -> Result<(), MarginError> {
        if self.market_slots.contains(config.id) {
            return Err(MarginError::DuplicateMarket(config.id));
        }
        let slot =
            u32::try_from(self.markets.len()).map_err(|_| MarginError::InvalidConfig("too many markets"))?;
        let id = config.id;
        self.markets.push(Market::new(config)?);
        self.market_slots.insert(id, slot);
        self.index.add_market();
        Ok(())
    }

    /// A market's configuration.
    pub fn market(&self, market: MarketId) -> Result<&MarketConfig, MarginError> {
        Ok(&self.markets[self.slot(market)?].config)
    }

    /// The market's slot: markets are numbered 0, 1, 2, … in the order they were added.
    #[inline]
    pub fn market_slot(&self, market: MarketId) -> Option<usize> {
        self.market_slots.get(market).map(|s| s as usize)
    }

    /// Opens an empty account.
    pub fn open_account(&mut self, id: AccountId) -> Result<(), MarginError> {
        if self.account_slots.contains(id) {
            return Err(MarginError::DuplicateAccount(id));
        }
        let slot = u32::try_from(self.accounts.len())
            .map_err(|_| MarginError::InvalidConfig("too many accounts"))?;
        self.accounts.push(Account {
            id,
            balance: Money::ZERO,
            collateral: Vec::new(),
            positions: Vec::new(),
            summary: SummaryCache::default(),
            slots: PositionSlots::EMPTY,
        });
        self.account_slots.insert(id, slot);
        self.hints.record(id, &[]);
        self.index.add_account();
        Ok(())
    }

    /// An account, if open.
    pub fn account(&self, id: AccountId) -> Option<&Account> {
        self.account_slots.get(id).map(|i| &self.accounts[i as usize])
    }

    /// Starts loading where account `id`'s slot and the address of its positions are recorded,
    /// the first loads of every lookup of the account; [`Clearinghouse::prefetch_account`]
    /// reads them a little later.
    #[inline]
    pub fn prefetch_slot(&self, id: AccountId) {
        self.account_slots.prefetch(id);
        self.hints.prefetch_hint(id);
    }

    /// Starts loading account `id`'s record and positions into the cache, for a command that
    /// will need them soon (see [`keel_types::prefetch`]). Reads the account's slot and the
    /// positions' recorded address, so it pays when [`Clearinghouse::prefetch_slot`] ran for
    /// the same account a little earlier. Cheap, and a no-op for an unknown account.
    #[inline]
    pub fn prefetch_account(&self, id: AccountId) {
        if let Some(i) = self.account_slots.get(id) {
            let record = self.accounts.as_ptr().wrapping_add(i as usize);
            keel_types::prefetch_bytes(record, std::mem::size_of::<Account>(), 2);
            self.index.prefetch(i as usize);
            self.hints.prefetch_positions(id);
        }
    }

    /// True when the recorded address of account `id`'s positions is where they are (or there
    /// is none to record): every move of the positions updated it.
    #[cfg(test)]
    pub(crate) fn position_hint_is_current(&self, id: AccountId) -> bool {
        let Some(a) = self.account(id) else { return false };
        let expected = (!a.positions.is_empty())
            .then(|| (a.positions.as_ptr() as usize, std::mem::size_of_val(a.positions.as_slice())));
        // Both the hints kept up as the positions moved and those a restore builds afresh.
        self.hints.location(id) == expected && PositionHints::of(&self.accounts).location(id) == expected
    }

    /// True when account `id`'s table of where its positions are says what its positions say.
    #[cfg(test)]
    pub(crate) fn position_slots_are_current(&self, id: AccountId) -> bool {
        self.account(id).is_some_and(|a| a.slots == PositionSlots::of(&a.positions))
    }

    /// Starts loading account `id`'s positions into the cache through its record, for an
    /// account whose positions' address is not recorded by id (a clone's, or an id beyond the
    /// recorded range; for the others [`Clearinghouse::prefetch_account`] did it already).
    /// Reads the account record, so it pays when [`Clearinghouse::prefetch_account`] ran for
    /// the same account a little earlier. Up to 16 lines: the positions of an account in seven
    /// markets, every one of which a margin check reads.
    #[inline]
    pub fn prefetch_positions(&self, id: AccountId) {
        if self.hints.covers(id) {
            return;
        }
        if let Some(a) = self.account(id) {
            let bytes = std::mem::size_of_val(a.positions.as_slice());
            keel_types::prefetch_bytes(a.positions.as_ptr(), bytes, 16);
        }
    }

    /// All accounts, in the order they were opened.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// Fees collected minus rebates paid.
    pub fn fees_collected(&self) -> Money {
        self.fees_collected
    }

    /// Settlement-asset deposits minus withdrawals since the start.
    pub fn net_deposits(&self) -> i128 {
        self.net_deposits
    }

    /// Settlement money received from pools outside the clearinghouse (the insurance fund) minus
    /// money paid out to them, since the start (see [`Clearinghouse::transfer_settlement`]).
    pub fn external_net(&self) -> i128 {
        self.external_net
    }

    /// Moves settlement money between an account's balance and a pool outside the clearinghouse:
    /// a positive amount credits the account, a negative one debits it. The insurance fund's
    /// inflows and outflows go through here, so `settlement_held − Σ cost bases = net_deposits +
    /// external_net` holds exactly. Returns the new balance.
    pub fn transfer_settlement(&mut self, account: AccountId, amount: Money) -> Result<Money, MarginError> {
        let acc = self.account_index(account)?;
        let balance = self.accounts[acc].balance.checked_add(amount)?;
        self.accounts[acc].balance = balance;
        self.external_net += i128::from(amount.0);
        self.changed(acc);
        Ok(balance)
    }

    /// Σ over all open positions of their signed cost basis, exactly (the refinement of value
    /// conservation while positions are open: see `docs/margin.md` §10).
    pub fn total_cost_basis(&self) -> i128 {
        self.accounts.iter().flat_map(|a| &a.positions).map(|p| i128::from(p.cost.0)).sum()
    }

    /// Settlement asset held across all accounts (balances and isolated margins) plus fees:
    /// equals [`Clearinghouse::net_deposits`] after every operation.
    pub fn settlement_held(&self) -> i128 {
        let held: i128 = self
            .accounts
            .iter()
            .map(|a| {
                i128::from(a.balance.0)
                    + a.positions.iter().map(|p| i128::from(p.isolated_margin.0)).sum::<i128>()
            })
            .sum();
        held + i128::from(self.fees_collected.0)
    }

    // ----- lookups -------------------------------------------------------------------------

    #[inline]
    pub(crate) fn slot(&self, market: MarketId) -> Result<usize, MarginError> {
        self.market_slots.get(market).map(|s| s as usize).ok_or(MarginError::UnknownMarket(market))
    }

    #[inline]
    pub(crate) fn account_index(&self, id: AccountId) -> Result<usize, MarginError> {
        self.account_slots.get(id).map(|s| s as usize).ok_or(MarginError::UnknownAccount(id))
    }

    /// Records that account `acc` changed: the maintenance index re-indexes it, and its cached
    /// valuation is forgotten. Every change to an account's money, positions or margin settings
    /// goes through here.
    #[inline]
    fn changed(&mut self, acc: usize) {
        self.index.touch(acc);
        self.accounts[acc].summary.clear();
    }

    /// Starts a new valuation epoch: a mark or a collateral price moved, so every account's
    /// cached totals are stale.
    #[inline]
    fn new_epoch(&mut self) {
        self.epoch += 1;
    }

    /// Sets the mark of market `slot`. A mark that did not change costs nothing; one that did
    /// starts a new epoch (the cached shares of the market's positions, tagged with the mark they
    /// were computed at, no longer match it; see `valuation`) and has the maintenance index look
    /// at the market again.
    fn move_mark(&mut self, slot: usize, mark: Price) {
        if self.markets[slot].mark == Some(mark) {
            return;
        }
        self.new_epoch();
        let m = &mut self.markets[slot];
        m.mark = Some(mark);
        self.index.mark_moved(slot);
    }

    fn collateral_asset_mut(&mut self, asset: AssetId) -> Result<&mut Asset, MarginError> {
        if asset == AssetId::SETTLEMENT {
            return Err(MarginError::InvalidConfig("the settlement asset is the unit of account"));
        }
        self.assets.get_mut(usize::from(asset.0)).ok_or(MarginError::UnknownAsset(asset))
    }

    /// Position index in the account, inserting a flat one with the market's default leverage.
    fn position_or_insert(&mut self, acc: usize, slot: usize) -> usize {
        let existing = self.accounts[acc].position_index(slot as u32);
        self.position_at_or_insert(acc, slot, existing)
    }

    /// `existing`, the position's index as the caller just found it, or else the index of a
    /// flat position inserted with the market's default leverage: the hot paths look the
    /// position up once, before they know whether what they book succeeds.
    #[inline]
    fn position_at_or_insert(&mut self, acc: usize, slot: usize, existing: Option<usize>) -> usize {
        if let Some(i) = existing {
            return i;
        }
        let m = &self.markets[slot];
        let p = Position::new(m.config.id, slot as u32, m.config.default_leverage);
        let a = &mut self.accounts[acc];
        a.positions.push(p);
        a.slots.record(slot as u32, a.positions.len() - 1);
        // The push may have moved the positions.
        self.hints.record(a.id, &a.positions);
        a.positions.len() - 1
    }

    // ----- deposits and withdrawals ----------------------------------------------------------

    /// Credits an amount of an asset (settlement: money units; collateral: the asset's units).
    pub fn deposit(&mut self, account: AccountId, asset: AssetId, amount: i64) -> Result<(), MarginError> {
        if amount <= 0 {
            return Err(MarginError::NotPositive("deposit amount"));
        }
        let acc = self.account_index(account)?;
        if usize::from(asset.0) >= self.assets.len() {
            return Err(MarginError::UnknownAsset(asset));
        }
        let a = &mut self.accounts[acc];
        if asset == AssetId::SETTLEMENT {
            let balance = a.balance.checked_add(Money(amount))?;
            if balance > Money::DEPOSIT_CEILING {
                return Err(MarginError::AboveDepositCeiling { ceiling: Money::DEPOSIT_CEILING });
            }
            a.balance = balance;
            self.net_deposits += i128::from(amount);
        } else if let Some(h) = a.collateral.iter_mut().find(|h| h.asset == asset) {
            h.amount = h.amount.checked_add(amount).ok_or(ArithmeticError::Overflow)?;
        } else {
            a.collateral.push(Holding { asset, amount });
        }
        self.changed(acc);
        Ok(())
    }

    /// Debits an amount of an asset, only if the account still covers its initial margin
    /// afterwards with equity that counts unrealized profit as nothing (it is not yet money).
    pub fn withdraw(&mut self, account: AccountId, asset: AssetId, amount: i64) -> Result<(), MarginError> {
        if amount <= 0 {
            return Err(MarginError::NotPositive("withdrawal amount"));
        }
        let acc = self.account_index(account)?;
        if usize::from(asset.0) >= self.assets.len() {
            return Err(MarginError::UnknownAsset(asset));
        }
        let before = self.accounts[acc].clone();
        {
            let a = &mut self.accounts[acc];
            let held = if asset == AssetId::SETTLEMENT {
                a.balance.0
            } else {
                a.collateral.iter().find(|h| h.asset == asset).map_or(0, |h| h.amount)
            };
            if held < amount {
                return Err(MarginError::InsufficientBalance { asset, held, requested: amount });
            }
            if asset == AssetId::SETTLEMENT {
                a.balance = Money(held - amount);
            } else if let Some(h) = a.collateral.iter_mut().find(|h| h.asset == asset) {
                h.amount = held - amount;
            }
            // Valued below as if withdrawn; a refusal restores `before`, whose cache is empty.
            a.summary.clear();
        }
        let verdict = self.summary_at(acc, None).and_then(|s| {
            let free = s.realized_equity.checked_sub(s.initial_margin)?;
            if free.is_negative() {
                Err(MarginError::InsufficientMargin { shortfall: free.checked_neg()? })
            } else {
                Ok(())
            }
        });
        match verdict {
            Ok(()) => {
                let a = &mut self.accounts[acc];
                a.collateral.retain(|h| h.amount != 0);
                if asset == AssetId::SETTLEMENT {
                    self.net_deposits -= i128::from(amount);
                }
                self.changed(acc);
                Ok(())
            }
            Err(e) => {
                // The copy's positions live elsewhere.
                self.hints.record(before.id, &before.positions);
                self.accounts[acc] = before;
                Err(e)
            }
        }
    }

    // ----- leverage, margin mode, isolated margin ---------------------------------------------

    /// Sets the account's leverage in a market: at least 1, at most what the risk tier of the
    /// position (with its open orders filled) allows, and only if the account can still afford
    /// the margin that leverage implies.
    pub fn set_leverage(
        &mut self,
        account: AccountId,
        market: MarketId,
        leverage: u32,
    ) -> Result<(), MarginError> {
        let acc = self.account_index(account)?;
        let slot = self.slot(market)?;
        let inserted = self.accounts[acc].position_index(slot as u32).is_none();
        let idx = self.position_or_insert(acc, slot);
        let result = self.try_set_leverage(acc, slot, idx, leverage);
        if result.is_err() && inserted {
            let a = &mut self.accounts[acc];
            if let Some(p) = a.positions.pop() {
                a.slots.forget(p.slot);
            }
            self.hints.record(a.id, &a.positions);
        }
        result
    }

    fn try_set_leverage(
        &mut self,
        acc: usize,
        slot: usize,
        idx: usize,
        leverage: u32,
    ) -> Result<(), MarginError> {
        let m = &self.markets[slot];
        let p = &self.accounts[acc].positions[idx];
        let long_worst = abs(p.size.0.checked_add(p.buys.qty.0).ok_or(ArithmeticError::Overflow)?)?;
        let short_worst = abs(p.size.0.checked_sub(p.sells.qty.0).ok_or(ArithmeticError::Overflow)?)?;
        let worst = long_worst.max(short_worst);
        let max = if worst == 0 {
            m.config.tiers.tiers()[0].max_leverage
        } else {
            m.config.tiers.max_leverage_for(Money(notional(m.mark()?, worst, m.k)?))
        };
        if leverage == 0 || leverage > max {
            return Err(MarginError::LeverageOutOfRange { requested: leverage, max });
        }
        let old = p.leverage;
        // Initial margin follows leverage.
        self.accounts[acc].position_mut(idx).set_leverage(leverage);
        if leverage < old {
            let check = self.summary_at(acc, None).and_then(|s| {
                let free = s.available()?;
                if free.is_negative() {
                    Err(MarginError::InsufficientMargin { shortfall: free.checked_neg()? })
                } else {
                    Ok(())
                }
            });
            if let Err(e) = check {
                self.accounts[acc].position_mut(idx).set_leverage(old);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Switches a market between cross and isolated margin; only while flat without open orders.
    pub fn set_margin_mode(
        &mut self,
        account: AccountId,
        market: MarketId,
        mode: MarginMode,
    ) -> Result<(), MarginError> {
        let acc = self.account_index(account)?;
        let slot = self.slot(market)?;
        if let Some(i) = self.accounts[acc].position_index(slot as u32) {
            if !self.accounts[acc].positions[i].is_idle() {
                return Err(MarginError::ModeChangeWithExposure(market));
            }
        }
        let idx = self.position_or_insert(acc, slot);
        self.accounts[acc].position_mut(idx).mode = mode;
        self.changed(acc);
        Ok(())
    }

    /// Moves settlement balance into an isolated position's margin.
    pub fn add_isolated_margin(
        &mut self,
        account: AccountId,
        market: MarketId,
        amount: Money,
    ) -> Result<(), MarginError> {
        if !amount.is_positive() {
            return Err(MarginError::NotPositive("margin amount"));
        }
        let (acc, idx) = self.isolated_position(account, market)?;
        let summary = self.summary_at(acc, None)?;
        let free =
            summary.realized_equity.checked_sub(summary.initial_margin)?.min(self.accounts[acc].balance);
        if free < amount {
            return Err(MarginError::InsufficientMargin {
                shortfall: amount.checked_sub(free.max(Money::ZERO))?,
            });
        }
        let a = &mut self.accounts[acc];
        let new_margin = a.positions[idx].isolated_margin.checked_add(amount)?;
        a.balance = a.balance.checked_sub(amount)?;
        a.position_mut(idx).isolated_margin = new_margin;
        self.changed(acc);
        Ok(())
    }

    /// Moves margin out of an isolated position back to the balance, only while what remains
    /// (counting unrealized profit as nothing) still covers the position's initial margin.
    pub fn remove_isolated_margin(
        &mut self,
        account: AccountId,
        market: MarketId,
        amount: Money,
    ) -> Result<(), MarginError> {
        if !amount.is_positive() {
            return Err(MarginError::NotPositive("margin amount"));
        }
        let (acc, idx) = self.isolated_position(account, market)?;
        let p = &self.accounts[acc].positions[idx];
        let m = &self.markets[p.slot as usize];
        let remaining = p.isolated_margin.checked_sub(amount)?;
        let required = if p.size.0 == 0 {
            Money::ZERO
        } else {
            let mark = m.mark()?;
            p.initial_margin(p.margin_notional(mark, m.k, m.config.basis)?)?
        };
        let upnl = if p.size.0 == 0 { Money::ZERO } else { p.unrealized_pnl(m.mark()?, m.k)? };
        let backing = remaining.checked_add(upnl.min(Money::ZERO))?;
        if remaining.is_negative() || backing < required {
            let shortfall = required.checked_sub(backing)?.max(amount.checked_sub(p.isolated_margin)?);
            return Err(MarginError::InsufficientMargin { shortfall });
        }
        let a = &mut self.accounts[acc];
        a.balance = a.balance.checked_add(amount)?;
        a.position_mut(idx).isolated_margin = remaining;
        self.changed(acc);
        Ok(())
    }

    fn isolated_position(&self, account: AccountId, market: MarketId) -> Result<(usize, usize), MarginError> {
        let acc = self.account_index(account)?;
        let slot = self.slot(market)? as u32;
        let idx = self.accounts[acc].position_index(slot).ok_or(MarginError::NotIsolated(market))?;
        if self.accounts[acc].positions[idx].mode != MarginMode::Isolated {
            return Err(MarginError::NotIsolated(market));
        }
        Ok((acc, idx))
    }

    // ----- open orders and the pre-trade check ---------------------------------------------------

    /// Registers a resting order so that it reserves initial margin.
    pub fn add_open_order(
        &mut self,
        account: AccountId,
        market: MarketId,
        side: Side,
        qty: Qty,
        price: Price,
    ) -> Result<(), MarginError> {
        let acc = self.account_index(account)?;
        let slot = self.slot(market)?;
        let m = &self.markets[slot];
        if !qty.is_positive() {
            return Err(MarginError::NotPositive("order quantity"));
        }
        m.check_price(price)?;
        let n = Money(notional(price, qty.0, m.k)?);
        let existing = self.accounts[acc].position_index(slot as u32);
        let current = match existing {
            Some(i) => {
                let p = &self.accounts[acc].positions[i];
                if side == Side::Buy { p.buys } else { p.sells }
            }
            None => OpenOrders::default(),
        };
        let updated =
            OpenOrders { qty: current.qty.checked_add(qty)?, notional: current.notional.checked_add(n)? };
        let idx = self.position_at_or_insert(acc, slot, existing);
        let p = self.accounts[acc].position_mut(idx);
        match side {
            Side::Buy => p.buys = updated,
            Side::Sell => p.sells = updated,
        }
        Ok(())
    }

    /// Unregisters (part of) a resting order that was cancelled or expired.
    pub fn remove_open_order(
        &mut self,
        account: AccountId,
        market: MarketId,
        side: Side,
        qty: Qty,
        price: Price,
    ) -> Result<(), MarginError> {
        let acc = self.account_index(account)?;
        let slot = self.slot(market)?;
        let k = self.markets[slot].k;
        let idx =
            self.accounts[acc].position_index(slot as u32).ok_or(MarginError::OpenOrderUnderflow(market))?;
        let a = &mut self.accounts[acc];
        let updated = shrink_orders(&a.positions[idx], side, qty, price, k, market)?;
        let p = a.position_mut(idx);
        *match side {
            Side::Buy => &mut p.buys,
            Side::Sell => &mut p.sells,
        } = updated;
        Ok(())
    }

    /// Decides whether an order may enter the book: accept, or reject with the exact shortfall.
    ///
    /// The order is added to its side's reservation; if that does not raise the market's
    /// reservation (it only reduces the position) it is accepted outright. Otherwise the risk
    /// limits are checked on the worst-case position, and the account must cover its initial
    /// margin (positions at mark + all reservations) plus the taker fee on the order.
    pub fn pre_trade_check(&self, account: AccountId, order: &OrderIntent) -> Result<PreTrade, MarginError> {
        let acc = self.account_index(account)?;
        let slot = self.slot(order.market)?;
        let market = &self.markets[slot];
        if !order.qty.is_positive() {
            return Err(MarginError::NotPositive("order quantity"));
        }
        market.check_price(order.price)?;
        let mark = market.mark()?;
        let k = market.k;
        let order_notional = Money(notional(order.price, order.qty.0, k)?);

        // Only the order's own market is re-valued here; the rest of the account is valued last,
        // and only if the order adds to what the account must reserve.
        let a = &self.accounts[acc];
        let target = a.position_index(slot as u32).map(|i| &a.positions[i]);
        let target_reserved = match target {
            Some(p) => p.order_reservation(mark, k)?,
            None => Money::ZERO,
        };

        let (size, leverage, lev, mut buys, mut sells) = match target {
            Some(p) => (p.size.0, p.leverage, p.lev, p.buys, p.sells),
            None => (
                0,
                market.config.default_leverage,
                Divisor::leverage(market.config.default_leverage),
                OpenOrders::default(),
                OpenOrders::default(),
            ),
        };
        let side_orders = match order.side {
            Side::Buy => &mut buys,
            Side::Sell => &mut sells,
        };
        *side_orders = OpenOrders {
            qty: side_orders.qty.checked_add(order.qty)?,
            notional: side_orders.notional.checked_add(order_notional)?,
        };
        let (reserved_after, _) = reservation(size, buys, sells, mark, k, lev)?;
        if reserved_after <= target_reserved {
            return Ok(PreTrade::Accept);
        }

        let worst = match order.side {
            Side::Buy => size.checked_add(buys.qty.0),
            Side::Sell => size.checked_sub(sells.qty.0),
        }
        .ok_or(ArithmeticError::Overflow)?;
        let worst = abs(worst)?;
        if worst > market.config.max_position.0 {
            return Ok(PreTrade::Reject(Rejection::PositionLimit {
                size: Qty(worst),
                max: market.config.max_position,
            }));
        }
        let worst_notional = Money(notional(order.price.max(mark), worst, k)?);
        let max_notional = market.config.tiers.max_notional_at_leverage(leverage).unwrap_or(Money::ZERO);
        if worst_notional > max_notional {
            return Ok(PreTrade::Reject(Rejection::RiskLimit { notional: worst_notional, max_notional }));
        }

        let fee = market.config.taker_fee.of(order_notional, Rounding::Ceil)?.max(Money::ZERO);
        let extra = reserved_after.checked_sub(target_reserved)?.checked_add(fee)?;
        // A floor under available margin settles almost every order of a funded account without
        // re-pricing its positions; an order near the edge gets the exact valuation (usually
        // from the cache), which also gives the exact shortfall. An error in the floor is left
        // for the exact valuation to report.
        if matches!(self.available_floor(acc), Ok(floor) if floor >= i128::from(extra.0)) {
            return Ok(PreTrade::Accept);
        }
        let available_after = self.summary_at(acc, None)?.available()?.checked_sub(extra)?;
        if available_after.is_negative() {
            return Ok(PreTrade::Reject(Rejection::InsufficientMargin {
                shortfall: available_after.checked_neg()?,
            }));
        }
        Ok(PreTrade::Accept)
    }

    // ----- fills ---------------------------------------------------------------------------------

    /// Books one side of a trade: position, realized PnL, fee, isolated margin, and for a maker
    /// the shrinking of its open-order reservation. All-or-nothing.
    ///
    /// Realized PnL and fees settle into the settlement balance; an isolated position's margin is
    /// locked from the balance when it opens (fill notional / leverage, rounded up) and released
    /// to it pro rata when it reduces.
    pub fn apply_fill(&mut self, fill: &Fill) -> Result<FillOutcome, MarginError> {
        self.book_fill(fill, None)
    }

    /// Books one side of a trade like [`Clearinghouse::apply_fill`] but without a trading fee:
    /// for the closing side of a liquidation (whose fee goes to the insurance fund instead) and
    /// for both sides of an auto-deleveraging trade, which venues do not charge.
    pub fn apply_fill_without_fee(&mut self, fill: &Fill) -> Result<FillOutcome, MarginError> {
        self.book_fill(fill, Some(Rate::ZERO))
    }

    fn book_fill(&mut self, fill: &Fill, fee_override: Option<Rate>) -> Result<FillOutcome, MarginError> {
        let acc = self.account_index(fill.account)?;
        let slot = self.slot(fill.market)?;
        let m = &self.markets[slot];
        if !fill.qty.is_positive() {
            return Err(MarginError::NotPositive("fill quantity"));
        }
        m.check_price(fill.price)?;
        let k = m.k;
        let fee_rate = match (fee_override, fill.liquidity) {
            (Some(rate), _) => rate,
            (None, Liquidity::Maker) => m.config.maker_fee,
            (None, Liquidity::Taker) => m.config.taker_fee,
        };
        let fill_notional = Money(notional(fill.price, fill.qty.0, k)?);
        let fee = fee_rate.of(fill_notional, Rounding::Ceil)?;
        let fees_collected = self.fees_collected.checked_add(fee)?;

        let a = &self.accounts[acc];
        let existing = a.position_index(slot as u32);
        // A market the account has never touched is evaluated on a fresh slot, inserted only on
        // success, so a refused fill leaves no trace.
        let fresh;
        let p = match existing {
            Some(i) => &a.positions[i],
            None => {
                fresh = Position::new(m.config.id, slot as u32, m.config.default_leverage);
                &fresh
            }
        };
        let effect = p.fill_effect(fill.side, fill.qty, fill.price, k)?;
        let orders = match fill.liquidity {
            Liquidity::Maker => Some(shrink_orders(p, fill.side, fill.qty, fill.price, k, fill.market)?),
            Liquidity::Taker => None,
        };
        let isolated_margin = p.isolated_margin.checked_add(effect.isolated_delta)?;
        let balance =
            a.balance.checked_add(effect.realized)?.checked_sub(fee)?.checked_sub(effect.isolated_delta)?;
        let realized_total = p.realized_pnl.checked_add(effect.realized)?;
        let fees_total = p.fees_paid.checked_add(fee)?;

        let idx = self.position_at_or_insert(acc, slot, existing);
        let a = &mut self.accounts[acc];
        a.balance = balance;
        let p = a.position_mut(idx);
        p.size = effect.size;
        p.cost = effect.cost;
        p.isolated_margin = isolated_margin;
        p.realized_pnl = realized_total;
        p.fees_paid = fees_total;
        if let Some(o) = orders {
            match fill.side {
                Side::Buy => p.buys = o,
                Side::Sell => p.sells = o,
            }
        }
        self.fees_collected = fees_collected;
        // Only this position changed: the index re-prices it alone if the others' floors hold.
        self.index.touch_fill(acc);
        self.accounts[acc].summary.clear();
        Ok(FillOutcome {
            realized_pnl: effect.realized,
            fee,
            closed: effect.closed,
            size: effect.size,
            balance,
        })
    }

    // ----- prices ----------------------------------------------------------------------------------

    /// Records the index (spot) price; starts the funding clock at the next interval boundary.
    pub fn set_index_price(
        &mut self,
        market: MarketId,
        price: Price,
        now_ms: u64,
    ) -> Result<(), MarginError> {
        let slot = self.slot(market)?;
        let m = &mut self.markets[slot];
        m.check_price(price)?;
        m.index = Some(price);
        if m.next_funding_ms.is_none() {
            m.next_funding_ms = Some(m.boundary_after(now_ms));
        }
        Ok(())
    }

    /// Records the last trade price for the mark rule.
    pub fn record_trade(&mut self, market: MarketId, price: Price) -> Result<(), MarginError> {
        let slot = self.slot(market)?;
        let m = &mut self.markets[slot];
        m.check_price(price)?;
        m.last_trade = Some(price);
        Ok(())
    }

    /// Records one sample of the book's impact bid and ask (the average fill price of the impact
    /// margin notional on each side): a premium-index sample for funding and a basis sample for
    /// the mark.
    pub fn sample_impact_prices(
        &mut self,
        market: MarketId,
        impact_bid: Price,
        impact_ask: Price,
    ) -> Result<Rate, MarginError> {
        let slot = self.slot(market)?;
        let m = &mut self.markets[slot];
        m.check_price(impact_bid)?;
        m.check_price(impact_ask)?;
        let index = m.index.ok_or(MarginError::NoIndexPrice(market))?;
        let premium = premium_index(index, impact_bid, impact_ask)?;
        m.premiums.push(premium);
        m.basis.push(impact_bid.0 + impact_ask.0 - 2 * index.0);
        Ok(premium)
    }

    /// Recomputes the mark price by the market's rule, clamped to the market's price range.
    pub fn update_mark_price(&mut self, market: MarketId, now_ms: u64) -> Result<Price, MarginError> {
        let slot = self.slot(market)?;
        let m = &mut self.markets[slot];
        let index = m.index.ok_or(MarginError::NoIndexPrice(market))?;
        let next = m.next_funding_ms.unwrap_or_else(|| m.boundary_after(now_ms));
        let inputs = MarkInputs {
            index,
            last_funding_rate: m.last_funding_rate,
            ms_until_funding: next.saturating_sub(now_ms),
            interval_ms: m.config.funding.interval_ms,
            basis_price: m.basis.basis_price(index)?,
            last_trade: m.last_trade,
        };
        let mark = Price(mark_price(m.config.mark.method, &inputs)?.0.clamp(1, m.config.max_price.0));
        self.move_mark(slot, mark);
        Ok(mark)
    }

    /// Sets the mark price directly (a venue's own mark feed, a replay, a stress scenario).
    pub fn set_mark_price(&mut self, market: MarketId, price: Price) -> Result<(), MarginError> {
        let slot = self.slot(market)?;
        let m = &mut self.markets[slot];
        m.check_price(price)?;
        self.move_mark(slot, price);
        Ok(())
    }

    /// The market's current mark price.
    pub fn mark_price(&self, market: MarketId) -> Result<Price, MarginError> {
        self.markets[self.slot(market)?].mark()
    }

    // ----- funding ---------------------------------------------------------------------------------

    /// The funding rate the next settlement would apply, from the samples so far.
    pub fn predicted_funding_rate(&self, market: MarketId) -> Result<Rate, MarginError> {
        let m = &self.markets[self.slot(market)?];
        let cfg = &m.config.funding;
        Ok(funding_rate(m.premiums.average(cfg.averaging)?, cfg)?)
    }

    /// Settles funding for the interval: longs pay shorts at a positive rate, the payments sum to
    /// exactly zero (see [`distribute_funding`]). Cross positions pay from and receive into the
    /// balance, isolated ones their fenced margin. Resets the premium samples.
    pub fn settle_funding(
        &mut self,
        market: MarketId,
        now_ms: u64,
    ) -> Result<FundingSettlement, MarginError> {
        let slot = self.slot(market)?;
        let m = &self.markets[slot];
        let next = m.next_funding_ms.ok_or(MarginError::NoIndexPrice(market))?;
        if now_ms < next {
            return Err(MarginError::FundingNotDue { market, next_ms: next });
        }
        let cfg = m.config.funding;
        let rate = funding_rate(m.premiums.average(cfg.averaging)?, &cfg)?;
        let price = match cfg.notional {
            FundingNotional::Mark => m.mark()?,
            FundingNotional::Index => m.index.ok_or(MarginError::NoIndexPrice(market))?,
        };
        let mut holders = Vec::new();
        let mut places = Vec::new();
        for (ai, a) in self.accounts.iter().enumerate() {
            if let Some(pi) = a.position_index(slot as u32) {
                let size = a.positions[pi].size.0;
                if size != 0 {
                    holders.push((a.id, size));
                    places.push((a.id, ai, pi));
                }
            }
        }
        let payments = distribute_funding(market, &holders, price, m.k, rate)?;
        places.sort_by_key(|p| p.0);
        // Compute every new amount first so a failure leaves the state untouched.
        let mut updates = Vec::with_capacity(payments.len());
        for (&(id, amount), &(pid, ai, pi)) in payments.iter().zip(&places) {
            debug_assert_eq!(id, pid);
            let p = &self.accounts[ai].positions[pi];
            let (target, current) = match p.mode {
                MarginMode::Cross => (None, self.accounts[ai].balance),
                MarginMode::Isolated => (Some(pi), p.isolated_margin),
            };
            let funding = p.funding.checked_add(amount)?;
            updates.push((ai, pi, target, current.checked_add(amount)?, funding));
        }
        for (ai, pi, target, value, funding) in updates {
            self.changed(ai);
            let a = &mut self.accounts[ai];
            match target {
                None => a.balance = value,
                Some(i) => a.position_mut(i).isolated_margin = value,
            }
            a.position_mut(pi).funding = funding;
        }
        let m = &mut self.markets[slot];
        m.premiums = Default::default();
        m.last_funding_rate = rate;
        m.next_funding_ms = Some(m.boundary_after(now_ms));
        Ok(FundingSettlement { market, rate, price, payments })
    }

    // ----- margin state ------------------------------------------------------------------------

    /// Cross-margin totals of an account at the current marks.
    pub fn margin_summary(&self, account: AccountId) -> Result<MarginSummary, MarginError> {
        self.summary_at(self.account_index(account)?, None)
    }

    /// Cross totals of account `acc` at the current marks, or with one market's mark replaced
    /// (for what-if evaluation). At the current marks the answer comes from the caches (see
    /// `valuation`): the account's totals if nothing moved since they were computed, otherwise
    /// the positions' shares, re-pricing only those whose market moved.
    pub(crate) fn summary_at(
        &self,
        acc: usize,
        mark_override: Option<(usize, Price)>,
    ) -> Result<MarginSummary, MarginError> {
        let a = &self.accounts[acc];
        if mark_override.is_some() {
            return self.summary_of(a, mark_override);
        }
        if let Some(cached) = a.summary.get(self.epoch) {
            debug_assert_eq!(Ok(cached), self.summary_of(a, None), "stale cached valuation of {:?}", a.id);
            return Ok(cached);
        }
        let mut s = self.collateral_totals(a)?;
        for p in &a.positions {
            if p.is_idle() {
                continue;
            }
            self.share_of(p)?.add_to(&mut s)?;
        }
        debug_assert_eq!(Ok(s), self.summary_of(a, None), "stale cached share in {:?}", a.id);
        a.summary.set(self.epoch, s);
        Ok(s)
    }

    /// A position's share of its account's cross totals at the current marks, from its cache
    /// while its market's mark has not moved, else computed and cached.
    #[inline]
    pub(crate) fn share_of(&self, p: &Position) -> Result<Share, MarginError> {
        let m = &self.markets[p.slot as usize];
        let mark = m.mark()?;
        if let Some(share) = p.share.get(mark) {
            return Ok(share);
        }
        let share = Share::of(p, mark, m.k, m.config.basis, &m.config.tiers)?;
        p.share.set(mark, share);
        Ok(share)
    }

    /// A floor under account `acc`'s available margin (equity − initial margin) at the current
    /// marks: exact from a current cached valuation; otherwise each position contributes its
    /// cached share less the most that share can have drifted since its mark moved
    /// ([`Share::drift`]), and only a position with no cached share at all is re-priced. When
    /// nothing drifted the sum is the exact valuation, and it is cached as such.
    ///
    /// This is what lets the pre-trade check accept an order that fits with room to spare
    /// without re-pricing every position of the account. The floor is never above the exact
    /// value (the property test `available_floor_never_exceeds_available` checks it after random
    /// changes and mark moves), so an order it accepts the exact check accepts too.
    pub(crate) fn available_floor(&self, acc: usize) -> Result<i128, MarginError> {
        let a = &self.accounts[acc];
        if let Some(cached) = a.summary.get(self.epoch) {
            return Ok(i128::from(cached.equity.0) - i128::from(cached.initial_margin.0));
        }
        // Sums in `i64` and `u64` with every step checked: half the instructions per position
        // of `i128`. An account whose numbers leave that range gets its exact valuation, which
        // is never below the floor and reports any overflow itself.
        let mut available = self.collateral_totals(a)?.equity.0;
        let mut drift: u64 = 0;
        for p in &a.positions {
            if p.is_idle() {
                continue;
            }
            let m = &self.markets[p.slot as usize];
            let mark = m.mark()?;
            let share = match p.share.last() {
                Some((at, share)) if at == mark => share,
                Some((at, share)) => {
                    match Share::drift(p, m.k, at, mark).and_then(|d| drift.checked_add(d)) {
                        Some(total) => {
                            drift = total;
                            share
                        }
                        None => return self.valued_available(acc),
                    }
                }
                None => self.share_of(p)?,
            };
            match available.checked_add(share.upnl.0).and_then(|x| x.checked_sub(share.initial.0)) {
                Some(x) => available = x,
                None => return self.valued_available(acc),
            }
        }
        if drift == 0 {
            return self.valued_available(acc);
        }
        let floor = i128::from(available) - i128::from(drift);
        debug_assert!(
            self.summary_of(a, None).map_or(true, |s| floor <= i128::from(s.equity.0 - s.initial_margin.0)),
            "available floor of {:?} above its available margin",
            a.id
        );
        Ok(floor)
    }

    /// Equity − initial margin from the account's exact valuation: cached, so the account's next
    /// check (an account quoting between two marks) costs nothing. When every share was already
    /// exact, `summary_at` only adds them up.
    fn valued_available(&self, acc: usize) -> Result<i128, MarginError> {
        self.summary_at(acc, None).map(|s| i128::from(s.equity.0) - i128::from(s.initial_margin.0))
    }

    /// Balance and haircut collateral of an account: the totals before any position is added.
    fn collateral_totals(&self, a: &Account) -> Result<MarginSummary, MarginError> {
        let mut s = MarginSummary::default();
        for h in &a.collateral {
            s.collateral_value = s
                .collateral_value
                .checked_add(self.assets[usize::from(h.asset.0)].margin_value(h.amount)?)?;
        }
        s.equity = a.balance.checked_add(s.collateral_value)?;
        s.realized_equity = s.equity;
        Ok(s)
    }

    /// Cross totals of an account value (possibly a what-if copy) at the current marks or with
    /// one market's mark replaced, computed afresh: no cache is read or written.
    pub(crate) fn summary_of(
        &self,
        a: &Account,
        mark_override: Option<(usize, Price)>,
    ) -> Result<MarginSummary, MarginError> {
        let mut s = self.collateral_totals(a)?;
        for p in &a.positions {
            if p.is_idle() {
                continue;
            }
            let m = &self.markets[p.slot as usize];
            let mark = match mark_override {
                Some((slot, price)) if slot == p.slot as usize => price,
                _ => m.mark()?,
            };
            Share::of(p, mark, m.k, m.config.basis, &m.config.tiers)?.add_to(&mut s)?;
        }
        Ok(s)
    }

    /// Cross totals of an account as if `market` were marked at `mark`, others unchanged.
    pub fn margin_summary_at(
        &self,
        account: AccountId,
        market: MarketId,
        mark: Price,
    ) -> Result<MarginSummary, MarginError> {
        self.summary_at(self.account_index(account)?, Some((self.slot(market)?, mark)))
    }

    /// Equity and maintenance margin of an isolated position at `mark`.
    pub fn isolated_equity_at(
        &self,
        account: AccountId,
        market: MarketId,
        mark: Price,
    ) -> Result<(Money, Money), MarginError> {
        let (acc, idx) = self.isolated_position(account, market)?;
        let p = &self.accounts[acc].positions[idx];
        let m = &self.markets[p.slot as usize];
        let equity = p.isolated_margin.checked_add(p.unrealized_pnl(mark, m.k)?)?;
        let mm = p.maintenance_margin(p.margin_notional(mark, m.k, m.config.basis)?, &m.config.tiers)?;
        Ok((equity, mm))
    }

    /// The solver for one position with everything else held at current marks.
    pub(crate) fn solver(&self, acc: usize, idx: usize) -> Result<Option<Solver<'_>>, MarginError> {
        self.solver_with(acc, idx, None)
    }

    /// [`Clearinghouse::solver`] given the account's cross totals at current marks, when the
    /// caller has them already (re-indexing solves every position of an account against one
    /// summary instead of recomputing it per position).
    pub(crate) fn solver_with(
        &self,
        acc: usize,
        idx: usize,
        cross: Option<&MarginSummary>,
    ) -> Result<Option<Solver<'_>>, MarginError> {
        let p = &self.accounts[acc].positions[idx];
        if p.size.0 == 0 {
            return Ok(None);
        }
        let m = &self.markets[p.slot as usize];
        let mark = m.mark()?;
        let (backing, other) = match p.mode {
            MarginMode::Isolated => (i128::from(p.isolated_margin.0), 0),
            MarginMode::Cross => {
                let s = match cross {
                    Some(s) => *s,
                    None => self.summary_at(acc, None)?,
                };
                let own_mm =
                    p.maintenance_margin(p.margin_notional(mark, m.k, m.config.basis)?, &m.config.tiers)?;
                let own_upnl = p.unrealized_pnl(mark, m.k)?;
                (
                    i128::from(s.equity.0) - i128::from(own_upnl.0),
                    i128::from(s.maintenance_margin.0) - i128::from(own_mm.0),
                )
            }
        };
        Ok(Some(Solver {
            size: p.size.0,
            cost: p.cost.0,
            k: m.k,
            backing,
            other_maintenance: other,
            tiers: &m.config.tiers,
            basis: m.config.basis,
            max_price: m.config.max_price.0,
        }))
    }

    /// Liquidation price of the account's position in `market` (see the liquidation module).
    pub fn liquidation_price(
        &self,
        account: AccountId,
        market: MarketId,
    ) -> Result<Option<Price>, MarginError> {
        match self.position_solver(account, market)? {
            Some(s) => Ok(s.liquidation_price()?),
            None => Ok(None),
        }
    }

    /// Bankruptcy price of the account's position in `market`.
    pub fn bankruptcy_price(
        &self,
        account: AccountId,
        market: MarketId,
    ) -> Result<Option<Price>, MarginError> {
        match self.position_solver(account, market)? {
            Some(s) => Ok(s.bankruptcy_price()?),
            None => Ok(None),
        }
    }

    /// The price solver of the account's position in `market`, if it has one.
    fn position_solver(
        &self,
        account: AccountId,
        market: MarketId,
    ) -> Result<Option<Solver<'_>>, MarginError> {
        let acc = self.account_index(account)?;
        let Some(idx) = self.accounts[acc].position_index(self.slot(market)? as u32) else { return Ok(None) };
        self.solver(acc, idx)
    }

    /// Everything a trader's position screen shows, per account and per position.
    pub fn account_view(&self, account: AccountId) -> Result<AccountView, MarginError> {
        let acc = self.account_index(account)?;
        let a = &self.accounts[acc];
        let cross = self.summary_at(acc, None)?;
        let mut view = AccountView {
            account,
            balance: a.balance,
            collateral_value: cross.collateral_value,
            equity: cross.equity,
            available: cross.available()?,
            initial_margin: cross.initial_margin,
            maintenance_margin: cross.maintenance_margin,
            margin_ratio: margin_ratio(cross.maintenance_margin, cross.equity)?,
            positions: Vec::with_capacity(a.positions.len()),
        };
        for (idx, p) in a.positions.iter().enumerate() {
            if p.is_idle() {
                continue;
            }
            let m = &self.markets[p.slot as usize];
            let mark = m.mark()?;
            let upnl = p.unrealized_pnl(mark, m.k)?;
            let mn = p.margin_notional(mark, m.k, m.config.basis)?;
            let im = if p.size.0 == 0 { Money::ZERO } else { p.initial_margin(mn)? };
            let mm = p.maintenance_margin(mn, &m.config.tiers)?;
            let ratio = match p.mode {
                MarginMode::Cross => view.margin_ratio,
                MarginMode::Isolated => {
                    let eq = p.isolated_margin.checked_add(upnl)?;
                    view.equity = view.equity.checked_add(eq)?;
                    view.initial_margin = view.initial_margin.checked_add(im)?;
                    view.maintenance_margin = view.maintenance_margin.checked_add(mm)?;
                    margin_ratio(mm, eq)?
                }
            };
            let solver = self.solver(acc, idx)?;
            let entry = if p.size.0 == 0 {
                Decimal::ZERO
            } else {
                Decimal::from(p.size.0)
                    .checked_mul(Decimal::from(m.k))
                    .and_then(|per_tick| Decimal::from(p.cost.0).checked_div(per_tick))
                    .and_then(|ticks| ticks.checked_mul(m.config.grid.tick_size()))
                    .ok_or(ArithmeticError::Overflow)?
                    .normalize()
            };
            view.positions.push(PositionView {
                market: p.market,
                mode: p.mode,
                size: p.size,
                entry_price: entry,
                mark_price: mark,
                unrealized_pnl: upnl,
                realized_pnl: p.realized_pnl,
                fees_paid: p.fees_paid,
                funding: p.funding,
                leverage: p.leverage,
                initial_margin: im,
                maintenance_margin: mm,
                isolated_margin: p.isolated_margin,
                margin_ratio: ratio,
                liquidation_price: match &solver {
                    Some(s) => s.liquidation_price()?,
                    None => None,
                },
                bankruptcy_price: match &solver {
                    Some(s) => s.bankruptcy_price()?,
                    None => None,
                },
                adl_quantile: None,
            });
        }
        Ok(view)
    }

    /// True when the account's cross equity is at or below its cross maintenance margin.
    pub fn is_cross_liquidatable(&self, account: AccountId) -> Result<bool, MarginError> {
        Ok(self.margin_summary(account)?.liquidatable())
    }

    /// True when the isolated position's equity is at or below its maintenance margin.
    pub fn is_isolated_liquidatable(
        &self,
        account: AccountId,
        market: MarketId,
    ) -> Result<bool, MarginError> {
        let mark = self.mark_price(market)?;
        let (equity, mm) = self.isolated_equity_at(account, market, mark)?;
        Ok(mm.is_positive() && equity <= mm)
    }
}

/// The side's open orders after removing `qty` at `price`; refuses to go below zero.
fn shrink_orders(
    p: &Position,
    side: Side,
    qty: Qty,
    price: Price,
    k: i64,
    market: MarketId,
) -> Result<OpenOrders, MarginError> {
    if !qty.is_positive() {
        return Err(MarginError::NotPositive("order quantity"));
    }
    let orders = match side {
        Side::Buy => p.buys,
        Side::Sell => p.sells,
    };
    let n = Money(notional(price, qty.0, k)?);
    let left = OpenOrders { qty: orders.qty.checked_sub(qty)?, notional: orders.notional.checked_sub(n)? };
    if left.qty.0 < 0 || left.notional.0 < 0 || (left.qty.0 == 0) != (left.notional.0 == 0) {
        return Err(MarginError::OpenOrderUnderflow(market));
    }
    Ok(left)
}
