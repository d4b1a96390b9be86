//! The wire codec: the only place that knows how messages are laid out in bytes.
//!
//! Every frame is a 4-byte little-endian length (of everything after it), a version byte, a
//! message-type byte and a fixed little-endian body; `docs/protocol.md` documents each layout byte
//! by byte. Decoding is total: any byte string yields a message, "need more bytes", or a typed
//! [`DecodeError`] — never a panic. Every field the layout does not use must be zero and every
//! enumeration byte must be known, so a decoded frame re-encodes to exactly the same bytes.

use keel_engine::ErrorCode;
use keel_margin::{HeatmapBucket, Liquidity, Rate};
use keel_types::{
    AccountId, CancelReason, MarketId, Money, OrderId, OrderKind, Price, Qty, RejectReason, Side,
    StopReference, StpMode, TimeInForce,
};
use thiserror::Error;

/// The protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Bytes before the body: length (4), version (1), type (1).
pub const HEADER_LEN: usize = 6;
/// Largest value of the length field: bounds every buffer a peer can make the other side allocate.
pub const MAX_FRAME_LEN: u32 = 16_384;
/// Bytes of a logon key on the wire (shorter keys are padded with zero bytes).
pub const KEY_LEN: usize = 32;
/// Most price levels per side in one depth snapshot.
pub const MAX_SNAPSHOT_LEVELS: usize = 500;
/// Most buckets in one heatmap frame.
pub const MAX_HEATMAP_BUCKETS: usize = 400;
/// Longest disconnect text, in bytes.
pub const MAX_TEXT_LEN: usize = 255;
/// `CancelAll` market value that means "every market".
pub const ALL_MARKETS: u32 = u32::MAX;

/// Market-data channel bits of a subscription.
pub mod channel {
    /// L2 depth: a snapshot, then sequenced level updates.
    pub const DEPTH: u8 = 1;
    /// Public trades.
    pub const TRADES: u8 = 1 << 1;
    /// Index, mark and funding.
    pub const PRICES: u8 = 1 << 2;
    /// Liquidation orders and fills (anonymous).
    pub const LIQUIDATIONS: u8 = 1 << 3;
    /// The liquidation heatmap.
    pub const HEATMAP: u8 = 1 << 4;
    /// Every channel.
    pub const ALL: u8 = DEPTH | TRADES | PRICES | LIQUIDATIONS | HEATMAP;
}

/// Why a byte string is not a valid frame.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The length field exceeds [`MAX_FRAME_LEN`].
    #[error("frame of {length} bytes exceeds the maximum of {MAX_FRAME_LEN}")]
    Oversized {
        /// The declared length.
        length: u32,
    },
    /// The length field is too small to hold the version and type bytes.
    #[error("frame length {length} is below the minimum of 2")]
    Undersized {
        /// The declared length.
        length: u32,
    },
    /// The version byte is not [`VERSION`].
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The message type is not one this side accepts.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The body is shorter than the message's layout.
    #[error("{message} body truncated: {have} bytes, layout needs {need}")]
    Truncated {
        /// The message.
        message: &'static str,
        /// Bytes the layout needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The body is longer than the message's layout.
    #[error("{message} body has {extra} bytes past its layout")]
    TrailingBytes {
        /// The message.
        message: &'static str,
        /// Bytes past the layout.
        extra: usize,
    },
    /// A field holds a value outside its enumeration, or a field that must be zero is not.
    #[error("invalid {field}: {value}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

/// A new order as a client enters it; the gateway adds the session's account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// Client's request id, echoed in the ack or reject.
    pub request: u64,
    /// The market.
    pub market: MarketId,
    /// Buy or sell.
    pub side: Side,
    /// Limit, market, stop-market or stop-limit with its prices.
    pub kind: OrderKind,
    /// Lots.
    pub qty: Qty,
    /// Time in force.
    pub tif: TimeInForce,
    /// Self-trade prevention.
    pub stp: StpMode,
    /// May only reduce the position.
    pub reduce_only: bool,
}

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Opens the session as one account.
    Logon {
        /// The account.
        account: AccountId,
        /// Its key, zero-padded to [`KEY_LEN`] bytes.
        key: [u8; KEY_LEN],
    },
    /// Ends the session.
    Logout,
    /// Keeps an idle session alive.
    Heartbeat,
    /// Enters an order.
    NewOrder(NewOrder),
    /// Cancels one order.
    Cancel {
        /// Client's request id.
        request: u64,
        /// The market.
        market: MarketId,
        /// The order.
        order: OrderId,
    },
    /// Changes a resting order's price and/or open quantity.
    Amend {
        /// Client's request id.
        request: u64,
        /// The market.
        market: MarketId,
        /// The order.
        order: OrderId,
        /// New price (`None` keeps it).
        price: Option<Price>,
        /// New open quantity.
        qty: Qty,
    },
    /// Cancels every order of the session's account, in one market or all.
    CancelAll {
        /// Client's request id.
        request: u64,
        /// One market, or all when `None`.
        market: Option<MarketId>,
    },
    /// Asks for the account's balances and margins.
    AccountQuery {
        /// Client's request id.
        request: u64,
    },
    /// A new index (spot) price for a market; only a session logged on as a price feeder may
    /// send it (a trader's is refused with [`RejectCode::NotAuthorized`]).
    IndexPrice {
        /// Client's request id.
        request: u64,
        /// The market.
        market: MarketId,
        /// The index price, in the market's ticks.
        price: Price,
    },
    /// Subscribes to market-data channels of one market.
    Subscribe {
        /// The market.
        market: MarketId,
        /// [`channel`] bits.
        channels: u8,
    },
    /// Unsubscribes from market-data channels of one market.
    Unsubscribe {
        /// The market.
        market: MarketId,
        /// [`channel`] bits.
        channels: u8,
    },
}

/// Why the gateway or the engine refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectCode {
    /// The engine refused it (nothing changed).
    Engine(ErrorCode),
    /// The session exceeded its rate limit; the request never reached the engine.
    RateLimited,
    /// The engine's inbound queue is full; retry later.
    Busy,
    /// The engine has stopped.
    Stopped,
    /// The session's role may not send this request (an index price from a trader, an order
    /// from a price feeder); it never reached the engine.
    NotAuthorized,
}

