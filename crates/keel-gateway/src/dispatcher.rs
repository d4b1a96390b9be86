//! The dispatcher: turns every published outcome, in order, into messages — acks and rejects for
//! the session that asked, private notices for the accounts an event names (both sides of a fill,
//! funding payments), and market data for subscribers.
//!
//! It runs on the sequencer thread itself, as its [`Sink`]: right after a batch is committed its
//! outcomes are encoded into the sessions' outbound buffers and sent with one non-blocking write
//! per session, so an acknowledgement leaves the process without a hand-off to another thread.
//! It also owns the sessions' inbound side ([`Inbound`]), which the sequencer polls for commands
//! on the same thread. It is the only owner of the routing tables and the market-data views, so
//! none of them needs a lock. Sessions tell it about logons and subscriptions through the control
//! channel, and about each request through their own request queue, always before the command
//! concerned is applied — so it never meets an outcome it cannot attribute.

use crate::codec::{LiquidationNotice, LiquidationStep, RejectCode, ServerMessage, channel};
use crate::config::ServeConfig;
use crate::depth::{DepthView, LevelChange};
use crate::inbound::{Connection, Context, Inbound};
use crate::outbound::{Outbound, Push};
use crate::server::{DISPATCHER_SESSION, OPERATOR_SESSION, Stats};
use crossbeam::channel::{Receiver, Sender};
use crossbeam::queue::SegQueue;
use keel_engine::sequencer::{Published, Sink, Waker};
use keel_engine::{Command, Event, PlaceOrder};
use keel_liquidation::LiquidationEvent;
use keel_margin::{LiquidationTarget, Liquidity};
use keel_types::{AccountId, BookEvent, MarketId, Money, OrderId, Price, Qty, Side};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a session's request was, for its ack.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RequestKind {
    /// A new order (its id comes from the engine).
    Place(PlaceOrder),
    /// A cancel or amend of this order.
    Order(OrderId),
    /// Anything else.
    Other,
}

/// One request a session submitted, in its queue until the outcome comes back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request {
    /// The low half of the submission's tag (the session's own counter).
    pub(crate) number: u32,
    /// The client's request id.
    pub(crate) request: u64,
    /// What it was.
    pub(crate) kind: RequestKind,
}

/// A session's requests in submission order. The session pushes before it submits; the
/// dispatcher pops when the outcome arrives. Every queued request is applied, so its entry is at
/// the head; the dispatcher still skips entries that have no outcome rather than misattribute one.
pub(crate) type Requests = Arc<SegQueue<Request>>;

/// What sessions and the operator tell the dispatcher.
pub(crate) enum Control {
    /// A session logged on (as an account, or as a price feeder when `account` is `None`).
    Register { session: u32, account: Option<AccountId>, out: Arc<Outbound>, requests: Requests },
    /// A session ended.
    Unregister { session: u32 },
    /// Market-data subscription.
    Subscribe { session: u32, market: MarketId, channels: u8 },
    /// Market-data unsubscription.
    Unsubscribe { session: u32, market: MarketId, channels: u8 },
    /// An operator command is about to be submitted under `tag`; its events go to `reply`.
    Operator { tag: u64, place: Option<PlaceOrder>, reply: Sender<Vec<Event>> },
    /// A new connection, from the acceptor: its inbound side is read on the sequencer thread.
    Adopt(Connection),
}

struct SessionRoute {
    account: Option<AccountId>,
    out: Arc<Outbound>,
    requests: Requests,
}

struct Pending {
    session: u32,
    request: u64,
    kind: RequestKind,
}

/// What one of the dispatcher's own queries was for.
enum Internal {
    Depth(MarketId),
    Heatmap,
    /// A `Tick`: its events (funding settlements) are routed like any other outcome's.
    Tick,
}

struct MarketState {
    depth: DepthView,
    subscribers: Vec<(u32, u8)>,
    depth_in_flight: bool,
}

/// How often depth is checked against the engine.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// How often the heatmap is recomputed while someone watches it.
const HEATMAP_EVERY: Duration = Duration::from_secs(1);
/// Levels per side in a snapshot sent to a new subscriber.
const SNAPSHOT_LEVELS: usize = crate::codec::MAX_SNAPSHOT_LEVELS;

