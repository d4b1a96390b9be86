//! Golden encodings: the bytes Keel writes to its journal and its snapshots, pinned.
//!
//! The encoding is not self-describing (see `keel_engine::codec`): a journal written by one build
//! is only safe to replay with a build that encodes the same way. These tests fail when the
//! encoding of any command, or of a small engine state, changes. When one fails on purpose, bump
//! `codec::SCHEMA_VERSION` (so older journals and snapshots are refused by name instead of
//! misread) and update the pinned values here.

use keel_engine::codec::{self, DecodeError, SCHEMA_VERSION};
use keel_engine::{Command, Engine, PlaceOrder, Sequenced, presets};
use keel_margin::{AssetConfig, AssetId, MarginMode, Rate};
use keel_types::{
    AccountId, MarketId, Money, OrderId, OrderKind, Price, Qty, Side, StopReference, StpMode, TimeInForce,
};

/// The schema these pinned values were taken with.
const PINNED_SCHEMA: u8 = 2;

/// One command of every kind, each with its pinned encoding (as a `Sequenced`, in hex).
fn every_command() -> Vec<(Command, &'static str)> {
    let account = AccountId(7);
    let market = MarketId(1);
    let place = PlaceOrder {
        account,
        market,
        side: Side::Sell,
        kind: OrderKind::StopLimit {
            trigger: Price(64_000),
            price: Price(63_990),
            reference: StopReference::Mark,
        },
        qty: Qty(25),
        tif: TimeInForce::Gtc,
        stp: StpMode::CancelNewest,
        reduce_only: true,
    };
    let asset = AssetConfig {
        symbol: "BTC".into(),
        decimals: 8,
        price: Money(65_000 * Money::SCALE),
        haircut: Rate(5_000_000),
    };
    vec![
        (
            Command::CreateMarket(Box::new(presets::btc_perp(1))),
            "02fbe803fd0068e5cf8b01000000084254432d504552500103302e3105302e303031c80a00fc00350c00007dfd00e8764817000000fc40420f00fc00e1f50564fd00e0926517010000fc20d61300fc00b33f714bfd0060defb74050000fc80841e00fd0045f2540500000032fd008079efd3150000fc00093d00fd00a50f363d00000019fd00c0444a547f0000fc404b4c00fd00fd4f31e000000014fd0080f420e6b50000fc80969800fd004d89586c0500000afd00c098185ea20100fc002d3101fd00bd5d73571a000005fd0000fc6a1d690300fc40787d01fd003dd7622b30000004fd0000bbc564430400fc80c3c901fd001d2f4e744b000003fd0000a40731af050000fc00c2eb0bfc002d310114fb409cfca086010000fb6801fc0074b701fb204efca0860100fc60e31600020100fc00c2eb0bfc002d3101fbf401fc00000100fb0010fb0010fd00743ba40b000000fb8813",
        ),
        (Command::AddAsset(asset), "02fbe903fd0068e5cf8b010000010342544308fd00949a441e000000fc80969800"),
        (
            Command::SetAssetPrice { asset: AssetId(1), price: Money(64_000 * Money::SCALE) },
            "02fbea03fd0068e5cf8b0100000201fd000065cd1d000000",
        ),
        (Command::OpenAccount { account }, "02fbeb03fd0068e5cf8b0100000307"),
        (
            Command::Deposit { account, asset: AssetId::SETTLEMENT, amount: 1_000_000 },
            "02fbec03fd0068e5cf8b010000040700fc80841e00",
        ),
        (
            Command::Withdraw { account, asset: AssetId(1), amount: 12_345 },
            "02fbed03fd0068e5cf8b010000050701fb7260",
        ),
        (Command::SetLeverage { account, market, leverage: 20 }, "02fbee03fd0068e5cf8b01000006070114"),
        (
            Command::SetMarginMode { account, market, mode: MarginMode::Isolated },
            "02fbef03fd0068e5cf8b01000007070101",
        ),
        (Command::Place(place), "02fbf003fd0068e5cf8b0100000807010103fc00f40100fcecf301000032000001"),
        (
            Command::Place(PlaceOrder {
                kind: OrderKind::Market,
                tif: TimeInForce::Ioc,
                reduce_only: false,
                ..place
            }),
            "02fbf103fd0068e5cf8b010000080701010132010000",
        ),
        (Command::Cancel { account, market, id: OrderId(42) }, "02fbf203fd0068e5cf8b0100000907012a"),
        (
            Command::Amend { account, market, id: OrderId(42), price: Some(Price(64_010)), qty: Qty(3) },
            "02fbf303fd0068e5cf8b0100000a07012a01fc14f4010006",
        ),
        (Command::CancelAll { account, market: None }, "02fbf403fd0068e5cf8b0100000b0700"),
        (Command::IndexPrice { market, price: Price(65_432) }, "02fbf503fd0068e5cf8b0100000c01fc30ff0100"),
        (Command::FundDeposit { market, amount: Money(-17) }, "02fbf603fd0068e5cf8b0100000d0121"),
        (Command::SettleFunding { market }, "02fbf703fd0068e5cf8b0100000e01"),
        (Command::Tick, "02fbf803fd0068e5cf8b0100000f"),
        (Command::AccountView { account }, "02fbf903fd0068e5cf8b0100001007"),
        (Command::Depth { market, levels: 10 }, "02fbfa03fd0068e5cf8b01000011010a"),
        (Command::Heatmap { market, bucket_ticks: 50 }, "02fbfb03fd0068e5cf8b010000120164"),
        (Command::Digest, "02fbfc03fd0068e5cf8b01000013"),
    ]
}

/// How many command kinds [`kind`] names: raise it with the new arm, and add the kind to
/// [`every_command`].
const KINDS: usize = 20;

