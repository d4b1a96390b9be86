//! Golden bytes pin the layouts documented in `docs/protocol.md`; round trips and hostile inputs
//! check that decoding is exact and total.

use super::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn every_client_message() -> Vec<ClientMessage> {
    let order = |kind, tif| NewOrder {
        request: 7,
        market: MarketId(1),
        side: Side::Sell,
        kind,
        qty: Qty(250),
        tif,
        stp: StpMode::CancelBoth,
        reduce_only: true,
    };
    vec![
        ClientMessage::Logon { account: AccountId(3), key: key_bytes("k") },
        ClientMessage::Logout,
        ClientMessage::Heartbeat,
        ClientMessage::NewOrder(order(OrderKind::Limit { price: Price(650_000) }, TimeInForce::PostOnly)),
        ClientMessage::NewOrder(order(OrderKind::Market, TimeInForce::Ioc)),
        ClientMessage::NewOrder(order(
            OrderKind::StopMarket { trigger: Price(600_000), reference: StopReference::Mark },
            TimeInForce::Gtc,
        )),
        ClientMessage::NewOrder(order(
            OrderKind::StopLimit {
                trigger: Price(600_000),
                price: Price(599_000),
                reference: StopReference::Last,
            },
            TimeInForce::Fok,
        )),
        ClientMessage::Cancel { request: 8, market: MarketId(2), order: OrderId(99) },
        ClientMessage::Amend {
            request: 9,
            market: MarketId(2),
            order: OrderId(99),
            price: None,
            qty: Qty(5),
        },
        ClientMessage::Amend {
            request: 9,
            market: MarketId(2),
            order: OrderId(99),
            price: Some(Price(-4)),
            qty: Qty(5),
        },
        ClientMessage::CancelAll { request: 10, market: None },
        ClientMessage::CancelAll { request: 10, market: Some(MarketId(1)) },
        ClientMessage::AccountQuery { request: 11 },
        ClientMessage::IndexPrice { request: 12, market: MarketId(2), price: Price(350_000) },
        ClientMessage::Subscribe { market: MarketId(1), channels: channel::ALL },
        ClientMessage::Unsubscribe { market: MarketId(1), channels: channel::DEPTH },
    ]
}