/// Why the server ends a session; sent in the last frame before it closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client asked to log out.
    Logout,
    /// A frame could not be decoded.
    MalformedFrame,
    /// A message other than logon arrived before logon.
    NotLoggedOn,
    /// A second logon on a session that is already logged on.
    AlreadyLoggedOn,
    /// Unknown account or wrong key.
    BadCredentials,
    /// Nothing arrived within the idle timeout.
    IdleTimeout,
    /// The client did not read its messages fast enough; its outbound buffer overflowed.
    SlowConsumer,
    /// The server is shutting down.
    Shutdown,
    /// The server has no room for another session.
    TooManySessions,
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerMessage {
    /// Logon accepted.
    LogonAck {
        /// The account.
        account: AccountId,
        /// The server's id for this session.
        session: u32,
        /// The client must send something at least this often (milliseconds).
        heartbeat_ms: u32,
    },
    /// A request was accepted by the engine.
    Ack {
        /// The client's request id.
        request: u64,
        /// The order concerned (a new order's engine-assigned id; zero when none).
        order: OrderId,
    },
    /// A request was refused; nothing changed.
    Reject {
        /// The client's request id.
        request: u64,
        /// Why.
        code: RejectCode,
    },
    /// One of the account's orders traded.
    Fill {
        /// The market.
        market: MarketId,
        /// The account's order.
        order: OrderId,
        /// The account's side.
        side: Side,
        /// Maker or taker.
        liquidity: Liquidity,
        /// Trade price.
        price: Price,
        /// Traded lots.
        qty: Qty,
        /// Fee charged (negative: rebate).
        fee: Money,
        /// PnL realized by the trade.
        realized_pnl: Money,
        /// Position after the trade.
        position: Qty,
        /// Settlement balance after the trade.
        balance: Money,
    },
    /// One of the account's orders (or its rest) left the book unfilled.
    Cancelled {
        /// The market.
        market: MarketId,
        /// The order.
        order: OrderId,
        /// Lots that were still open.
        remaining: Qty,
        /// Why.
        reason: CancelReason,
    },
    /// One of the account's resting orders was changed.
    Amended {
        /// The market.
        market: MarketId,
        /// The order.
        order: OrderId,
        /// Price after the change.
        price: Price,
        /// Open lots after the change.
        qty: Qty,
        /// True when it kept its queue position.
        priority_kept: bool,
    },
    /// One of the account's stop orders triggered.
    Triggered {
        /// The market.
        market: MarketId,
        /// The order.
        order: OrderId,
        /// The reference price that triggered it.
        reference_price: Price,
    },
    /// A step of the account's liquidation.
    Liquidation(LiquidationNotice),
    /// Auto-deleveraging closed part of the account's position.
    Adl {
        /// The market.
        market: MarketId,
        /// True when this account was the one being liquidated; false for the counterparty.
        liquidated: bool,
        /// The side of this account's position that was closed.
        side: Side,
        /// The bankruptcy price both sides traded at.
        price: Price,
        /// Lots closed.
        qty: Qty,
    },
    /// The account's balances and margins.
    AccountUpdate {
        /// The request that asked (zero when pushed).
        request: u64,
        /// Settlement-asset balance.
        balance: Money,
        /// Equity.
        equity: Money,
        /// Available for new orders.
        available: Money,
        /// Initial margin in use.
        initial_margin: Money,
        /// Maintenance margin.
        maintenance_margin: Money,
    },
    /// A funding settlement's payment on this account's position.
    FundingPayment {
        /// The market.
        market: MarketId,
        /// The rate in parts per 10^8 (positive: longs pay).
        rate: Rate,
        /// The price positions were valued at.
        price: Price,
        /// Received (positive) or paid (negative), in money.
        amount: Money,
    },
    /// Keeps an idle connection alive.
    Heartbeat,
    /// The session ends; the server closes the connection after this frame.
    Disconnect {
        /// Why.
        reason: DisconnectReason,
        /// Operator-readable detail (at most [`MAX_TEXT_LEN`] bytes of UTF-8).
        text: String,
    },
    /// The whole L2 book of a market as of depth sequence `seq`.
    DepthSnapshot {
        /// The market.
        market: MarketId,
        /// Sequence of the last update included; the next update carries `seq + 1`.
        seq: u64,
        /// Bids, best first.
        bids: Vec<(Price, Qty)>,
        /// Asks, best first.
        asks: Vec<(Price, Qty)>,
    },
    /// One price level's new total.
    DepthUpdate {
        /// The market.
        market: MarketId,
        /// Consecutive per market: a gap means a lost update (resubscribe).
        seq: u64,
        /// The side.
        side: Side,
        /// The level.
        price: Price,
        /// Total lots now at the level (zero: the level is gone).
        qty: Qty,
    },
    /// A public trade.
    Trade {
        /// The market.
        market: MarketId,
        /// Trade price.
        price: Price,
        /// Traded lots.
        qty: Qty,
        /// The incoming order's side.
        taker_side: Side,
        /// True when the taker was a liquidation order.
        liquidation: bool,
    },
    /// New index and mark prices.
    MarkPrice {
        /// The market.
        market: MarketId,
        /// Index price.
        index: Price,
        /// Mark price.
        mark: Price,
    },
    /// A funding settlement.
    Funding {
        /// The market.
        market: MarketId,
        /// The rate in parts per 10^8 (positive: longs pay).
        rate: Rate,
        /// The price positions were valued at.
        price: Price,
    },
    /// A liquidation order was sent to a book (anonymous).
    LiquidationPrint {
        /// The market.
        market: MarketId,
        /// The liquidation order's side.
        side: Side,
        /// Its limit price.
        price: Price,
        /// Its lots.
        qty: Qty,
    },
    /// The liquidation heatmap of a market.
    Heatmap {
        /// The market.
        market: MarketId,
        /// Bucket width in ticks.
        bucket_ticks: i64,
        /// Buckets, ascending by price.
        buckets: Vec<HeatmapBucket>,
    },
}

/// A private step of an account's liquidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiquidationNotice {
    /// Which step.
    pub kind: LiquidationStep,
    /// The market (`ALL_MARKETS` for a cross-margin call).
    pub market: u32,
    /// The side of the order concerned (buy when not applicable).
    pub side: Side,
    /// The order concerned (zero when none).
    pub order: OrderId,
    /// Price: order limit, fill price, or zero.
    pub price: Price,
    /// Lots concerned, or zero.
    pub qty: Qty,
    /// First amount (see [`LiquidationStep`]).
    pub amount_a: Money,
    /// Second amount (see [`LiquidationStep`]).
    pub amount_b: Money,
}