/// The dispatcher's state; runs on the sequencer thread as its [`Sink`].
pub(crate) struct Dispatcher {
    control: Receiver<Control>,
    inbound: Inbound,
    stats: Arc<Stats>,
    sessions: HashMap<u32, SessionRoute>,
    by_account: HashMap<AccountId, Vec<u32>>,
    operator: HashMap<u64, (Option<PlaceOrder>, Sender<Vec<Event>>)>,
    internal: HashMap<u64, Internal>,
    next_internal: u32,
    markets: BTreeMap<MarketId, MarketState>,
    heatmap_bucket_ticks: i64,
    touched: Vec<u32>,
    changes: Vec<LevelChange>,
    last_seq: u64,
    next_resync: Instant,
    next_heatmap: Instant,
    tick_every: Option<Duration>,
    next_tick: Instant,
}

impl Sink for Dispatcher {
    fn publish(&mut self, outcomes: &mut Vec<Published>, follow_up: &mut Vec<(u64, Command)>) {
        let _ = self.drain_control();
        // Read in place: the sequencer reuses the outcomes' event vectors.
        for published in outcomes.iter() {
            self.handle(published);
        }
        self.flush_touched();
        let now = Instant::now();
        if now >= self.next_resync {
            self.next_resync = now + RESYNC_EVERY;
            let ids: Vec<MarketId> = self.markets.keys().copied().collect();
            ids.into_iter().for_each(|m| self.query_depth(m, follow_up));
        } else if self.markets.values().any(|m| m.depth.stale && !m.depth_in_flight) {
            let stale: Vec<MarketId> =
                self.markets.iter().filter(|(_, m)| m.depth.stale).map(|(id, _)| *id).collect();
            stale.into_iter().for_each(|m| self.query_depth(m, follow_up));
        }
        if now >= self.next_heatmap {
            self.next_heatmap = now + HEATMAP_EVERY;
            self.start_heatmap_round(follow_up);
        }
        if let Some(every) = self.tick_every
            && now >= self.next_tick
        {
            self.next_tick = now + every;
            self.submit_internal(Command::Tick, Internal::Tick, follow_up);
        }
    }

    fn poll_input(&mut self, input: &mut Vec<(u64, Command)>) -> bool {
        let adopted = self.drain_control();
        let told = self.inbound.poll(input);
        adopted || told || !input.is_empty()
    }

    fn wait_for_input(&mut self, timeout: Duration) -> bool {
        self.inbound.wait(timeout);
        true
    }

    fn waker(&self) -> Option<Waker> {
        Some(self.inbound.waker())
    }
}

impl Dispatcher {
    /// A dispatcher for `config`'s markets; `control` is the receiving end of `to_self`, which
    /// sessions and the operator send on.
    pub(crate) fn new(
        control: Receiver<Control>,
        to_self: Sender<Control>,
        context: Arc<Context>,
        config: &ServeConfig,
    ) -> std::io::Result<Dispatcher> {
        let stats = Arc::clone(&context.stats);
        let inbound = Inbound::new(context, to_self)?;
        let markets = config
            .markets
            .iter()
            .filter_map(|m| {
                // Only markets the configuration can list (a known preset) get a view.
                crate::config::preset(&m.preset, m.id)?;
                Some((
                    MarketId(m.id),
                    MarketState {
                        depth: DepthView::default(),
                        subscribers: Vec::new(),
                        depth_in_flight: false,
                    },
                ))
            })
            .collect();
        let now = Instant::now();
        Ok(Dispatcher {
            control,
            inbound,
            stats,
            sessions: HashMap::new(),
            by_account: HashMap::new(),
            operator: HashMap::new(),
            internal: HashMap::new(),
            next_internal: 0,
            markets,
            heatmap_bucket_ticks: config.heatmap_bucket_ticks,
            touched: Vec::new(),
            changes: Vec::new(),
            last_seq: 0,
            next_resync: now,
            next_heatmap: now,
            tick_every: (config.tick_ms > 0).then(|| Duration::from_millis(config.tick_ms)),
            next_tick: now,
        })
    }