/// Fails to compile when a command kind is added, so it is added to [`every_command`] too.
fn kind(command: &Command) -> &'static str {
    match command {
        Command::CreateMarket(_) => "CreateMarket",
        Command::AddAsset(_) => "AddAsset",
        Command::SetAssetPrice { .. } => "SetAssetPrice",
        Command::OpenAccount { .. } => "OpenAccount",
        Command::Deposit { .. } => "Deposit",
        Command::Withdraw { .. } => "Withdraw",
        Command::SetLeverage { .. } => "SetLeverage",
        Command::SetMarginMode { .. } => "SetMarginMode",
        Command::Place(_) => "Place",
        Command::Cancel { .. } => "Cancel",
        Command::Amend { .. } => "Amend",
        Command::CancelAll { .. } => "CancelAll",
        Command::IndexPrice { .. } => "IndexPrice",
        Command::FundDeposit { .. } => "FundDeposit",
        Command::SettleFunding { .. } => "SettleFunding",
        Command::Tick => "Tick",
        Command::AccountView { .. } => "AccountView",
        Command::Depth { .. } => "Depth",
        Command::Heatmap { .. } => "Heatmap",
        Command::Digest => "Digest",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64-bit FNV-1a, to pin a large encoding by one number.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[test]
fn the_schema_is_the_pinned_one() {
    assert_eq!(
        SCHEMA_VERSION, PINNED_SCHEMA,
        "the schema was bumped: take the new encodings below and pin them with PINNED_SCHEMA"
    );
}

#[test]
fn every_command_encodes_as_pinned() {
    let commands = every_command();
    let kinds: std::collections::BTreeSet<&str> = commands.iter().map(|(c, _)| kind(c)).collect();
    assert_eq!(kinds.len(), KINDS, "every command kind has an entry: {kinds:?}");
    let mut changed = Vec::new();
    for (i, (command, pinned)) in commands.into_iter().enumerate() {
        let sequenced = Sequenced { seq: 1_000 + i as u64, time_ms: 1_700_000_000_000, command };
        let bytes = codec::encode(&sequenced);
        assert_eq!(bytes[0], SCHEMA_VERSION, "every payload starts with the schema byte");
        assert_eq!(codec::decode::<Sequenced>("golden", &bytes).as_ref(), Ok(&sequenced), "round trip");
        if hex(&bytes) != pinned {
            changed.push(format!("{}: now {}", kind(&sequenced.command), hex(&bytes)));
        }
    }
    assert!(
        changed.is_empty(),
        "the journal encoding changed (or, for CreateMarket, the btc_perp preset did) — if an encoding \
         changed, bump codec::SCHEMA_VERSION; either way re-pin:\n{}",
        changed.join("\n")
    );
}

/// A small engine that has traded: two accounts, a resting order, a position each.
fn small_engine() -> Engine {
    let mut engine = Engine::new();
    let mut events = Vec::new();
    let market = MarketId(1);
    let commands = [
        Command::CreateMarket(Box::new(presets::btc_perp(1))),
        Command::OpenAccount { account: AccountId(1) },
        Command::OpenAccount { account: AccountId(2) },
        Command::Deposit {
            account: AccountId(1),
            asset: AssetId::SETTLEMENT,
            amount: 100_000 * Money::SCALE,
        },
        Command::Deposit {
            account: AccountId(2),
            asset: AssetId::SETTLEMENT,
            amount: 100_000 * Money::SCALE,
        },
        Command::IndexPrice { market, price: Price(650_000) },
    ];
    let limit = |account, side, price, qty| {
        Command::Place(PlaceOrder {
            account: AccountId(account),
            market,
            side,
            kind: OrderKind::Limit { price: Price(price) },
            qty: Qty(qty),
            tif: TimeInForce::Gtc,
            stp: StpMode::CancelNewest,
            reduce_only: false,
        })
    };
    let trades = [
        limit(1, Side::Buy, 649_990, 30),
        limit(2, Side::Sell, 649_990, 10),
        limit(2, Side::Sell, 650_050, 5),
    ];
    for (i, command) in commands.into_iter().chain(trades).enumerate() {
        let sequenced = Sequenced { seq: i as u64 + 1, time_ms: 1_700_000_000_000 + i as u64, command };
        events.clear();
        engine.apply(&sequenced, &mut events);
        assert!(
            !events.iter().any(|e| matches!(e, keel_engine::Event::Rejected { .. })),
            "command {} refused: {events:?}",
            i + 1
        );
    }
    engine
}

#[test]
fn a_snapshot_encodes_as_pinned() {
    let bytes = codec::encode(&small_engine());
    assert_eq!(bytes[0], SCHEMA_VERSION);
    let pinned: (usize, u64) = (21_871, 12_728_349_092_015_763_493);
    assert_eq!(
        (bytes.len(), fnv(&bytes)),
        pinned,
        "the snapshot encoding (or what this small run leaves in the state) changed — if the \
         state's shape changed, bump codec::SCHEMA_VERSION; either way re-pin"
    );
}

#[test]
fn bytes_of_another_schema_are_refused_by_name() {
    let sequenced = Sequenced { seq: 1, time_ms: 0, command: Command::Tick };
    let mut bytes = codec::encode(&sequenced);
    bytes[0] = SCHEMA_VERSION.wrapping_add(1);
    assert_eq!(
        codec::decode::<Sequenced>("journal record", &bytes),
        Err(DecodeError::Schema { what: "journal record", found: SCHEMA_VERSION.wrapping_add(1) })
    );
    assert!(matches!(codec::decode::<Sequenced>("journal record", &[]), Err(DecodeError::Malformed { .. })));
}