/// The steps of a liquidation a trader is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiquidationStep {
    /// Fell below maintenance: `amount_a` = equity, `amount_b` = maintenance margin.
    MarginCall,
    /// An open order was cancelled before liquidating (`order`, `side`, `price`, `qty`).
    OrderCancelled,
    /// A liquidation order was sent (`order`, `side`, `price` = limit, `qty`; `amount_a` = bankruptcy price in ticks).
    Order,
    /// A liquidation order traded (`order`, `price`, `qty`).
    Fill,
    /// Closed out: `amount_a` = paid by the insurance fund, `qty` = lots deleveraged.
    Bankruptcy,
    /// Back above maintenance after the order cancellations.
    Recovered,
}

// ----- primitive readers and writers -----

/// Reads a fixed layout field by field; reports truncation instead of panicking.
struct Reader<'a> {
    message: &'static str,
    body: &'a [u8],
    at: usize,
    need: usize,
}

impl<'a> Reader<'a> {
    fn new(message: &'static str, body: &'a [u8], need: usize) -> Result<Reader<'a>, DecodeError> {
        if body.len() < need {
            return Err(DecodeError::Truncated { message, need, have: body.len() });
        }
        Ok(Reader { message, body, at: 0, need })
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.at + N;
        let slice = self.body.get(self.at..end).ok_or(DecodeError::Truncated {
            message: self.message,
            need: self.need.max(end),
            have: self.body.len(),
        })?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.bytes()?))
    }
    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidField { field, value: value.into() }),
        }
    }
    fn side(&mut self) -> Result<Side, DecodeError> {
        side_from(self.u8()?)
    }

    /// Grows the expected length once a count field says how much follows.
    fn expect_more(&mut self, more: usize) -> Result<(), DecodeError> {
        self.need += more;
        if self.body.len() < self.need {
            return Err(DecodeError::Truncated {
                message: self.message,
                need: self.need,
                have: self.body.len(),
            });
        }
        Ok(())
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.at < self.body.len() {
            return Err(DecodeError::TrailingBytes {
                message: self.message,
                extra: self.body.len() - self.at,
            });
        }
        Ok(())
    }
}

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn invalid(field: &'static str, value: impl Into<u64>) -> DecodeError {
    DecodeError::InvalidField { field, value: value.into() }
}

fn side_code(side: Side) -> u8 {
    match side {
        Side::Buy => 0,
        Side::Sell => 1,
    }
}
fn side_from(v: u8) -> Result<Side, DecodeError> {
    match v {
        0 => Ok(Side::Buy),
        1 => Ok(Side::Sell),
        _ => Err(invalid("side", v)),
    }
}
fn tif_code(tif: TimeInForce) -> u8 {
    match tif {
        TimeInForce::Gtc => 0,
        TimeInForce::Ioc => 1,
        TimeInForce::Fok => 2,
        TimeInForce::PostOnly => 3,
    }
}
fn tif_from(v: u8) -> Result<TimeInForce, DecodeError> {
    Ok(match v {
        0 => TimeInForce::Gtc,
        1 => TimeInForce::Ioc,
        2 => TimeInForce::Fok,
        3 => TimeInForce::PostOnly,
        _ => return Err(invalid("time in force", v)),
    })
}
fn stp_code(stp: StpMode) -> u8 {
    match stp {
        StpMode::CancelNewest => 0,
        StpMode::CancelOldest => 1,
        StpMode::CancelBoth => 2,
    }
}
fn stp_from(v: u8) -> Result<StpMode, DecodeError> {
    Ok(match v {
        0 => StpMode::CancelNewest,
        1 => StpMode::CancelOldest,
        2 => StpMode::CancelBoth,
        _ => return Err(invalid("self-trade prevention", v)),
    })
}
fn reference_code(reference: StopReference) -> u8 {
    match reference {
        StopReference::Mark => 0,
        StopReference::Last => 1,
    }
}
fn reference_from(v: u8) -> Result<StopReference, DecodeError> {
    match v {
        0 => Ok(StopReference::Mark),
        1 => Ok(StopReference::Last),
        _ => Err(invalid("stop reference", v)),
    }
}

/// `RejectReason` of the book as (detail code), in a stable order.
const BOOK_REASONS: [RejectReason; 10] = [
    RejectReason::InvalidQuantity,
    RejectReason::QuantityTooLarge,
    RejectReason::InvalidPrice,
    RejectReason::PriceOutOfRange,
    RejectReason::DuplicateOrderId,
    RejectReason::UnknownOrder,
    RejectReason::PostOnlyWouldTake,
    RejectReason::StopWouldTrigger,
    RejectReason::InvalidTimeInForce,
    RejectReason::StopNotAmendable,
];

fn reject_code(code: RejectCode) -> (u16, u16) {
    match code {
        RejectCode::Engine(code) => match code {
            ErrorCode::UnknownMarket => (1, 0),
            ErrorCode::DuplicateMarket => (2, 0),
            ErrorCode::UnknownAccount => (3, 0),
            ErrorCode::UnknownOrder => (4, 0),
            ErrorCode::Book(reason) => {
                let detail = BOOK_REASONS.iter().position(|r| *r == reason).map_or(0, |i| i as u16 + 1);
                (5, detail)
            }
            ErrorCode::InsufficientMargin => (6, 0),
            ErrorCode::ReduceOnly => (7, 0),
            ErrorCode::MarginSystem => (8, 0),
            ErrorCode::Liquidation => (9, 0),
            ErrorCode::InLiquidation => (10, 0),
        },
        RejectCode::RateLimited => (100, 0),
        RejectCode::Busy => (101, 0),
        RejectCode::Stopped => (102, 0),
        RejectCode::NotAuthorized => (103, 0),
    }
}