    /// Applies what sessions, the acceptor and the operator sent; true when it adopted a new
    /// connection (which may already have input waiting).
    fn drain_control(&mut self) -> bool {
        let mut adopted = false;
        while let Ok(control) = self.control.try_recv() {
            match control {
                Control::Adopt(connection) => {
                    self.inbound.adopt(connection);
                    adopted = true;
                }
                Control::Register { session, account, out, requests } => {
                    self.sessions.insert(session, SessionRoute { account, out, requests });
                    if let Some(account) = account {
                        self.by_account.entry(account).or_default().push(session);
                    }
                }
                Control::Unregister { session } => self.remove_session(session),
                Control::Subscribe { session, market, channels } => self.subscribe(session, market, channels),
                Control::Unsubscribe { session, market, channels } => {
                    if let Some(state) = self.markets.get_mut(&market) {
                        for entry in state.subscribers.iter_mut().filter(|(s, _)| *s == session) {
                            entry.1 &= !channels;
                        }
                        state.subscribers.retain(|(_, c)| *c != 0);
                    }
                }
                Control::Operator { tag, place, reply } => {
                    self.operator.insert(tag, (place, reply));
                }
            }
        }
        adopted
    }

    fn remove_session(&mut self, session: u32) {
        if let Some(route) = self.sessions.remove(&session)
            && let Some(account) = route.account
            && let Some(list) = self.by_account.get_mut(&account)
        {
            list.retain(|s| *s != session);
        }
        for state in self.markets.values_mut() {
            state.subscribers.retain(|(s, _)| *s != session);
        }
    }

    fn subscribe(&mut self, session: u32, market: MarketId, channels: u8) {
        let Some(state) = self.markets.get_mut(&market) else { return };
        let previous = state.subscribers.iter().find(|(s, _)| *s == session).map_or(0, |e| e.1);
        match state.subscribers.iter_mut().find(|(s, _)| *s == session) {
            Some(entry) => entry.1 |= channels,
            None => state.subscribers.push((session, channels)),
        }
        if channels & channel::DEPTH != 0 && previous & channel::DEPTH == 0 {
            let (bids, asks) = state.depth.snapshot(SNAPSHOT_LEVELS);
            let snapshot = ServerMessage::DepthSnapshot { market, seq: state.depth.seq(), bids, asks };
            self.send(session, &snapshot);
        }
    }

    /// Queues one message for a session; a session whose buffer overflows leaves the routes.
    fn send(&mut self, session: u32, message: &ServerMessage) {
        let Some(route) = self.sessions.get(&session) else { return };
        match route.out.push(message) {
            Push::Queued => self.touched.push(session),
            Push::Overflowed => {
                self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                self.remove_session(session);
            }
            Push::Closed => self.remove_session(session),
        }
    }

    fn send_account(&mut self, account: AccountId, message: &ServerMessage) {
        let Some(sessions) = self.by_account.get(&account) else { return };
        if sessions.len() == 1 {
            let session = sessions[0];
            self.send(session, message);
        } else {
            for session in sessions.clone() {
                self.send(session, message);
            }
        }
    }

    fn publish(&mut self, market: MarketId, channel_bit: u8, message: &ServerMessage) {
        let Some(state) = self.markets.get(&market) else { return };
        if state.subscribers.is_empty() {
            return;
        }
        let targets: Vec<u32> =
            state.subscribers.iter().filter(|(_, c)| c & channel_bit != 0).map(|(s, _)| *s).collect();
        for session in targets {
            self.send(session, message);
        }
    }

    /// Sends every session that got messages in this batch what it got: one non-blocking write
    /// each, from this thread.
    fn flush_touched(&mut self) {
        if self.touched.len() > 1 {
            self.touched.sort_unstable();
            self.touched.dedup();
        }
        for session in self.touched.drain(..) {
            if let Some(route) = self.sessions.get(&session) {
                route.out.flush();
            }
        }
    }

    fn submit_internal(&mut self, command: Command, purpose: Internal, follow_up: &mut Vec<(u64, Command)>) {
        self.next_internal = self.next_internal.wrapping_add(1);
        let tag = (u64::from(DISPATCHER_SESSION) << 32) | u64::from(self.next_internal);
        follow_up.push((tag, command));
        self.internal.insert(tag, purpose);
    }

    fn query_depth(&mut self, market: MarketId, follow_up: &mut Vec<(u64, Command)>) {
        let Some(state) = self.markets.get_mut(&market) else { return };
        if !state.depth_in_flight {
            state.depth_in_flight = true;
            self.submit_internal(
                Command::Depth { market, levels: u32::MAX },
                Internal::Depth(market),
                follow_up,
            );
        }
    }

