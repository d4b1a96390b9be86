//! The gateway end to end over real loopback TCP: logon, trading between two accounts with fills
//! on both sessions, account isolation, market data that rebuilds the engine's book, liquidation
//! notices, hostile input, slow consumers, idle timeouts, rate limits, and restart from the journal.

use keel_engine::{Command, ErrorCode, Event};
use keel_gateway::client::{Client, Receiver};
use keel_gateway::codec::{ClientMessage, DisconnectReason, NewOrder, RejectCode, ServerMessage, channel};
use keel_gateway::config::{AccountEntry, DEMO_FEEDER, Flush, ServeConfig};
use keel_gateway::server::Server;
use keel_types::{AccountId, MarketId, OrderId, OrderKind, Price, Qty, Side, StpMode, TimeInForce};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Upper bound on any single wait, so a broken server fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);
const BTC: MarketId = MarketId(1);

/// A test's store directory, removed when the test ends (passing or failing).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("keel-gateway-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo configuration on a free port, journaling to a fresh directory that is removed when
/// the returned guard is dropped (declare the guard before the server, so the server goes first).
fn config(name: &str) -> (ServeConfig, TempDir) {
    let dir = TempDir::new(name);
    let mut config = ServeConfig::demo();
    config.port = 0;
    config.data_dir = dir.0.clone();
    config.flush = Flush::Buffered;
    config.snapshot_every = None;
    // No background ticks: the journal holds exactly what each test did.
    config.tick_ms = 0;
    (config, dir)
}

fn key(account: u32) -> String {
    format!("keel-demo-key-{account}")
}

fn logon(server: &Server, account: u32) -> Client {
    let (client, ack) = Client::logon(server.address(), AccountId(account), &key(account)).expect("logon");
    assert_eq!(ack.account, AccountId(account));
    client
}

fn limit(request: u64, side: Side, price: i64, qty: i64) -> ClientMessage {
    ClientMessage::NewOrder(NewOrder {
        request,
        market: BTC,
        side,
        kind: OrderKind::Limit { price: Price(price) },
        qty: Qty(qty),
        tif: TimeInForce::Gtc,
        stp: StpMode::CancelNewest,
        reduce_only: false,
    })
}

/// Sends `message` and returns the ack's order id or the reject code for its request.
fn request(client: &mut Client, message: ClientMessage) -> Result<OrderId, RejectCode> {
    let id = message.request_id().unwrap_or_else(|| panic!("not a request: {message:?}"));
    client.send(&message).expect("send");
    client
        .receiver
        .recv_until(WAIT, |m| match m {
            ServerMessage::Ack { request, order } if *request == id => Some(Ok(*order)),
            ServerMessage::Reject { request, code } if *request == id => Some(Err(*code)),
            _ => None,
        })
        .expect("ack or reject")
}

fn digest(server: &Server) -> u64 {
    let events = server.operator(Command::Digest).expect("digest");
    events
        .iter()
        .find_map(|e| if let Event::Digest { digest } = e { Some(*digest) } else { None })
        .expect("digest")
}

type Levels = (Vec<(Price, Qty)>, Vec<(Price, Qty)>);

fn engine_depth(server: &Server) -> Levels {
    let events = server.operator(Command::Depth { market: BTC, levels: u32::MAX }).expect("depth");
    events
        .into_iter()
        .find_map(|e| if let Event::Depth { bids, asks, .. } = e { Some((bids, asks)) } else { None })
        .expect("depth event")
}

/// The settlement balance the engine reports for an account.
fn balance(server: &Server, account: u32) -> i64 {
    let events = server.operator(Command::AccountView { account: AccountId(account) }).expect("view");
    events
        .iter()
        .find_map(|e| if let Event::AccountView(v) = e { Some(v.balance.0) } else { None })
        .expect("view")
}

/// A market-data subscriber's book, rebuilt from a snapshot and sequenced updates.
#[derive(Default)]
struct L2 {
    bids: BTreeMap<Price, Qty>,
    asks: BTreeMap<Price, Qty>,
    seq: u64,
    trades: u64,
}