fn reject_from(reason: u16, detail: u16) -> Result<RejectCode, DecodeError> {
    let engine = |code| Ok(RejectCode::Engine(code));
    if reason != 5 && detail != 0 {
        return Err(invalid("reject detail", detail));
    }
    match reason {
        1 => engine(ErrorCode::UnknownMarket),
        2 => engine(ErrorCode::DuplicateMarket),
        3 => engine(ErrorCode::UnknownAccount),
        4 => engine(ErrorCode::UnknownOrder),
        5 => match BOOK_REASONS.get(usize::from(detail).wrapping_sub(1)) {
            Some(reason) => engine(ErrorCode::Book(*reason)),
            None => Err(invalid("reject detail", detail)),
        },
        6 => engine(ErrorCode::InsufficientMargin),
        7 => engine(ErrorCode::ReduceOnly),
        8 => engine(ErrorCode::MarginSystem),
        9 => engine(ErrorCode::Liquidation),
        10 => engine(ErrorCode::InLiquidation),
        100 => Ok(RejectCode::RateLimited),
        101 => Ok(RejectCode::Busy),
        102 => Ok(RejectCode::Stopped),
        103 => Ok(RejectCode::NotAuthorized),
        _ => Err(invalid("reject reason", reason)),
    }
}

const DISCONNECT_REASONS: [DisconnectReason; 9] = [
    DisconnectReason::Logout,
    DisconnectReason::MalformedFrame,
    DisconnectReason::NotLoggedOn,
    DisconnectReason::AlreadyLoggedOn,
    DisconnectReason::BadCredentials,
    DisconnectReason::IdleTimeout,
    DisconnectReason::SlowConsumer,
    DisconnectReason::Shutdown,
    DisconnectReason::TooManySessions,
];

const CANCEL_REASONS: [CancelReason; 8] = [
    CancelReason::User,
    CancelReason::CancelAll,
    CancelReason::Liquidation,
    CancelReason::ReduceOnly,
    CancelReason::Unfilled,
    CancelReason::FillOrKill,
    CancelReason::PriceProtection,
    CancelReason::SelfTrade,
];

const LIQUIDATION_STEPS: [LiquidationStep; 6] = [
    LiquidationStep::MarginCall,
    LiquidationStep::OrderCancelled,
    LiquidationStep::Order,
    LiquidationStep::Fill,
    LiquidationStep::Bankruptcy,
    LiquidationStep::Recovered,
];

/// Position of `value` in `table`, as the wire code (1-based, so zero is never valid).
fn code_of<T: PartialEq>(table: &[T], value: &T) -> u8 {
    table.iter().position(|v| v == value).map_or(0, |i| i as u8 + 1)
}
fn from_code<T: Copy>(table: &[T], field: &'static str, code: u8) -> Result<T, DecodeError> {
    table.get(usize::from(code).wrapping_sub(1)).copied().ok_or(invalid(field, code))
}

// ----- message type codes -----

mod kind {
    pub const LOGON: u8 = 0x01;
    pub const LOGOUT: u8 = 0x02;
    pub const HEARTBEAT: u8 = 0x03;
    pub const NEW_ORDER: u8 = 0x10;
    pub const CANCEL: u8 = 0x11;
    pub const AMEND: u8 = 0x12;
    pub const CANCEL_ALL: u8 = 0x13;
    pub const ACCOUNT_QUERY: u8 = 0x14;
    pub const INDEX_PRICE: u8 = 0x15;
    pub const SUBSCRIBE: u8 = 0x20;
    pub const UNSUBSCRIBE: u8 = 0x21;

    pub const LOGON_ACK: u8 = 0x81;
    pub const ACK: u8 = 0x82;
    pub const REJECT: u8 = 0x83;
    pub const FILL: u8 = 0x84;
    pub const CANCELLED: u8 = 0x85;
    pub const AMENDED: u8 = 0x86;
    pub const TRIGGERED: u8 = 0x87;
    pub const LIQUIDATION: u8 = 0x88;
    pub const ADL: u8 = 0x89;
    pub const ACCOUNT_UPDATE: u8 = 0x8A;
    pub const SERVER_HEARTBEAT: u8 = 0x8B;
    pub const DISCONNECT: u8 = 0x8C;
    pub const FUNDING_PAYMENT: u8 = 0x8D;
    pub const DEPTH_SNAPSHOT: u8 = 0xA0;
    pub const DEPTH_UPDATE: u8 = 0xA1;
    pub const TRADE: u8 = 0xA2;
    pub const MARK_PRICE: u8 = 0xA3;
    pub const FUNDING: u8 = 0xA4;
    pub const LIQUIDATION_PRINT: u8 = 0xA5;
    pub const HEATMAP: u8 = 0xA6;
}

// ----- framing -----

/// Starts a frame of type `message_type` at the end of `out`; returns where its length goes.
fn begin(out: &mut Vec<u8>, message_type: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, VERSION, message_type]);
    start
}

/// Writes the length of the frame that began at `start`.
fn end(out: &mut [u8], start: usize) {
    let length = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
}

/// One frame split off the front of a buffer.
struct Frame<'a> {
    message_type: u8,
    body: &'a [u8],
    used: usize,
}

/// Splits one frame off the front of `buf`; `Ok(None)` when more bytes are needed.
fn split_frame(buf: &[u8]) -> Result<Option<Frame<'_>>, DecodeError> {
    let Some(total) = frame_len(buf)? else { return Ok(None) };
    let Some(frame) = buf.get(..total) else { return Ok(None) };
    if frame[4] != VERSION {
        return Err(DecodeError::UnsupportedVersion(frame[4]));
    }
    Ok(Some(Frame { message_type: frame[5], body: &frame[HEADER_LEN..], used: total }))
}

/// Length of the first frame in `buf` (header included) once its length field has arrived;
/// rejects lengths outside the protocol's bounds before any body bytes are awaited.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(length) = buf.get(..4) else { return Ok(None) };
    let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
    if length > MAX_FRAME_LEN {
        return Err(DecodeError::Oversized { length });
    }
    if length < 2 {
        return Err(DecodeError::Undersized { length });
    }
    Ok(Some(4 + length as usize))
}

// ----- client messages -----