    /// Asks the engine for the heatmap of every market someone watches; the answer comes from the
    /// maintenance index, so it costs the engine one pass over that market's indexed positions.
    fn start_heatmap_round(&mut self, follow_up: &mut Vec<(u64, Command)>) {
        let bucket_ticks = self.heatmap_bucket_ticks;
        let watched: Vec<MarketId> = self
            .markets
            .iter()
            .filter(|(_, m)| m.subscribers.iter().any(|(_, c)| c & channel::HEATMAP != 0))
            .map(|(id, _)| *id)
            .collect();
        for market in watched {
            self.submit_internal(Command::Heatmap { market, bucket_ticks }, Internal::Heatmap, follow_up);
        }
    }

    // ----- one outcome -----

    fn handle(&mut self, published: &Published) {
        if published.seq > self.last_seq + 1 && self.last_seq != 0 {
            // The ring overwrote outcomes we never saw: depth must be rebuilt from the engine.
            for state in self.markets.values_mut() {
                state.depth.stale = true;
            }
        }
        self.last_seq = self.last_seq.max(published.seq);
        let session = (published.tag >> 32) as u32;
        let mut place = None;
        if session == DISPATCHER_SESSION {
            match self.internal.remove(&published.tag) {
                Some(Internal::Tick) => self.route(&published.events, None),
                Some(purpose) => self.handle_internal(purpose, &published.events),
                None => {}
            }
            return;
        }
        let mut reply = None;
        if session == OPERATOR_SESSION {
            if let Some((operator_place, sender)) = self.operator.remove(&published.tag) {
                place = operator_place;
                reply = Some(sender);
            }
        } else if let Some(pending) = self.take_request(session, published.tag as u32) {
            if let RequestKind::Place(order) = pending.kind {
                place = Some(order);
            }
            self.acknowledge(&pending, &published.events);
        }
        self.route(&published.events, place);
        if let Some(reply) = reply {
            let _ = reply.send(published.events.clone());
        }
    }

    /// The request of `session` numbered `number`: requests come back in submission order, so
    /// entries before it would belong to requests that never reached the engine (none do today).
    fn take_request(&mut self, session: u32, number: u32) -> Option<Pending> {
        let route = self.sessions.get(&session)?;
        while let Some(entry) = route.requests.pop() {
            if entry.number == number {
                return Some(Pending { session, request: entry.request, kind: entry.kind });
            }
        }
        None
    }

    fn handle_internal(&mut self, purpose: Internal, events: &[Event]) {
        match purpose {
            Internal::Depth(market) => {
                if let Some(state) = self.markets.get_mut(&market) {
                    state.depth_in_flight = false;
                }
                for event in events {
                    if let Event::Depth { market, bids, asks } = event {
                        let mut changes = std::mem::take(&mut self.changes);
                        if let Some(state) = self.markets.get_mut(market) {
                            state.depth.reconcile(bids, asks, &mut changes);
                        }
                        self.publish_changes(*market, &mut changes);
                        self.changes = changes;
                    }
                }
            }
            Internal::Tick => self.route(events, None),
            Internal::Heatmap => {
                for event in events {
                    if let Event::Heatmap { market, buckets } = event {
                        let buckets =
                            buckets.iter().copied().take(crate::codec::MAX_HEATMAP_BUCKETS).collect();
                        let bucket_ticks = self.heatmap_bucket_ticks;
                        let message = ServerMessage::Heatmap { market: *market, bucket_ticks, buckets };
                        self.publish(*market, channel::HEATMAP, &message);
                    }
                }
            }
        }
    }

    /// The ack or reject for the session that asked, before any other message of the outcome.
    fn acknowledge(&mut self, pending: &Pending, events: &[Event]) {
        let message = match events.iter().find_map(|e| match e {
            Event::Rejected { code, .. } => Some(*code),
            _ => None,
        }) {
            Some(code) => ServerMessage::Reject { request: pending.request, code: RejectCode::Engine(code) },
            None => {
                let order = match pending.kind {
                    RequestKind::Place(_) => events
                        .iter()
                        .find_map(|e| match e {
                            Event::Book { event: BookEvent::Accepted { id, .. }, .. } => Some(*id),
                            _ => None,
                        })
                        .unwrap_or_default(),
                    RequestKind::Order(id) => id,
                    RequestKind::Other => OrderId(0),
                };
                ServerMessage::Ack { request: pending.request, order }
            }
        };
        self.send(pending.session, &message);
        for event in events {
            if let Event::AccountView(view) = event {
                let update = ServerMessage::AccountUpdate {
                    request: pending.request,
                    balance: view.balance,
                    equity: view.equity,
                    available: view.available,
                    initial_margin: view.initial_margin,
                    maintenance_margin: view.maintenance_margin,
                };
                self.send(pending.session, &update);
            }
        }
    }