fn every_server_message() -> Vec<ServerMessage> {
    let bucket = HeatmapBucket {
        price: Price(600_000),
        long_qty: Qty(3),
        long_notional: Money(1_800_000_000),
        short_qty: Qty(0),
        short_notional: Money(0),
    };
    let notice = |kind| LiquidationNotice {
        kind,
        market: 1,
        side: Side::Sell,
        order: OrderId(1 << 62),
        price: Price(610_000),
        qty: Qty(4),
        amount_a: Money(-5),
        amount_b: Money(6),
    };
    let mut all = vec![
        ServerMessage::LogonAck { account: AccountId(3), session: 12, heartbeat_ms: 1000 },
        ServerMessage::Ack { request: 7, order: OrderId(42) },
        ServerMessage::Fill {
            market: MarketId(1),
            order: OrderId(42),
            side: Side::Buy,
            liquidity: Liquidity::Taker,
            price: Price(650_000),
            qty: Qty(2),
            fee: Money(-65),
            realized_pnl: Money(0),
            position: Qty(-2),
            balance: Money(1_000_000_000_000),
        },
        ServerMessage::Amended {
            market: MarketId(1),
            order: OrderId(42),
            price: Price(1),
            qty: Qty(1),
            priority_kept: true,
        },
        ServerMessage::Triggered { market: MarketId(1), order: OrderId(42), reference_price: Price(600_000) },
        ServerMessage::Adl {
            market: MarketId(1),
            liquidated: false,
            side: Side::Sell,
            price: Price(5),
            qty: Qty(6),
        },
        ServerMessage::AccountUpdate {
            request: 0,
            balance: Money(1),
            equity: Money(2),
            available: Money(-3),
            initial_margin: Money(4),
            maintenance_margin: Money(5),
        },
        ServerMessage::FundingPayment {
            market: MarketId(2),
            rate: Rate(-1_000),
            price: Price(350_000),
            amount: Money(-17),
        },
        ServerMessage::Heartbeat,
        ServerMessage::DepthSnapshot {
            market: MarketId(1),
            seq: 9,
            bids: vec![(Price(10), Qty(1)), (Price(9), Qty(2))],
            asks: vec![(Price(11), Qty(3))],
        },
        ServerMessage::DepthSnapshot { market: MarketId(1), seq: 0, bids: vec![], asks: vec![] },
        ServerMessage::DepthUpdate {
            market: MarketId(1),
            seq: 10,
            side: Side::Sell,
            price: Price(11),
            qty: Qty(0),
        },
        ServerMessage::Trade {
            market: MarketId(1),
            price: Price(11),
            qty: Qty(3),
            taker_side: Side::Buy,
            liquidation: true,
        },
        ServerMessage::MarkPrice { market: MarketId(2), index: Price(350_000), mark: Price(350_010) },
        ServerMessage::Funding { market: MarketId(2), rate: Rate(-1_000), price: Price(350_000) },
        ServerMessage::LiquidationPrint {
            market: MarketId(1),
            side: Side::Sell,
            price: Price(1),
            qty: Qty(2),
        },
        ServerMessage::Heatmap { market: MarketId(1), bucket_ticks: 1000, buckets: vec![bucket, bucket] },
        ServerMessage::Heatmap { market: MarketId(1), bucket_ticks: 1000, buckets: vec![] },
    ];
    for step in LIQUIDATION_STEPS {
        all.push(ServerMessage::Liquidation(notice(step)));
    }
    for reason in CANCEL_REASONS {
        all.push(ServerMessage::Cancelled {
            market: MarketId(1),
            order: OrderId(3),
            remaining: Qty(4),
            reason,
        });
    }
    for reason in DISCONNECT_REASONS {
        all.push(ServerMessage::Disconnect { reason, text: "bye – ünïcode".into() });
    }
    let mut codes =
        vec![RejectCode::RateLimited, RejectCode::Busy, RejectCode::Stopped, RejectCode::NotAuthorized];
    codes.extend(
        [
            ErrorCode::UnknownMarket,
            ErrorCode::DuplicateMarket,
            ErrorCode::UnknownAccount,
            ErrorCode::UnknownOrder,
            ErrorCode::InsufficientMargin,
            ErrorCode::ReduceOnly,
            ErrorCode::MarginSystem,
            ErrorCode::Liquidation,
            ErrorCode::InLiquidation,
        ]
        .map(RejectCode::Engine),
    );
    codes.extend(BOOK_REASONS.map(|r| RejectCode::Engine(ErrorCode::Book(r))));
    for code in codes {
        all.push(ServerMessage::Reject { request: 1, code });
    }
    all
}

#[test]
fn golden_logon() {
    let bytes = ClientMessage::Logon { account: AccountId(0x0102_0304), key: key_bytes("ab") }.encode();
    let mut expected = vec![0x26, 0, 0, 0, 1, 0x01, 0x04, 0x03, 0x02, 0x01, b'a', b'b'];
    expected.extend([0u8; 30]);
    assert_eq!(hex(&bytes), hex(&expected));
}

#[test]
fn golden_new_order() {
    let bytes = ClientMessage::NewOrder(NewOrder {
        request: 0x1122,
        market: MarketId(1),
        side: Side::Sell,
        kind: OrderKind::StopLimit {
            trigger: Price(0x0506),
            price: Price(0x0304),
            reference: StopReference::Last,
        },
        qty: Qty(7),
        tif: TimeInForce::PostOnly,
        stp: StpMode::CancelOldest,
        reduce_only: true,
    })
    .encode();
    assert_eq!(
        hex(&bytes),
        "2c 00 00 00 01 10 \
         22 11 00 00 00 00 00 00 01 00 00 00 01 03 03 01 01 01 \
         04 03 00 00 00 00 00 00 06 05 00 00 00 00 00 00 07 00 00 00 00 00 00 00"
    );
}