impl ClientMessage {
    /// The request id of a request message, which its ack or reject echoes; `None` for session
    /// and subscription messages, which have none.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            ClientMessage::NewOrder(order) => Some(order.request),
            ClientMessage::Cancel { request, .. }
            | ClientMessage::Amend { request, .. }
            | ClientMessage::CancelAll { request, .. }
            | ClientMessage::AccountQuery { request }
            | ClientMessage::IndexPrice { request, .. } => Some(*request),
            ClientMessage::Logon { .. }
            | ClientMessage::Logout
            | ClientMessage::Heartbeat
            | ClientMessage::Subscribe { .. }
            | ClientMessage::Unsubscribe { .. } => None,
        }
    }

    /// Appends this message's frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ClientMessage::Logon { account, key } => {
                let start = begin(out, kind::LOGON);
                put_u32(out, account.0);
                out.extend_from_slice(key);
                end(out, start);
            }
            ClientMessage::Logout => end_empty(out, kind::LOGOUT),
            ClientMessage::Heartbeat => end_empty(out, kind::HEARTBEAT),
            ClientMessage::NewOrder(order) => {
                let start = begin(out, kind::NEW_ORDER);
                let (order_type, price, trigger, reference) = match order.kind {
                    OrderKind::Limit { price } => (0, price.0, 0, 0),
                    OrderKind::Market => (1, 0, 0, 0),
                    OrderKind::StopMarket { trigger, reference } => {
                        (2, 0, trigger.0, reference_code(reference))
                    }
                    OrderKind::StopLimit { trigger, price, reference } => {
                        (3, price.0, trigger.0, reference_code(reference))
                    }
                };
                put_u64(out, order.request);
                put_u32(out, order.market.0);
                put_u8(out, side_code(order.side));
                put_u8(out, order_type);
                put_u8(out, tif_code(order.tif));
                put_u8(out, stp_code(order.stp));
                put_u8(out, u8::from(order.reduce_only));
                put_u8(out, reference);
                put_i64(out, price);
                put_i64(out, trigger);
                put_i64(out, order.qty.0);
                end(out, start);
            }
            ClientMessage::Cancel { request, market, order } => {
                let start = begin(out, kind::CANCEL);
                put_u64(out, *request);
                put_u32(out, market.0);
                put_u64(out, order.0);
                end(out, start);
            }
            ClientMessage::Amend { request, market, order, price, qty } => {
                let start = begin(out, kind::AMEND);
                put_u64(out, *request);
                put_u32(out, market.0);
                put_u64(out, order.0);
                put_u8(out, u8::from(price.is_some()));
                put_i64(out, price.map_or(0, |p| p.0));
                put_i64(out, qty.0);
                end(out, start);
            }
            ClientMessage::CancelAll { request, market } => {
                let start = begin(out, kind::CANCEL_ALL);
                put_u64(out, *request);
                put_u32(out, market.map_or(ALL_MARKETS, |m| m.0));
                end(out, start);
            }
            ClientMessage::AccountQuery { request } => {
                let start = begin(out, kind::ACCOUNT_QUERY);
                put_u64(out, *request);
                end(out, start);
            }
            ClientMessage::IndexPrice { request, market, price } => {
                let start = begin(out, kind::INDEX_PRICE);
                put_u64(out, *request);
                put_u32(out, market.0);
                put_i64(out, price.0);
                end(out, start);
            }
            ClientMessage::Subscribe { market, channels }
            | ClientMessage::Unsubscribe { market, channels } => {
                let code = if matches!(self, ClientMessage::Subscribe { .. }) {
                    kind::SUBSCRIBE
                } else {
                    kind::UNSUBSCRIBE
                };
                let start = begin(out, code);
                put_u32(out, market.0);
                put_u8(out, *channels);
                end(out, start);
            }
        }
    }

    /// This message's frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Decodes the first frame of `buf`: `Ok(None)` when more bytes are needed, otherwise the
    /// message and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(ClientMessage, usize)>, DecodeError> {
        let Some(frame) = split_frame(buf)? else { return Ok(None) };
        Ok(Some((ClientMessage::decode_body(frame.message_type, frame.body)?, frame.used)))
    }

    fn decode_body(message_type: u8, body: &[u8]) -> Result<ClientMessage, DecodeError> {
        let message = match message_type {
            kind::LOGON => {
                let mut r = Reader::new("logon", body, 4 + KEY_LEN)?;
                let account = AccountId(r.u32()?);
                let key = r.bytes::<KEY_LEN>()?;
                r.finish()?;
                ClientMessage::Logon { account, key }
            }
            kind::LOGOUT => {
                Reader::new("logout", body, 0)?.finish()?;
                ClientMessage::Logout
            }
            kind::HEARTBEAT => {
                Reader::new("heartbeat", body, 0)?.finish()?;
                ClientMessage::Heartbeat
            }
            kind::NEW_ORDER => {
                let mut r = Reader::new("new order", body, 42)?;
                let request = r.u64()?;
                let market = MarketId(r.u32()?);
                let side = r.side()?;
                let order_type = r.u8()?;
                let tif = tif_from(r.u8()?)?;
                let stp = stp_from(r.u8()?)?;
                let reduce_only = r.bool("order flags")?;
                let reference = r.u8()?;
                let price = r.i64()?;
                let trigger = r.i64()?;
                let qty = Qty(r.i64()?);
                r.finish()?;
                let zero = |field: &'static str, v: i64| {
                    if v == 0 { Ok(()) } else { Err(invalid(field, v as u64)) }
                };
                let kind = match order_type {
                    0 => {
                        zero("trigger", trigger)?;
                        zero("stop reference", i64::from(reference))?;
                        OrderKind::Limit { price: Price(price) }
                    }
                    1 => {
                        zero("price", price)?;
                        zero("trigger", trigger)?;
                        zero("stop reference", i64::from(reference))?;
                        OrderKind::Market
                    }
                    2 => {
                        zero("price", price)?;
                        OrderKind::StopMarket {
                            trigger: Price(trigger),
                            reference: reference_from(reference)?,
                        }
                    }
                    3 => OrderKind::StopLimit {
                        trigger: Price(trigger),
                        price: Price(price),
                        reference: reference_from(reference)?,
                    },
                    _ => return Err(invalid("order type", order_type)),
                };
                ClientMessage::NewOrder(NewOrder { request, market, side, kind, qty, tif, stp, reduce_only })
            }
            kind::CANCEL => {
                let mut r = Reader::new("cancel", body, 20)?;
                let request = r.u64()?;
                let market = MarketId(r.u32()?);
                let order = OrderId(r.u64()?);
                r.finish()?;
                ClientMessage::Cancel { request, market, order }
            }
            kind::AMEND => {
                let mut r = Reader::new("amend", body, 37)?;
                let request = r.u64()?;
                let market = MarketId(r.u32()?);
                let order = OrderId(r.u64()?);
                let has_price = r.bool("amend flags")?;
                let price = r.i64()?;
                let qty = Qty(r.i64()?);
                r.finish()?;
                if !has_price && price != 0 {
                    return Err(invalid("price", price as u64));
                }
                let price = has_price.then_some(Price(price));
                ClientMessage::Amend { request, market, order, price, qty }
            }
            kind::CANCEL_ALL => {
                let mut r = Reader::new("cancel all", body, 12)?;
                let request = r.u64()?;
                let market = r.u32()?;
                r.finish()?;
                ClientMessage::CancelAll {
                    request,
                    market: (market != ALL_MARKETS).then_some(MarketId(market)),
                }
            }
            kind::INDEX_PRICE => {
                let mut r = Reader::new("index price", body, 20)?;
                let request = r.u64()?;
                let market = MarketId(r.u32()?);
                let price = Price(r.i64()?);
                r.finish()?;
                ClientMessage::IndexPrice { request, market, price }
            }
            kind::ACCOUNT_QUERY => {
                let mut r = Reader::new("account query", body, 8)?;
                let request = r.u64()?;
                r.finish()?;
                ClientMessage::AccountQuery { request }
            }
            kind::SUBSCRIBE | kind::UNSUBSCRIBE => {
                let mut r = Reader::new("subscribe", body, 5)?;
                let market = MarketId(r.u32()?);
                let channels = r.u8()?;
                r.finish()?;
                if channels & !channel::ALL != 0 {
                    return Err(invalid("channels", channels));
                }
                if message_type == kind::SUBSCRIBE {
                    ClientMessage::Subscribe { market, channels }
                } else {
                    ClientMessage::Unsubscribe { market, channels }
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        Ok(message)
    }
}

fn end_empty(out: &mut Vec<u8>, message_type: u8) {
    let start = begin(out, message_type);
    end(out, start);
}

// ----- server messages -----

impl ServerMessage {
    /// Appends this message's frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ServerMessage::LogonAck { account, session, heartbeat_ms } => {
                let start = begin(out, kind::LOGON_ACK);
                put_u32(out, account.0);
                put_u32(out, *session);
                put_u32(out, *heartbeat_ms);
                end(out, start);
            }
            ServerMessage::Ack { request, order } => {
                let start = begin(out, kind::ACK);
                put_u64(out, *request);
                put_u64(out, order.0);
                end(out, start);
            }
            ServerMessage::Reject { request, code } => {
                let start = begin(out, kind::REJECT);
                let (reason, detail) = reject_code(*code);
                put_u64(out, *request);
                put_u16(out, reason);
                put_u16(out, detail);
                end(out, start);
            }
            ServerMessage::Fill {
                market,
                order,
                side,
                liquidity,
                price,
                qty,
                fee,
                realized_pnl,
                position,
                balance,
            } => {
                let start = begin(out, kind::FILL);
                put_u32(out, market.0);
                put_u64(out, order.0);
                put_u8(out, side_code(*side));
                put_u8(out, u8::from(*liquidity == Liquidity::Taker));
                put_i64(out, price.0);
                put_i64(out, qty.0);
                put_i64(out, fee.0);
                put_i64(out, realized_pnl.0);
                put_i64(out, position.0);
                put_i64(out, balance.0);
                end(out, start);
            }
            ServerMessage::Cancelled { market, order, remaining, reason } => {
                let start = begin(out, kind::CANCELLED);
                put_u32(out, market.0);
                put_u64(out, order.0);
                put_i64(out, remaining.0);
                put_u8(out, code_of(&CANCEL_REASONS, reason));
                end(out, start);
            }
            ServerMessage::Amended { market, order, price, qty, priority_kept } => {
                let start = begin(out, kind::AMENDED);
                put_u32(out, market.0);
                put_u64(out, order.0);
                put_i64(out, price.0);
                put_i64(out, qty.0);
                put_u8(out, u8::from(*priority_kept));
                end(out, start);
            }
            ServerMessage::Triggered { market, order, reference_price } => {
                let start = begin(out, kind::TRIGGERED);
                put_u32(out, market.0);
                put_u64(out, order.0);
                put_i64(out, reference_price.0);
                end(out, start);
            }
            ServerMessage::Liquidation(n) => {
                let start = begin(out, kind::LIQUIDATION);
                put_u8(out, code_of(&LIQUIDATION_STEPS, &n.kind));
                put_u32(out, n.market);
                put_u8(out, side_code(n.side));
                put_u64(out, n.order.0);
                put_i64(out, n.price.0);
                put_i64(out, n.qty.0);
                put_i64(out, n.amount_a.0);
                put_i64(out, n.amount_b.0);
                end(out, start);
            }
            ServerMessage::Adl { market, liquidated, side, price, qty } => {
                let start = begin(out, kind::ADL);
                put_u32(out, market.0);
                put_u8(out, u8::from(*liquidated));
                put_u8(out, side_code(*side));
                put_i64(out, price.0);
                put_i64(out, qty.0);
                end(out, start);
            }
            ServerMessage::AccountUpdate {
                request,
                balance,
                equity,
                available,
                initial_margin,
                maintenance_margin,
            } => {
                let start = begin(out, kind::ACCOUNT_UPDATE);
                put_u64(out, *request);
                for money in [balance, equity, available, initial_margin, maintenance_margin] {
                    put_i64(out, money.0);
                }
                end(out, start);
            }
            ServerMessage::FundingPayment { market, rate, price, amount } => {
                let start = begin(out, kind::FUNDING_PAYMENT);
                put_u32(out, market.0);
                put_i64(out, rate.0);
                put_i64(out, price.0);
                put_i64(out, amount.0);
                end(out, start);
            }
            ServerMessage::Heartbeat => end_empty(out, kind::SERVER_HEARTBEAT),
            ServerMessage::Disconnect { reason, text } => {
                let start = begin(out, kind::DISCONNECT);
                put_u8(out, code_of(&DISCONNECT_REASONS, reason));
                let text = truncate_utf8(text, MAX_TEXT_LEN);
                put_u8(out, text.len() as u8);
                out.extend_from_slice(text.as_bytes());
                end(out, start);
            }
            ServerMessage::DepthSnapshot { market, seq, bids, asks } => {
                let start = begin(out, kind::DEPTH_SNAPSHOT);
                let bids = &bids[..bids.len().min(MAX_SNAPSHOT_LEVELS)];
                let asks = &asks[..asks.len().min(MAX_SNAPSHOT_LEVELS)];
                put_u32(out, market.0);
                put_u64(out, *seq);
                put_u16(out, bids.len() as u16);
                put_u16(out, asks.len() as u16);
                for (price, qty) in bids.iter().chain(asks) {
                    put_i64(out, price.0);
                    put_i64(out, qty.0);
                }
                end(out, start);
            }
            ServerMessage::DepthUpdate { market, seq, side, price, qty } => {
                let start = begin(out, kind::DEPTH_UPDATE);
                put_u32(out, market.0);
                put_u64(out, *seq);
                put_u8(out, side_code(*side));
                put_i64(out, price.0);
                put_i64(out, qty.0);
                end(out, start);
            }
            ServerMessage::Trade { market, price, qty, taker_side, liquidation } => {
                let start = begin(out, kind::TRADE);
                put_u32(out, market.0);
                put_i64(out, price.0);
                put_i64(out, qty.0);
                put_u8(out, side_code(*taker_side));
                put_u8(out, u8::from(*liquidation));
                end(out, start);
            }
            ServerMessage::MarkPrice { market, index, mark } => {
                let start = begin(out, kind::MARK_PRICE);
                put_u32(out, market.0);
                put_i64(out, index.0);
                put_i64(out, mark.0);
                end(out, start);
            }
            ServerMessage::Funding { market, rate, price } => {
                let start = begin(out, kind::FUNDING);
                put_u32(out, market.0);
                put_i64(out, rate.0);
                put_i64(out, price.0);
                end(out, start);
            }
            ServerMessage::LiquidationPrint { market, side, price, qty } => {
                let start = begin(out, kind::LIQUIDATION_PRINT);
                put_u32(out, market.0);
                put_u8(out, side_code(*side));
                put_i64(out, price.0);
                put_i64(out, qty.0);
                end(out, start);
            }
            ServerMessage::Heatmap { market, bucket_ticks, buckets } => {
                let start = begin(out, kind::HEATMAP);
                let buckets = &buckets[..buckets.len().min(MAX_HEATMAP_BUCKETS)];
                put_u32(out, market.0);
                put_i64(out, *bucket_ticks);
                put_u16(out, buckets.len() as u16);
                for b in buckets {
                    put_i64(out, b.price.0);
                    put_i64(out, b.long_qty.0);
                    put_i64(out, b.long_notional.0);
                    put_i64(out, b.short_qty.0);
                    put_i64(out, b.short_notional.0);
                }
                end(out, start);
            }
        }
    }

    /// This message's frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Decodes the first frame of `buf`: `Ok(None)` when more bytes are needed, otherwise the
    /// message and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(ServerMessage, usize)>, DecodeError> {
        let Some(frame) = split_frame(buf)? else { return Ok(None) };
        Ok(Some((ServerMessage::decode_body(frame.message_type, frame.body)?, frame.used)))
    }

    fn decode_body(message_type: u8, body: &[u8]) -> Result<ServerMessage, DecodeError> {
        let message = match message_type {
            kind::LOGON_ACK => {
                let mut r = Reader::new("logon ack", body, 12)?;
                let account = AccountId(r.u32()?);
                let session = r.u32()?;
                let heartbeat_ms = r.u32()?;
                r.finish()?;
                ServerMessage::LogonAck { account, session, heartbeat_ms }
            }
            kind::ACK => {
                let mut r = Reader::new("ack", body, 16)?;
                let request = r.u64()?;
                let order = OrderId(r.u64()?);
                r.finish()?;
                ServerMessage::Ack { request, order }
            }
            kind::REJECT => {
                let mut r = Reader::new("reject", body, 12)?;
                let request = r.u64()?;
                let reason = r.u16()?;
                let detail = r.u16()?;
                r.finish()?;
                ServerMessage::Reject { request, code: reject_from(reason, detail)? }
            }
            kind::FILL => {
                let mut r = Reader::new("fill", body, 62)?;
                let market = MarketId(r.u32()?);
                let order = OrderId(r.u64()?);
                let side = r.side()?;
                let liquidity = if r.bool("liquidity")? { Liquidity::Taker } else { Liquidity::Maker };
                let price = Price(r.i64()?);
                let qty = Qty(r.i64()?);
                let fee = Money(r.i64()?);
                let realized_pnl = Money(r.i64()?);
                let position = Qty(r.i64()?);
                let balance = Money(r.i64()?);
                r.finish()?;
                ServerMessage::Fill {
                    market,
                    order,
                    side,
                    liquidity,
                    price,
                    qty,
                    fee,
                    realized_pnl,
                    position,
                    balance,
                }
            }
            kind::CANCELLED => {
                let mut r = Reader::new("cancelled", body, 21)?;
                let market = MarketId(r.u32()?);
                let order = OrderId(r.u64()?);
                let remaining = Qty(r.i64()?);
                let reason = from_code(&CANCEL_REASONS, "cancel reason", r.u8()?)?;
                r.finish()?;
                ServerMessage::Cancelled { market, order, remaining, reason }
            }
            kind::AMENDED => {
                let mut r = Reader::new("amended", body, 29)?;
                let market = MarketId(r.u32()?);
                let order = OrderId(r.u64()?);
                let price = Price(r.i64()?);
                let qty = Qty(r.i64()?);
                let priority_kept = r.bool("priority kept")?;
                r.finish()?;
                ServerMessage::Amended { market, order, price, qty, priority_kept }
            }
            kind::TRIGGERED => {
                let mut r = Reader::new("triggered", body, 20)?;
                let market = MarketId(r.u32()?);
                let order = OrderId(r.u64()?);
                let reference_price = Price(r.i64()?);
                r.finish()?;
                ServerMessage::Triggered { market, order, reference_price }
            }
            kind::LIQUIDATION => {
                let mut r = Reader::new("liquidation notice", body, 46)?;
                let kind = from_code(&LIQUIDATION_STEPS, "liquidation step", r.u8()?)?;
                let notice = LiquidationNotice {
                    kind,
                    market: r.u32()?,
                    side: r.side()?,
                    order: OrderId(r.u64()?),
                    price: Price(r.i64()?),
                    qty: Qty(r.i64()?),
                    amount_a: Money(r.i64()?),
                    amount_b: Money(r.i64()?),
                };
                r.finish()?;
                ServerMessage::Liquidation(notice)
            }
            kind::ADL => {
                let mut r = Reader::new("adl notice", body, 22)?;
                let market = MarketId(r.u32()?);
                let liquidated = r.bool("adl role")?;
                let side = r.side()?;
                let price = Price(r.i64()?);
                let qty = Qty(r.i64()?);
                r.finish()?;
                ServerMessage::Adl { market, liquidated, side, price, qty }
            }
            kind::ACCOUNT_UPDATE => {
                let mut r = Reader::new("account update", body, 48)?;
                let request = r.u64()?;
                let balance = Money(r.i64()?);
                let equity = Money(r.i64()?);
                let available = Money(r.i64()?);
                let initial_margin = Money(r.i64()?);
                let maintenance_margin = Money(r.i64()?);
                r.finish()?;
                ServerMessage::AccountUpdate {
                    request,
                    balance,
                    equity,
                    available,
                    initial_margin,
                    maintenance_margin,
                }
            }
            kind::FUNDING_PAYMENT => {
                let mut r = Reader::new("funding payment", body, 28)?;
                let market = MarketId(r.u32()?);
                let rate = Rate(r.i64()?);
                let price = Price(r.i64()?);
                let amount = Money(r.i64()?);
                r.finish()?;
                ServerMessage::FundingPayment { market, rate, price, amount }
            }
            kind::SERVER_HEARTBEAT => {
                Reader::new("heartbeat", body, 0)?.finish()?;
                ServerMessage::Heartbeat
            }
            kind::DISCONNECT => {
                let mut r = Reader::new("disconnect", body, 2)?;
                let reason = from_code(&DISCONNECT_REASONS, "disconnect reason", r.u8()?)?;
                let len = usize::from(r.u8()?);
                r.expect_more(len)?;
                let bytes = &body[2..2 + len];
                r.at += len;
                r.finish()?;
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| invalid("disconnect text", e.valid_up_to() as u64))?
                    .to_string();
                ServerMessage::Disconnect { reason, text }
            }
            kind::DEPTH_SNAPSHOT => {
                let mut r = Reader::new("depth snapshot", body, 16)?;
                let market = MarketId(r.u32()?);
                let seq = r.u64()?;
                let bid_count = usize::from(r.u16()?);
                let ask_count = usize::from(r.u16()?);
                if bid_count > MAX_SNAPSHOT_LEVELS {
                    return Err(invalid("bid count", bid_count as u64));
                }
                if ask_count > MAX_SNAPSHOT_LEVELS {
                    return Err(invalid("ask count", ask_count as u64));
                }
                r.expect_more((bid_count + ask_count) * 16)?;
                let level = |r: &mut Reader| -> Result<(Price, Qty), DecodeError> {
                    Ok((Price(r.i64()?), Qty(r.i64()?)))
                };
                let bids = (0..bid_count).map(|_| level(&mut r)).collect::<Result<Vec<_>, _>>()?;
                let asks = (0..ask_count).map(|_| level(&mut r)).collect::<Result<Vec<_>, _>>()?;
                r.finish()?;
                ServerMessage::DepthSnapshot { market, seq, bids, asks }
            }
            kind::DEPTH_UPDATE => {
                let mut r = Reader::new("depth update", body, 29)?;
                let market = MarketId(r.u32()?);
                let seq = r.u64()?;
                let side = r.side()?;
                let price = Price(r.i64()?);
                let qty = Qty(r.i64()?);
                r.finish()?;
                ServerMessage::DepthUpdate { market, seq, side, price, qty }
            }
            kind::TRADE => {
                let mut r = Reader::new("trade", body, 22)?;
                let market = MarketId(r.u32()?);
                let price = Price(r.i64()?);
                let qty = Qty(r.i64()?);
                let taker_side = r.side()?;
                let liquidation = r.bool("liquidation flag")?;
                r.finish()?;
                ServerMessage::Trade { market, price, qty, taker_side, liquidation }
            }
            kind::MARK_PRICE => {
                let mut r = Reader::new("mark price", body, 20)?;
                let market = MarketId(r.u32()?);
                let index = Price(r.i64()?);
                let mark = Price(r.i64()?);
                r.finish()?;
                ServerMessage::MarkPrice { market, index, mark }
            }
            kind::FUNDING => {
                let mut r = Reader::new("funding", body, 20)?;
                let market = MarketId(r.u32()?);
                let rate = Rate(r.i64()?);
                let price = Price(r.i64()?);
                r.finish()?;
                ServerMessage::Funding { market, rate, price }
            }
            kind::LIQUIDATION_PRINT => {
                let mut r = Reader::new("liquidation print", body, 21)?;
                let market = MarketId(r.u32()?);
                let side = r.side()?;
                let price = Price(r.i64()?);
                let qty = Qty(r.i64()?);
                r.finish()?;
                ServerMessage::LiquidationPrint { market, side, price, qty }
            }
            kind::HEATMAP => {
                let mut r = Reader::new("heatmap", body, 14)?;
                let market = MarketId(r.u32()?);
                let bucket_ticks = r.i64()?;
                let count = usize::from(r.u16()?);
                if count > MAX_HEATMAP_BUCKETS {
                    return Err(invalid("bucket count", count as u64));
                }
                r.expect_more(count * 40)?;
                let mut buckets = Vec::with_capacity(count);
                for _ in 0..count {
                    buckets.push(HeatmapBucket {
                        price: Price(r.i64()?),
                        long_qty: Qty(r.i64()?),
                        long_notional: Money(r.i64()?),
                        short_qty: Qty(r.i64()?),
                        short_notional: Money(r.i64()?),
                    });
                }
                r.finish()?;
                ServerMessage::Heatmap { market, bucket_ticks, buckets }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        Ok(message)
    }
}

/// The longest prefix of `text` that fits in `max` bytes without splitting a character.
fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// A logon key as its wire bytes: UTF-8, zero-padded (keys longer than [`KEY_LEN`] are cut).
pub fn key_bytes(key: &str) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    let bytes = key.as_bytes();
    let n = bytes.len().min(KEY_LEN);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

#[cfg(test)]
mod tests;