    /// Private notices and market data for every event of one outcome.
    fn route(&mut self, events: &[Event], mut place: Option<PlaceOrder>) {
        let mut changes = std::mem::take(&mut self.changes);
        let mut touched_markets: Vec<MarketId> = Vec::new();
        for event in events {
            match event {
                Event::Book { market, event } => {
                    if let (BookEvent::Accepted { id, .. }, Some(order)) = (event, place.take())
                        && let Some(state) = self.markets.get_mut(market)
                    {
                        state.depth.expect_order(*id, order.side, order.kind, order.qty);
                    }
                    self.book_event(*market, event, false, &mut changes, &mut touched_markets);
                }
                Event::Settled {
                    market,
                    account,
                    order,
                    side,
                    price,
                    qty,
                    liquidity,
                    realized_pnl,
                    fee,
                    position,
                    balance,
                } => {
                    let fill = ServerMessage::Fill {
                        market: *market,
                        order: *order,
                        side: *side,
                        liquidity: *liquidity,
                        price: *price,
                        qty: *qty,
                        fee: *fee,
                        realized_pnl: *realized_pnl,
                        position: *position,
                        balance: *balance,
                    };
                    self.send_account(*account, &fill);
                }
                Event::Mark { market, index, mark } => {
                    let message = ServerMessage::MarkPrice { market: *market, index: *index, mark: *mark };
                    self.publish(*market, channel::PRICES, &message);
                }
                Event::Funding { market, rate, price, payments } => {
                    let message = ServerMessage::Funding { market: *market, rate: *rate, price: *price };
                    self.publish(*market, channel::PRICES, &message);
                    for (account, amount) in payments {
                        if !self.by_account.contains_key(account) {
                            continue;
                        }
                        let payment = ServerMessage::FundingPayment {
                            market: *market,
                            rate: *rate,
                            price: *price,
                            amount: *amount,
                        };
                        self.send_account(*account, &payment);
                    }
                }
                Event::Liquidation(event) => {
                    self.liquidation_event(event, &mut changes, &mut touched_markets);
                }
                _ => {}
            }
        }
        for market in touched_markets {
            if let Some(state) = self.markets.get_mut(&market) {
                state.depth.end_command(&mut changes);
            }
            self.publish_changes(market, &mut changes);
        }
        self.changes = changes;
    }

    fn book_event(
        &mut self,
        market: MarketId,
        event: &BookEvent,
        liquidation: bool,
        changes: &mut Vec<LevelChange>,
        touched_markets: &mut Vec<MarketId>,
    ) {
        if let Some(state) = self.markets.get_mut(&market) {
            if !touched_markets.contains(&market) {
                touched_markets.push(market);
            }
            state.depth.apply(event, changes);
        }
        // Level updates go out before the trade that caused them is reported as a print.
        self.publish_changes(market, changes);
        match *event {
            BookEvent::Fill { maker, maker_account, taker_side, price, qty, .. } => {
                let trade = ServerMessage::Trade { market, price, qty, taker_side, liquidation };
                self.publish(market, channel::TRADES, &trade);
                if liquidation {
                    // The liquidator settles these itself, so no `Settled` event reaches the maker.
                    let fill = ServerMessage::Fill {
                        market,
                        order: maker,
                        side: taker_side.opposite(),
                        liquidity: Liquidity::Maker,
                        price,
                        qty,
                        fee: Money::ZERO,
                        realized_pnl: Money::ZERO,
                        position: Qty::ZERO,
                        balance: Money::ZERO,
                    };
                    self.send_account(maker_account, &fill);
                }
            }
            BookEvent::Cancelled { id, account, remaining, reason, .. } => {
                let message = ServerMessage::Cancelled { market, order: id, remaining, reason };
                self.send_account(account, &message);
            }
            BookEvent::Amended { id, account, price, qty, priority_kept, .. } => {
                let message = ServerMessage::Amended { market, order: id, price, qty, priority_kept };
                self.send_account(account, &message);
            }
            BookEvent::Triggered { id, account, reference_price } => {
                let message = ServerMessage::Triggered { market, order: id, reference_price };
                self.send_account(account, &message);
            }
            BookEvent::Accepted { .. } | BookEvent::Rejected { .. } => {}
        }
    }

