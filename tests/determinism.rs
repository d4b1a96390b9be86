//! Determinism and durability of the engine: the same generated command stream, applied twice,
//! replayed from a journal on disk, and restored from a snapshot plus the journal tail, gives the
//! same events and the same state digest; and the exchange's invariants hold after every command.

use keel_engine::journal::{FlushPolicy, Journal};
use keel_engine::{Command, Engine, Event, Sequenced, codec, store};
use keel_sim::engine_flow::{EngineFlowConfig, generate};
use keel_types::AccountId;
use std::path::PathBuf;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("keel-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A falling market traded by thinly funded accounts: trades, margin calls, liquidations,
/// insurance-fund flows and deleveraging all happen in it.
fn stream() -> Vec<Sequenced> {
    let config = EngineFlowConfig {
        deposit_usd: 300,
        whale_every: 5,
        index_step_ticks: 800.0,
        index_down_bias: 0.7,
        ..EngineFlowConfig::new(3, 200, 12_000)
    };
    generate(&config)
}

/// Applies every command; returns each command's events.
fn run(engine: &mut Engine, commands: &[Sequenced]) -> Vec<Vec<Event>> {
    commands
        .iter()
        .map(|command| {
            let mut events = Vec::new();
            engine.apply(command, &mut events);
            events
        })
        .collect()
}

/// The exchange-wide invariants (`Engine::check_invariants`: books sound and uncrossed, open
/// interest balanced, reservations equal to resting orders, value conserved exactly), and no
/// internal fault reported.
fn check_invariants(engine: &Engine, events: &[Event], at: u64) {
    for event in events {
        assert!(!matches!(event, Event::Fault { .. }), "seq {at}: {event:?}");
    }
    if let Err(broken) = engine.check_invariants() {
        panic!("seq {at}: {broken}");
    }
    // Nobody below maintenance is left unattended: the queue holds whoever the pipeline could not
    // finish (there is no throttle here, so that is nobody).
    assert_eq!(engine.liquidator().queue().count(), 0, "seq {at}: liquidations left queued");
}

#[test]
fn the_same_commands_give_the_same_events_and_state_every_way_they_are_applied() {
    let commands = stream();
    let half = commands.len() / 2;

    // Applied once, with the invariants checked after every command.
    let mut first = Engine::new();
    let mut first_events = Vec::with_capacity(commands.len());
    let mut digests = Vec::new();
    let mut most_resting = 0;
    for command in &commands {
        let mut events = Vec::new();
        first.apply(command, &mut events);
        check_invariants(&first, &events, command.seq);
        most_resting =
            most_resting.max(first.market_ids().map(|m| first.book(m).unwrap().resting_count()).sum());
        first_events.push(events);
        if command.seq % 1_000 == 0 {
            digests.push(first.digest());
        }
    }
    let fills = first_events.iter().flatten().filter(|e| matches!(e, Event::Settled { .. })).count();
    assert!(fills > 1_000, "the stream should trade ({fills} settlements)");
    let liquidations = first_events.iter().flatten().filter(|e| matches!(e, Event::Liquidation(_))).count();
    assert!(liquidations > 10, "the stream should liquidate ({liquidations} liquidation events)");
    assert!(
        most_resting > 100,
        "the books should fill up at some point ({most_resting} resting orders at most)"
    );

    // Applied again: identical events and digests.
    let mut second = Engine::new();
    let mut second_digests = Vec::new();
    for (command, expected) in commands.iter().zip(&first_events) {
        let mut events = Vec::new();
        second.apply(command, &mut events);
        assert_eq!(&events, expected, "seq {}", command.seq);
        if command.seq % 1_000 == 0 {
            second_digests.push(second.digest());
        }
    }
    assert_eq!(digests, second_digests);
    assert_eq!(first.digest(), second.digest());

    // Journalled to disk, then recovered by replay.
    let full = TempDir::new("replay");
    let (mut journal, _) = Journal::open(store::journal_path(&full.0), FlushPolicy::Buffered).unwrap();
    for command in &commands {
        journal.append(command.seq, &codec::encode(command)).unwrap();
    }
    journal.commit().unwrap();
    drop(journal);
    let (replayed, _, report) = store::recover(&full.0, FlushPolicy::Buffered).unwrap();
    assert_eq!(report.replayed, commands.len() as u64);
    assert_eq!(replayed.digest(), first.digest());

    // A snapshot at the half plus the journal tail.
    let partial = TempDir::new("snapshot");
    let mut half_engine = Engine::new();
    run(&mut half_engine, &commands[..half]);
    store::snapshot(&partial.0, &half_engine, 2).unwrap();
    let (mut journal, _) = Journal::open(store::journal_path(&partial.0), FlushPolicy::Buffered).unwrap();
    for command in &commands {
        journal.append(command.seq, &codec::encode(command)).unwrap();
    }
    journal.commit().unwrap();
    drop(journal);
    let (restored, _, report) = store::recover(&partial.0, FlushPolicy::Buffered).unwrap();
    assert_eq!(report.snapshot_seq, Some(commands[half - 1].seq));
    assert_eq!(report.replayed, (commands.len() - half) as u64);
    assert_eq!(restored.digest(), first.digest());

    // The restored engine emits the same events for the tail as the engine that never stopped.
    let bytes = codec::encode(&half_engine);
    let mut from_snapshot = codec::decode::<Engine>("snapshot", &bytes).unwrap().restored();
    assert_eq!(from_snapshot.digest(), half_engine.digest());
    assert_eq!(run(&mut from_snapshot, &commands[half..]), first_events[half..].to_vec());
    assert_eq!(from_snapshot.digest(), first.digest());
}

/// The ADL quantiles shown to every account, through account-view queries (which change nothing).
fn quantiles(engine: &mut Engine, accounts: u32) -> Vec<Option<u8>> {
    let mut shown = Vec::new();
    for account in 1..=accounts {
        let mut events = Vec::new();
        let query = Command::AccountView { account: AccountId(account) };
        engine.apply(&Sequenced { seq: 0, time_ms: 0, command: query }, &mut events);
        for event in events {
            if let Event::AccountView(view) = event {
                shown.extend(view.positions.iter().filter(|p| p.size.0 != 0).map(|p| p.adl_quantile));
            }
        }
    }
    shown
}

/// The ADL quantiles are refreshed by a sweep spread over many commands. A snapshot taken while
/// a sweep is under way restores it mid-way: the restored engine finishes the same sweep with
/// the same events, digests and quantiles as the engine that never stopped.
#[test]
fn a_snapshot_taken_during_an_adl_refresh_sweep_restores_the_sweep() {
    // More accounts than a tick re-scores, so the sweep outlasts the tick that starts it.
    let accounts = 2_000;
    let commands = generate(&EngineFlowConfig::new(2, accounts, 6_000));
    let mut engine = Engine::new();
    let mut at = None;
    for (i, command) in commands.iter().enumerate() {
        engine.apply(command, &mut Vec::new());
        if matches!(command.command, Command::Tick) && engine.liquidator().adl_ranking().refreshing() {
            at = Some(i + 1);
            break;
        }
    }
    let at = at.expect("a tick starts a sweep that is still running after it");
    let before = quantiles(&mut engine, accounts);
    assert!(before.iter().all(Option::is_none), "no sweep has completed yet");

    let mut restored = codec::decode::<Engine>("snapshot", &codec::encode(&engine)).unwrap().restored();
    assert!(restored.liquidator().adl_ranking().refreshing());
    // The rest of the stream, then a tick a second (a venue going quiet) until the sweep is done.
    let last = commands.last().unwrap();
    let ticks = (1..=200u64).map(|i| Sequenced {
        seq: last.seq + i,
        time_ms: last.time_ms + i * 1_000,
        command: Command::Tick,
    });
    let mut applied = 0;
    for command in commands[at..].iter().cloned().chain(ticks) {
        if !engine.liquidator().adl_ranking().refreshing() {
            break;
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        engine.apply(&command, &mut a);
        restored.apply(&command, &mut b);
        assert_eq!(a, b, "seq {}", command.seq);
        applied += 1;
    }
    assert!(!engine.liquidator().adl_ranking().refreshing(), "the sweep completes");
    assert!(!restored.liquidator().adl_ranking().refreshing());
    assert_eq!(restored.digest(), engine.digest());
    // Spread over many commands, not done at once.
    assert!(applied > 30, "the sweep ended after {applied} commands");
    let after = quantiles(&mut engine, accounts);
    assert!(after.iter().filter(|q| q.is_some()).count() > 100, "positions show quantiles after the sweep");
    assert_eq!(quantiles(&mut restored, accounts), after);
}