impl L2 {
    fn apply(&mut self, message: &ServerMessage) {
        match message {
            ServerMessage::DepthSnapshot { seq, bids, asks, .. } => {
                self.bids = bids.iter().copied().collect();
                self.asks = asks.iter().copied().collect();
                self.seq = *seq;
            }
            ServerMessage::DepthUpdate { seq, side, price, qty, .. } => {
                assert_eq!(*seq, self.seq + 1, "depth updates are consecutive");
                self.seq = *seq;
                let levels = if *side == Side::Buy { &mut self.bids } else { &mut self.asks };
                if qty.0 == 0 {
                    assert!(levels.remove(price).is_some(), "an update removes only a level that exists");
                } else {
                    levels.insert(*price, *qty);
                }
            }
            ServerMessage::Trade { .. } => self.trades += 1,
            _ => {}
        }
    }

    fn levels(&self) -> Levels {
        (
            self.bids.iter().rev().map(|(p, q)| (*p, *q)).collect(),
            self.asks.iter().map(|(p, q)| (*p, *q)).collect(),
        )
    }

    /// Applies everything up to the answer of an account query sent now: since the dispatcher
    /// routes outcomes in order, every update published before that query has arrived by then.
    fn catch_up(&mut self, client: &mut Client, request: u64) {
        client.send(&ClientMessage::AccountQuery { request }).expect("send");
        let receiver: &mut Receiver = &mut client.receiver;
        receiver
            .recv_until(WAIT, |m| {
                self.apply(m);
                matches!(m, ServerMessage::AccountUpdate { request: r, .. } if *r == request).then_some(())
            })
            .expect("account update");
    }
}

#[test]
fn trade_between_two_accounts_fills_both_sessions_and_depth_rebuilds_the_engine_book() {
    let (config, _dir) = config("trade");
    let server = Server::open(&config).expect("server starts");
    let mut watcher = logon(&server, 3);
    watcher.send(&ClientMessage::Subscribe { market: BTC, channels: channel::ALL }).expect("subscribe");
    let mut book = L2::default();
    let mut alice = logon(&server, 1);
    let mut bob = logon(&server, 2);

    let mut resting = Vec::new();
    for (i, price) in [650_010, 650_020, 650_030].into_iter().enumerate() {
        resting.push(request(&mut alice, limit(i as u64 + 1, Side::Sell, price, 5)).expect("ask accepted"));
    }
    request(&mut bob, limit(10, Side::Buy, 649_990, 4)).expect("bid accepted");
    // Bob lifts the first ask and part of the second: two fills for each side.
    let taker = request(&mut bob, limit(11, Side::Buy, 650_020, 7)).expect("crossing bid accepted");
    let fills = |client: &mut Client, n: usize| {
        let mut fills = Vec::new();
        while fills.len() < n {
            let fill = client
                .receiver
                .recv_until(WAIT, |m| match m {
                    ServerMessage::Fill { order, side, price, qty, .. } => {
                        Some((*order, *side, *price, *qty))
                    }
                    _ => None,
                })
                .expect("fill");
            fills.push(fill);
        }
        fills
    };
    assert_eq!(
        fills(&mut bob, 2),
        vec![(taker, Side::Buy, Price(650_010), Qty(5)), (taker, Side::Buy, Price(650_020), Qty(2))]
    );
    assert_eq!(
        fills(&mut alice, 2),
        vec![
            (resting[0], Side::Sell, Price(650_010), Qty(5)),
            (resting[1], Side::Sell, Price(650_020), Qty(2))
        ]
    );
    // Amend and cancel move levels too.
    request(
        &mut alice,
        ClientMessage::Amend {
            request: 4,
            market: BTC,
            order: resting[2],
            price: Some(Price(650_050)),
            qty: Qty(3),
        },
    )
    .expect("amend accepted");
    request(&mut bob, limit(12, Side::Buy, 649_980, 6)).expect("bid accepted");
    request(&mut alice, ClientMessage::Cancel { request: 5, market: BTC, order: resting[1] })
        .expect("cancel");

    book.catch_up(&mut watcher, 100);
    let engine = engine_depth(&server);
    assert_eq!(book.levels(), engine);
    assert_eq!(
        engine,
        (vec![(Price(649_990), Qty(4)), (Price(649_980), Qty(6))], vec![(Price(650_050), Qty(3))])
    );
    assert_eq!(book.trades, 2, "both trades were printed");
    assert!(book.seq > 0);
    // The engine's periodic depth check publishes nothing when the view is already exact.
    std::thread::sleep(Duration::from_millis(1_200));
    let seq = book.seq;
    book.catch_up(&mut watcher, 101);
    assert_eq!(book.seq, seq, "no corrections were needed");
    server.shutdown().expect("clean shutdown");
}