    fn liquidation_event(
        &mut self,
        event: &LiquidationEvent,
        changes: &mut Vec<LevelChange>,
        touched_markets: &mut Vec<MarketId>,
    ) {
        let blank = LiquidationNotice {
            kind: LiquidationStep::MarginCall,
            market: crate::codec::ALL_MARKETS,
            side: Side::Buy,
            order: OrderId(0),
            price: Price(0),
            qty: Qty(0),
            amount_a: Money::ZERO,
            amount_b: Money::ZERO,
        };
        let target_market = |target: &LiquidationTarget| match target {
            LiquidationTarget::Cross => crate::codec::ALL_MARKETS,
            LiquidationTarget::Isolated(market) => market.0,
        };
        match *event {
            LiquidationEvent::Book { market, event } => {
                self.book_event(market, &event, true, changes, touched_markets);
            }
            LiquidationEvent::MarginCall { account, target, equity, maintenance_margin } => {
                let notice = LiquidationNotice {
                    market: target_market(&target),
                    amount_a: equity,
                    amount_b: maintenance_margin,
                    ..blank
                };
                self.send_account(account, &ServerMessage::Liquidation(notice));
            }
            LiquidationEvent::OrderCancelled { account, market, order, side, price, qty } => {
                let notice = LiquidationNotice {
                    kind: LiquidationStep::OrderCancelled,
                    market: market.0,
                    side,
                    order,
                    price,
                    qty,
                    ..blank
                };
                self.send_account(account, &ServerMessage::Liquidation(notice));
            }
            LiquidationEvent::Recovered { account, target } => {
                let notice = LiquidationNotice {
                    kind: LiquidationStep::Recovered,
                    market: target_market(&target),
                    ..blank
                };
                self.send_account(account, &ServerMessage::Liquidation(notice));
            }
            LiquidationEvent::LiquidationOrder {
                account,
                market,
                order,
                side,
                qty,
                limit,
                bankruptcy_price,
                ..
            } => {
                let notice = LiquidationNotice {
                    kind: LiquidationStep::Order,
                    market: market.0,
                    side,
                    order,
                    price: limit,
                    qty,
                    amount_a: Money(bankruptcy_price.0),
                    ..blank
                };
                self.send_account(account, &ServerMessage::Liquidation(notice));
                let print = ServerMessage::LiquidationPrint { market, side, price: limit, qty };
                self.publish(market, channel::LIQUIDATIONS, &print);
            }
            LiquidationEvent::LiquidationFill { account, market, order, price, qty, .. } => {
                let notice = LiquidationNotice {
                    kind: LiquidationStep::Fill,
                    market: market.0,
                    order,
                    price,
                    qty,
                    ..blank
                };
                self.send_account(account, &ServerMessage::Liquidation(notice));
            }
            LiquidationEvent::Bankruptcy { account, target, fund_paid, adl_qty } => {
                let notice = LiquidationNotice {
                    kind: LiquidationStep::Bankruptcy,
                    market: target_market(&target),
                    qty: adl_qty,
                    amount_a: fund_paid,
                    ..blank
                };
                self.send_account(account, &ServerMessage::Liquidation(notice));
            }
            LiquidationEvent::Adl { market, liquidated, counterparty, side, qty, price } => {
                let to_liquidated = ServerMessage::Adl { market, liquidated: true, side, price, qty };
                self.send_account(liquidated, &to_liquidated);
                let to_counterparty =
                    ServerMessage::Adl { market, liquidated: false, side: side.opposite(), price, qty };
                self.send_account(counterparty, &to_counterparty);
            }
            LiquidationEvent::FundFlow { .. } | LiquidationEvent::Waiting { .. } => {}
        }
    }

    fn publish_changes(&mut self, market: MarketId, changes: &mut Vec<LevelChange>) {
        for change in changes.drain(..) {
            let message = ServerMessage::DepthUpdate {
                market,
                seq: change.seq,
                side: change.side,
                price: change.price,
                qty: change.qty,
            };
            self.publish(market, channel::DEPTH, &message);
        }
    }
}