#[test]
fn golden_requests() {
    let cases = [
        (ClientMessage::Logout, "02 00 00 00 01 02"),
        (ClientMessage::Heartbeat, "02 00 00 00 01 03"),
        (
            ClientMessage::Cancel { request: 1, market: MarketId(2), order: OrderId(3) },
            "16 00 00 00 01 11 01 00 00 00 00 00 00 00 02 00 00 00 03 00 00 00 00 00 00 00",
        ),
        (
            ClientMessage::Amend {
                request: 1,
                market: MarketId(2),
                order: OrderId(3),
                price: Some(Price(4)),
                qty: Qty(5),
            },
            "27 00 00 00 01 12 01 00 00 00 00 00 00 00 02 00 00 00 03 00 00 00 00 00 00 00 01 \
             04 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00",
        ),
        (
            ClientMessage::CancelAll { request: 1, market: None },
            "0e 00 00 00 01 13 01 00 00 00 00 00 00 00 ff ff ff ff",
        ),
        (ClientMessage::AccountQuery { request: 1 }, "0a 00 00 00 01 14 01 00 00 00 00 00 00 00"),
        (
            ClientMessage::IndexPrice { request: 1, market: MarketId(2), price: Price(650_000) },
            "16 00 00 00 01 15 01 00 00 00 00 00 00 00 02 00 00 00 10 eb 09 00 00 00 00 00",
        ),
        (
            ClientMessage::Subscribe { market: MarketId(1), channels: 0x1f },
            "07 00 00 00 01 20 01 00 00 00 1f",
        ),
        (
            ClientMessage::Unsubscribe { market: MarketId(1), channels: 0x01 },
            "07 00 00 00 01 21 01 00 00 00 01",
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(
            hex(&message.encode()),
            expected.split_whitespace().collect::<Vec<_>>().join(" "),
            "{message:?}"
        );
    }
}

#[test]
fn golden_responses() {
    let cases = [
        (
            ServerMessage::Ack { request: 1, order: OrderId(2) },
            "12 00 00 00 01 82 01 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00",
        ),
        (
            ServerMessage::Reject {
                request: 1,
                code: RejectCode::Engine(ErrorCode::Book(RejectReason::PostOnlyWouldTake)),
            },
            "0e 00 00 00 01 83 01 00 00 00 00 00 00 00 05 00 07 00",
        ),
        (
            ServerMessage::Reject { request: 1, code: RejectCode::RateLimited },
            "0e 00 00 00 01 83 01 00 00 00 00 00 00 00 64 00 00 00",
        ),
        (
            ServerMessage::Reject { request: 1, code: RejectCode::NotAuthorized },
            "0e 00 00 00 01 83 01 00 00 00 00 00 00 00 67 00 00 00",
        ),
        (
            ServerMessage::FundingPayment {
                market: MarketId(1),
                rate: Rate(100),
                price: Price(650_000),
                amount: Money(-65),
            },
            "1e 00 00 00 01 8d 01 00 00 00 64 00 00 00 00 00 00 00 10 eb 09 00 00 00 00 00 \
             bf ff ff ff ff ff ff ff",
        ),
        (
            ServerMessage::LogonAck { account: AccountId(1), session: 2, heartbeat_ms: 1000 },
            "0e 00 00 00 01 81 01 00 00 00 02 00 00 00 e8 03 00 00",
        ),
        (
            ServerMessage::DepthUpdate {
                market: MarketId(1),
                seq: 2,
                side: Side::Sell,
                price: Price(3),
                qty: Qty(4),
            },
            "1f 00 00 00 01 a1 01 00 00 00 02 00 00 00 00 00 00 00 01 \
             03 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00",
        ),
        (
            ServerMessage::Cancelled {
                market: MarketId(1),
                order: OrderId(2),
                remaining: Qty(3),
                reason: CancelReason::SelfTrade,
            },
            "17 00 00 00 01 85 01 00 00 00 02 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 08",
        ),
        (
            ServerMessage::Disconnect { reason: DisconnectReason::SlowConsumer, text: "ab".into() },
            "06 00 00 00 01 8c 07 02 61 62",
        ),
        (
            ServerMessage::DepthSnapshot {
                market: MarketId(1),
                seq: 2,
                bids: vec![(Price(3), Qty(4))],
                asks: vec![],
            },
            "22 00 00 00 01 a0 01 00 00 00 02 00 00 00 00 00 00 00 01 00 00 00 \
             03 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00",
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(
            hex(&message.encode()),
            expected.split_whitespace().collect::<Vec<_>>().join(" "),
            "{message:?}"
        );
    }
}

#[test]
fn golden_fill() {
    let bytes = ServerMessage::Fill {
        market: MarketId(1),
        order: OrderId(2),
        side: Side::Sell,
        liquidity: Liquidity::Maker,
        price: Price(3),
        qty: Qty(4),
        fee: Money(-1),
        realized_pnl: Money(5),
        position: Qty(6),
        balance: Money(7),
    }
    .encode();
    assert_eq!(bytes.len(), 4 + 2 + 62);
    assert_eq!(&bytes[..20], &[0x40, 0, 0, 0, 1, 0x84, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&bytes[36..44], &[0xff; 8], "fee -1 in two's complement");
}

#[test]
fn every_message_round_trips_and_every_prefix_asks_for_more() {
    for message in every_client_message() {
        let bytes = message.encode();
        assert_eq!(ClientMessage::decode(&bytes), Ok(Some((message.clone(), bytes.len()))));
        for cut in 0..bytes.len() {
            assert_eq!(ClientMessage::decode(&bytes[..cut]), Ok(None), "{message:?} cut at {cut}");
        }
        // Any message is unknown to the other side's decoder, never misread.
        assert!(matches!(ServerMessage::decode(&bytes), Err(DecodeError::UnknownType(_))));
    }
    for message in every_server_message() {
        let bytes = message.encode();
        assert_eq!(ServerMessage::decode(&bytes), Ok(Some((message.clone(), bytes.len()))), "{message:?}");
        assert!(matches!(ClientMessage::decode(&bytes), Err(DecodeError::UnknownType(_))));
    }
}

#[test]
fn frames_decode_back_to_back() {
    let mut stream = Vec::new();
    let messages = every_client_message();
    for message in &messages {
        message.encode_into(&mut stream);
    }
    let mut at = 0;
    let mut decoded = Vec::new();
    while let Some((message, used)) = ClientMessage::decode(&stream[at..]).expect("valid stream") {
        decoded.push(message);
        at += used;
    }
    assert_eq!(decoded, messages);
    assert_eq!(at, stream.len());
}

#[test]
fn malformed_frames_get_typed_errors() {
    let logout = ClientMessage::Logout.encode();
    let mut oversized = logout.clone();
    oversized[..4].copy_from_slice(&(MAX_FRAME_LEN + 1).to_le_bytes());
    assert_eq!(ClientMessage::decode(&oversized), Err(DecodeError::Oversized { length: MAX_FRAME_LEN + 1 }));
    assert_eq!(ClientMessage::decode(&[1, 0, 0, 0, 1]), Err(DecodeError::Undersized { length: 1 }));
    assert_eq!(ClientMessage::decode(&[2, 0, 0, 0, 9, 2]), Err(DecodeError::UnsupportedVersion(9)));
    assert_eq!(ClientMessage::decode(&[2, 0, 0, 0, 1, 0x7f]), Err(DecodeError::UnknownType(0x7f)));
    // A cancel whose length covers only part of its body.
    let mut cancel = ClientMessage::Cancel { request: 1, market: MarketId(1), order: OrderId(1) }.encode();
    cancel.truncate(cancel.len() - 3);
    let length = (cancel.len() - 4) as u32;
    cancel[..4].copy_from_slice(&length.to_le_bytes());
    assert_eq!(
        ClientMessage::decode(&cancel),
        Err(DecodeError::Truncated { message: "cancel", need: 20, have: 17 })
    );
    // A heartbeat with a byte past its (empty) layout.
    assert_eq!(
        ClientMessage::decode(&[3, 0, 0, 0, 1, 3, 0]),
        Err(DecodeError::TrailingBytes { message: "heartbeat", extra: 1 })
    );
    // Enumerations and must-be-zero fields.
    let mut order = every_client_message()[3].encode();
    order[6 + 12] = 2;
    assert_eq!(ClientMessage::decode(&order), Err(DecodeError::InvalidField { field: "side", value: 2 }));
    let mut market = every_client_message()[4].encode();
    market[6 + 18] = 1;
    assert_eq!(ClientMessage::decode(&market), Err(DecodeError::InvalidField { field: "price", value: 1 }));
    let subscribe = ClientMessage::Subscribe { market: MarketId(1), channels: 0x20 }.encode();
    assert_eq!(
        ClientMessage::decode(&subscribe),
        Err(DecodeError::InvalidField { field: "channels", value: 0x20 })
    );
    let snapshot = [18, 0, 0, 0, 1, 0xa0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    assert_eq!(
        ServerMessage::decode(&snapshot),
        Err(DecodeError::Truncated { message: "depth snapshot", need: 32, have: 16 })
    );
}

#[test]
fn arbitrary_bytes_never_panic_and_valid_frames_reencode_exactly() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = every_client_message()
        .iter()
        .map(ClientMessage::encode)
        .chain(every_server_message().iter().map(ServerMessage::encode))
        .collect();
    for round in 0..200_000 {
        let mut bytes = seeds[round % seeds.len()].clone();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        if next() % 8 == 0 {
            bytes.truncate((next() as usize) % (bytes.len() + 1));
        }
        if let Ok(Some((message, used))) = ClientMessage::decode(&bytes) {
            assert_eq!(message.encode(), bytes[..used]);
        }
        if let Ok(Some((message, used))) = ServerMessage::decode(&bytes) {
            assert_eq!(message.encode(), bytes[..used]);
        }
    }
}