#[test]
fn one_account_cannot_cancel_or_amend_another_accounts_orders() {
    let (config, _dir) = config("isolation");
    let server = Server::open(&config).expect("server starts");
    let mut alice = logon(&server, 1);
    let mut bob = logon(&server, 2);
    let order = request(&mut alice, limit(1, Side::Buy, 640_000, 3)).expect("accepted");
    // Refused requests are still journalled (they take a sequence number), so compare the
    // account and the book rather than the whole-state digest.
    let view =
        |server: &Server| server.operator(Command::AccountView { account: AccountId(1) }).expect("view");
    let before = (view(&server), engine_depth(&server));
    let unknown = Err(RejectCode::Engine(ErrorCode::UnknownOrder));
    assert_eq!(request(&mut bob, ClientMessage::Cancel { request: 1, market: BTC, order }), unknown);
    assert_eq!(
        request(&mut bob, ClientMessage::Amend { request: 2, market: BTC, order, price: None, qty: Qty(1) }),
        unknown
    );
    // Cancel-all acts on the sender's own account only.
    request(&mut bob, ClientMessage::CancelAll { request: 3, market: None }).expect("cancel all");
    assert_eq!((view(&server), engine_depth(&server)), before, "nothing changed");
    assert_eq!(engine_depth(&server).0, vec![(Price(640_000), Qty(3))]);
    assert_eq!(request(&mut alice, ClientMessage::Cancel { request: 2, market: BTC, order }), Ok(order));
    assert_eq!(engine_depth(&server).0, vec![]);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn a_falling_index_liquidates_a_leveraged_long_and_tells_it() {
    let (mut config, _dir) = config("liquidation");
    config.accounts.push(AccountEntry { id: 5, key: "thin-margin".into(), deposit: 4_000 });
    let server = Server::open(&config).expect("server starts");
    server
        .operator(Command::SetLeverage { account: AccountId(5), market: BTC, leverage: 20 })
        .expect("leverage");
    let (mut long, _) = Client::logon(server.address(), AccountId(5), "thin-margin").expect("logon");
    let mut maker = logon(&server, 1);
    let mut seller = logon(&server, 2);
    let mut watcher = logon(&server, 3);
    watcher.send(&ClientMessage::Subscribe { market: BTC, channels: channel::ALL }).expect("subscribe");

    // One BTC (1000 lots) bought at 65,000 with 4,000 USD at 20x.
    request(&mut maker, limit(1, Side::Sell, 650_000, 1_000)).expect("ask");
    let mut buy = limit(1, Side::Buy, 650_000, 1_000);
    if let ClientMessage::NewOrder(order) = &mut buy {
        order.tif = TimeInForce::Ioc;
    }
    request(&mut long, buy).expect("long opened");
    // The watcher's heatmap (from the engine's maintenance index) shows the new long in the
    // bucket where it would be liquidated, a little below its 65,000 entry.
    let heat = watcher
        .receiver
        .recv_until(WAIT, |m| match m {
            ServerMessage::Heatmap { buckets, .. } if buckets.iter().any(|b| b.long_qty.0 == 1_000) => {
                Some(buckets.clone())
            }
            _ => None,
        })
        .expect("a heatmap showing the long");
    let bucket = heat.iter().find(|b| b.long_qty.0 == 1_000).expect("the long's bucket");
    assert!((600_000..650_000).contains(&bucket.price.0), "{bucket:?}");
    // The market falls to 61,000: the maker requotes, a seller prints there, the index follows.
    request(&mut maker, ClientMessage::CancelAll { request: 2, market: None }).expect("cancel all");
    request(&mut maker, limit(3, Side::Buy, 610_000, 5_000)).expect("bid");
    request(&mut maker, limit(4, Side::Sell, 610_010, 5_000)).expect("ask");
    request(&mut seller, limit(1, Side::Sell, 610_000, 10)).expect("print");
    server.operator(Command::IndexPrice { market: BTC, price: Price(610_000) }).expect("index");

    let call = long
        .receiver
        .recv_until(WAIT, |m| match m {
            ServerMessage::Liquidation(notice) => Some(*notice),
            _ => None,
        })
        .expect("liquidation notice");
    assert_eq!(call.kind, keel_gateway::codec::LiquidationStep::MarginCall);
    assert!(call.amount_a < call.amount_b, "equity below maintenance: {call:?}");
    let print = watcher
        .receiver
        .recv_until(WAIT, |m| matches!(m, ServerMessage::LiquidationPrint { .. }).then(|| m.clone()))
        .expect("public liquidation print");
    assert!(matches!(print, ServerMessage::LiquidationPrint { side: Side::Sell, .. }));
    server.shutdown().expect("clean shutdown");
}

/// Connects, sends `bytes` (after logging on as account 4 when `log_on`), and returns the
/// disconnect reason the server gave.
fn disconnect_reason(server: &Server, log_on: bool, bytes: &[u8]) -> DisconnectReason {
    let mut client =
        if log_on { logon(server, 4) } else { Client::connect(server.address()).expect("connect") };
    client.sender.send_raw(bytes).expect("send");
    client
        .receiver
        .recv_until(WAIT, |m| match m {
            ServerMessage::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        })
        .expect("a disconnect frame with a reason")
}

#[test]
fn hostile_input_gets_a_reason_and_leaves_the_engine_and_other_sessions_alone() {
    let (config, _dir) = config("hostile");
    let server = Server::open(&config).expect("server starts");
    let mut alice = logon(&server, 1);
    request(&mut alice, limit(1, Side::Buy, 640_000, 3)).expect("accepted");
    let before = digest(&server);

    let logout = ClientMessage::Logout.encode();
    let mut oversized = logout.clone();
    oversized[..4].copy_from_slice(&1_000_000u32.to_le_bytes());
    let mut truncated = ClientMessage::Cancel { request: 1, market: BTC, order: OrderId(1) }.encode();
    truncated.truncate(truncated.len() - 4);
    let length = (truncated.len() - 4) as u32;
    truncated[..4].copy_from_slice(&length.to_le_bytes());
    let wrong_key =
        ClientMessage::Logon { account: AccountId(2), key: keel_gateway::codec::key_bytes("guess") };
    let unknown_account =
        ClientMessage::Logon { account: AccountId(99), key: keel_gateway::codec::key_bytes("x") };
    let relogon =
        ClientMessage::Logon { account: AccountId(4), key: keel_gateway::codec::key_bytes(&key(4)) };
    let cases: Vec<(bool, Vec<u8>, DisconnectReason)> = vec![
        (false, vec![0xde, 0xad, 0xbe, 0xef, 0, 0], DisconnectReason::MalformedFrame),
        (true, vec![0xde, 0xad, 0xbe, 0xef, 0, 0], DisconnectReason::MalformedFrame),
        (true, oversized, DisconnectReason::MalformedFrame),
        (true, truncated, DisconnectReason::MalformedFrame),
        (true, vec![2, 0, 0, 0, 1, 0x7e], DisconnectReason::MalformedFrame),
        (true, vec![2, 0, 0, 0, 2, 0x03], DisconnectReason::MalformedFrame),
        (false, wrong_key.encode(), DisconnectReason::BadCredentials),
        (false, unknown_account.encode(), DisconnectReason::BadCredentials),
        (false, limit(1, Side::Sell, 1, 1).encode(), DisconnectReason::NotLoggedOn),
        (true, relogon.encode(), DisconnectReason::AlreadyLoggedOn),
        (true, logout, DisconnectReason::Logout),
    ];
    for (log_on, bytes, expected) in cases {
        assert_eq!(disconnect_reason(&server, log_on, &bytes), expected, "{bytes:02x?}");
    }
    assert_eq!(digest(&server), before, "the engine state is unchanged");
    assert!(server.stats().malformed.load(Ordering::Relaxed) >= 6);
    // The session that behaved is still served.
    request(&mut alice, limit(2, Side::Buy, 640_010, 1)).expect("still trading");
    server.shutdown().expect("clean shutdown");
}

#[test]
fn a_slow_reader_is_disconnected_without_stalling_anyone_else() {
    let (mut config, _dir) = config("slow");
    config.limits.outbound_bytes = 64 * 1024;
    let server = Server::open(&config).expect("server starts");
    let mut maker = logon(&server, 1);
    // 400 price levels make every depth snapshot about 6 KB.
    let mut batch = Vec::new();
    for i in 0..200u64 {
        limit(i + 1, Side::Buy, 600_000 - i as i64, 1).encode_into(&mut batch);
        limit(i + 1_001, Side::Sell, 700_000 + i as i64, 1).encode_into(&mut batch);
    }
    maker.sender.send_raw(&batch).expect("send");
    maker
        .receiver
        .recv_until(WAIT, |m| matches!(m, ServerMessage::Ack { request: 1_200, .. }).then_some(()))
        .expect("all placed");

    // The slow session keeps asking for snapshots and never reads.
    let mut slow = logon(&server, 2);
    let mut spam = Vec::new();
    for _ in 0..2_000 {
        ClientMessage::Subscribe { market: BTC, channels: channel::DEPTH }.encode_into(&mut spam);
        ClientMessage::Unsubscribe { market: BTC, channels: channel::DEPTH }.encode_into(&mut spam);
    }
    let deadline = Instant::now() + WAIT;
    while server.stats().slow_consumers.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the slow session was never cut off");
        // Once the server has ended the session, further writes fail: that is the point.
        if slow.sender.send_raw(&spam).is_err() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Everyone else is served as usual.
    request(&mut maker, limit(5_000, Side::Buy, 600_500, 1)).expect("still trading");
    // The slow session finds the reason at the end of what it was sent.
    let reason = slow
        .receiver
        .recv_until(WAIT, |m| match m {
            ServerMessage::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        })
        .expect("disconnect frame");
    assert_eq!(reason, DisconnectReason::SlowConsumer);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn idle_sessions_get_heartbeats_then_time_out_and_bursts_are_rate_limited() {
    let (mut config, _dir) = config("limits");
    config.limits.heartbeat_ms = 100;
    config.limits.idle_timeout_ms = 600;
    config.limits.orders_per_second = 10;
    config.limits.burst = 5;
    let server = Server::open(&config).expect("server starts");

    let mut idle = logon(&server, 1);
    let mut heartbeats = 0;
    let reason = idle
        .receiver
        .recv_until(WAIT, |m| match m {
            ServerMessage::Heartbeat => {
                heartbeats += 1;
                None
            }
            ServerMessage::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        })
        .expect("disconnect");
    assert_eq!(reason, DisconnectReason::IdleTimeout);
    assert!(heartbeats >= 2, "{heartbeats} heartbeats");

    let mut burst = logon(&server, 2);
    let mut bytes = Vec::new();
    for i in 1..=20 {
        limit(i, Side::Buy, 600_000, 1).encode_into(&mut bytes);
    }
    burst.sender.send_raw(&bytes).expect("send");
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < 20 {
        match burst.recv(WAIT).expect("response") {
            ServerMessage::Ack { .. } => acked += 1,
            ServerMessage::Reject { code: RejectCode::RateLimited, .. } => limited += 1,
            _ => {}
        }
    }
    assert!((5..=7).contains(&acked), "{acked} accepted of a burst of 5");
    assert_eq!(acked + limited, 20);
    server.shutdown().expect("clean shutdown");
}

#[test]
fn a_restarted_server_comes_back_with_the_same_book_and_balances() {
    let (config, _dir) = config("restart");
    let server = Server::open(&config).expect("server starts");
    let mut alice = logon(&server, 1);
    let mut bob = logon(&server, 2);
    request(&mut alice, limit(1, Side::Sell, 650_100, 8)).expect("ask");
    request(&mut alice, limit(2, Side::Sell, 650_200, 8)).expect("ask");
    request(&mut bob, limit(1, Side::Buy, 650_100, 3)).expect("trade");
    request(&mut bob, limit(2, Side::Buy, 649_000, 2)).expect("bid");
    let (depth, state, balances) =
        (engine_depth(&server), digest(&server), [balance(&server, 1), balance(&server, 2)]);
    drop((alice, bob));
    server.shutdown().expect("clean shutdown");

    let server = Server::open(&config).expect("server restarts on the same journal");
    assert!(server.recovery_report().contains("replayed"), "{}", server.recovery_report());
    assert_eq!(digest(&server), state);
    assert_eq!(engine_depth(&server), depth);
    assert_eq!([balance(&server, 1), balance(&server, 2)], balances);
    // The restarted gateway serves the recovered book: a subscriber sees it, and trades on it.
    let mut watcher = logon(&server, 3);
    std::thread::sleep(Duration::from_millis(50));
    watcher.send(&ClientMessage::Subscribe { market: BTC, channels: channel::DEPTH }).expect("subscribe");
    let mut book = L2::default();
    let mut bob = logon(&server, 2);
    request(&mut bob, limit(3, Side::Buy, 650_100, 5)).expect("trade on the recovered book");
    book.catch_up(&mut watcher, 1);
    // Orders recovered from the journal are corrected by the periodic depth check.
    let deadline = Instant::now() + WAIT;
    let mut query = 2;
    while book.levels() != engine_depth(&server) {
        assert!(Instant::now() < deadline, "depth never converged");
        std::thread::sleep(Duration::from_millis(100));
        book.catch_up(&mut watcher, query);
        query += 1;
    }
    server.shutdown().expect("clean shutdown");
}

#[test]
fn a_price_feeder_moves_the_index_over_the_wire_and_a_trader_may_not() {
    let (config, _dir) = config("feeder");
    let server = Server::open(&config).expect("server starts");
    let mut watcher = logon(&server, 3);
    watcher.send(&ClientMessage::Subscribe { market: BTC, channels: channel::PRICES }).expect("subscribe");
    let (mut feeder, ack) =
        Client::logon(server.address(), AccountId(DEMO_FEEDER), "keel-demo-feeder").expect("feeder logon");
    assert_eq!(ack.account, AccountId(DEMO_FEEDER));
    let mut alice = logon(&server, 1);
    let before = digest(&server);
    // Roles are enforced before anything reaches the engine.
    let index = |request, price| ClientMessage::IndexPrice { request, market: BTC, price: Price(price) };
    assert_eq!(request(&mut alice, index(1, 600_000)), Err(RejectCode::NotAuthorized));
    assert_eq!(request(&mut feeder, limit(2, Side::Buy, 640_000, 1)), Err(RejectCode::NotAuthorized));
    assert_eq!(
        request(&mut feeder, ClientMessage::AccountQuery { request: 3 }),
        Err(RejectCode::NotAuthorized)
    );
    assert_eq!(digest(&server), before, "refused requests changed nothing");
    assert_eq!(server.stats().unauthorized.load(Ordering::Relaxed), 3);
    // A feeder's key is not an account's: it cannot log on as one.
    let refused = Client::logon(server.address(), AccountId(1), "keel-demo-feeder");
    assert!(refused.is_err(), "the feeder key is not account 1's");

    // The feeder's price is journalled and applied like the operator's, and reaches market data.
    assert_eq!(request(&mut feeder, index(4, 651_000)), Ok(OrderId(0)));
    let mark = watcher
        .receiver
        .recv_until(WAIT, |m| match m {
            ServerMessage::MarkPrice { market, index, mark } if *market == BTC && index.0 == 651_000 => {
                Some(*mark)
            }
            _ => None,
        })
        .expect("the new index in market data");
    assert!(mark.0 > 0);
    assert_ne!(digest(&server), before);
    // The engine still judges the price: an unknown market is refused with the engine's reason.
    assert_eq!(
        request(&mut feeder, ClientMessage::IndexPrice { request: 5, market: MarketId(77), price: Price(1) }),
        Err(RejectCode::Engine(ErrorCode::UnknownMarket))
    );
    server.shutdown().expect("clean shutdown");
}

#[test]
fn funding_payments_are_pushed_to_the_accounts_that_pay_and_receive_them() {
    let (mut config, _dir) = config("funding");
    // One-second funding intervals, and the gateway's own ticks to settle them.
    config.markets[0].funding_interval_ms = Some(1_000);
    config.tick_ms = 50;
    let server = Server::open(&config).expect("server starts");
    let mut alice = logon(&server, 1);
    let mut bob = logon(&server, 2);
    let mut carol = logon(&server, 3);
    // Alice goes short 50 lots to Bob, who goes long.
    request(&mut alice, limit(1, Side::Sell, 650_000, 50)).expect("ask");
    request(&mut bob, limit(1, Side::Buy, 650_000, 50)).expect("trade");
    let payment = |client: &mut Client| {
        client
            .receiver
            .recv_until(WAIT, |m| match m {
                ServerMessage::FundingPayment { market, rate, amount, .. } if *market == BTC => {
                    Some((rate.0, amount.0))
                }
                _ => None,
            })
            .expect("a funding payment within the next interval")
    };
    let (rate, to_alice) = payment(&mut alice);
    let (bob_rate, to_bob) = payment(&mut bob);
    assert_eq!(rate, bob_rate, "one settlement");
    assert!(rate != 0 && to_alice != 0, "the interest term makes the rate non-zero");
    assert_eq!(to_alice + to_bob, 0, "what one side pays the other receives");
    // Positive rates: longs pay shorts.
    assert_eq!(to_bob < 0, rate > 0, "bob is long: rate {rate}, bob {to_bob}");
    // Carol holds no position: no payment reaches her before the answer to a query sent now.
    carol.send(&ClientMessage::AccountQuery { request: 9 }).expect("send");
    let mut paid_carol = false;
    carol
        .receiver
        .recv_until(WAIT, |m| {
            paid_carol |= matches!(m, ServerMessage::FundingPayment { .. });
            matches!(m, ServerMessage::AccountUpdate { request: 9, .. }).then_some(())
        })
        .expect("account update");
    assert!(!paid_carol, "no position, no payment");
    server.shutdown().expect("clean shutdown");
}

#[test]
fn the_session_limit_refuses_with_a_reason_and_shutdown_tells_every_session_why() {
    let (mut config, _dir) = config("limit-and-shutdown");
    config.limits.max_sessions = 2;
    let server = Server::open(&config).expect("server starts");
    let mut first = logon(&server, 1);
    let mut second = logon(&server, 2);
    // A third connection is over the limit: it is told so and closed, and the two stay.
    let mut third = Client::connect(server.address()).expect("connect");
    let refused = third.receiver.recv_until(WAIT, |m| match m {
        ServerMessage::Disconnect { reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(refused.expect("a disconnect frame"), DisconnectReason::TooManySessions);
    assert!(request(&mut first, limit(1, Side::Buy, 640_000, 10)).is_ok(), "the first session still trades");

    // Shutdown ends both sessions with the `Shutdown` reason, from the engine thread that reads
    // them, and returns promptly once they are closed.
    let started = Instant::now();
    let shutdown = std::thread::spawn(move || {
        let engine = server.shutdown().expect("clean shutdown");
        engine.last_seq()
    });
    for client in [&mut first, &mut second] {
        let reason = client.receiver.recv_until(WAIT, |m| match m {
            ServerMessage::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        });
        assert_eq!(reason.expect("a disconnect frame"), DisconnectReason::Shutdown);
        client.close();
    }
    assert!(shutdown.join().expect("shutdown thread") > 0, "the order was journalled");
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
}

#[test]
fn sessions_that_come_and_go_abruptly_are_all_closed_and_counted() {
    let (config, _dir) = config("churn");
    let server = Server::open(&config).expect("server starts");
    // Rounds of sessions that log on, pipeline orders without waiting, and vanish (no logout,
    // unread responses left behind), as crashing clients do.
    for round in 0..5u64 {
        let clients: Vec<Client> = (1..=4).map(|account| logon(&server, account)).collect();
        for (i, mut client) in clients.into_iter().enumerate() {
            for k in 0..20u64 {
                let side = if (k + i as u64) % 2 == 0 { Side::Buy } else { Side::Sell };
                let _ = client.sender.send(&limit(round * 1_000 + k + 1, side, 640_000 + k as i64, 1));
            }
            client.close();
        }
    }
    // Every one of those sessions is closed and counted, and the server still serves.
    let deadline = Instant::now() + WAIT;
    while server.stats().sessions_closed.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "sessions closed: {:?}", server.stats().sessions_closed);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.stats().sessions_opened.load(Ordering::Relaxed), 20);
    let mut fresh = logon(&server, 1);
    assert!(request(&mut fresh, limit(9_999, Side::Buy, 600_000, 1)).is_ok());
    drop(fresh);
    server.shutdown().expect("clean shutdown");
}
