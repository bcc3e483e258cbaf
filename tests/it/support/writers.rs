//! Concurrent writers while `aggregate` runs in a loop, and the generated events they write:
//! the machinery of the conservation property tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use diesel::connection::SimpleConnection;
use proptest::prelude::*;
use usage_worker::jobs::{Ctx, JobKind, RunOpts};

use super::{TestDb, at};

/// One writer's transactions: the statements of each, and whether it is rolled back.
pub type Transactions = Vec<(Vec<String>, bool)>;

/// Runs each writer's transactions on a connection of its own while `aggregate` (at `now`)
/// runs again and again on another, until every writer has finished; then runs it once more,
/// so every committed event is aggregated when this returns.
pub fn write_while_aggregating(db: &TestDb, ctx: &Arc<Ctx>, now: &str, writers: Vec<Transactions>) {
    let now = at(now);
    let writers_done = Arc::new(AtomicBool::new(false));
    let aggregator = {
        let ctx = ctx.clone();
        let done = writers_done.clone();
        let mut conn = db.conn();
        thread::spawn(move || {
            let mut runs = 0;
            while !done.load(Ordering::SeqCst) || runs == 0 {
                JobKind::Aggregate
                    .run(&ctx, &mut conn, now, &RunOpts::default())
                    .unwrap();
                runs += 1;
            }
            runs
        })
    };
    let writers: Vec<_> = writers
        .into_iter()
        .map(|transactions| {
            let mut conn = db.conn();
            thread::spawn(move || {
                for (statements, rolled_back) in transactions {
                    conn.batch_execute("BEGIN").unwrap();
                    for statement in statements {
                        conn.batch_execute(&statement).unwrap();
                    }
                    conn.batch_execute(if rolled_back { "ROLLBACK" } else { "COMMIT" })
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    writers_done.store(true, Ordering::SeqCst);
    assert!(aggregator.join().unwrap() >= 1);

    // Every writer has finished, so one more run reaches every event.
    JobKind::Aggregate
        .run(ctx, &mut db.conn(), now, &RunOpts::default())
        .unwrap();
}

/// One generated event: who spent it (an index into the test's spenders), kind, model,
/// amounts and minutes after [`FIRST_INSTANT`].
#[derive(Debug, Clone)]
pub struct EventSpec {
    spender: usize,
    kind: usize,
    model: usize,
    prompt: i64,
    completion: i64,
    bytes: i64,
    cost_cents: i64,
    minute: i64,
}

/// A writer's stream: transactions of events; the flag says whether it is rolled back.
pub type WriterStream = Vec<(Vec<EventSpec>, bool)>;

/// Who spent an event: the user id, and the organization (None = personal usage).
pub type Spender = (i64, Option<i64>);

/// The generated events start here: both October/November clock changes follow.
const FIRST_INSTANT: &str = "2026-10-20T00:00:00Z";
const KINDS: &[&str] = &["ai_response", "message_sent", "file_upload"];
const MODELS: &[&str] = &["", "gpt-4o", "claude-sonnet"];

/// An event of one of `spenders` spenders within `days` days of [`FIRST_INSTANT`], at minute
/// resolution.
pub fn event_spec(spenders: usize, days: i64) -> impl Strategy<Value = EventSpec> {
    (
        0..spenders,
        0..KINDS.len(),
        0..MODELS.len(),
        0i64..5000,
        0i64..5000,
        0i64..10_000_000,
        0i64..1000,
        0i64..days * 24 * 60,
    )
        .prop_map(
            |(spender, kind, model, prompt, completion, bytes, cost_cents, minute)| EventSpec {
                spender,
                kind,
                model,
                prompt,
                completion,
                bytes,
                cost_cents,
                minute,
            },
        )
}

/// Up to 24 transactions of one to five events each; about one in seven is rolled back.
pub fn writer_stream(spenders: usize, days: i64) -> impl Strategy<Value = WriterStream> {
    prop::collection::vec(
        (
            prop::collection::vec(event_spec(spenders, days), 1..6),
            prop::bool::weighted(0.15),
        ),
        1..25,
    )
}

/// The stream's transactions as statements of two events each; `spender` maps an index to
/// who spent the event.
pub fn transactions(stream: WriterStream, spender: impl Fn(usize) -> Spender) -> Transactions {
    stream
        .into_iter()
        .map(|(events, rolled_back)| {
            let statements = events
                .chunks(2)
                .map(|chunk| insert_sql(chunk, &spender))
                .collect();
            (statements, rolled_back)
        })
        .collect()
}

fn insert_sql(events: &[EventSpec], spender: &impl Fn(usize) -> Spender) -> String {
    let rows: Vec<String> = events
        .iter()
        .map(|e| {
            let (user_id, org_id) = spender(e.spender);
            format!(
                "({user_id}, {}, '{}', 'chat', '{}', {}, {}, {}, {}, {}, {}.{:02}, \
                 '{FIRST_INSTANT}'::timestamptz + interval '{} minutes')",
                org_id.map_or("NULL".to_string(), |o| o.to_string()),
                KINDS[e.kind],
                MODELS[e.model],
                e.prompt + e.completion,
                e.prompt,
                e.completion,
                i64::from(e.kind == 1),
                e.bytes,
                e.cost_cents / 100,
                e.cost_cents % 100,
                e.minute
            )
        })
        .collect();
    format!(
        "INSERT INTO usage_events (user_id, org_id, kind, request_type, model, tokens,
                                   prompt_tokens, completion_tokens, messages, bytes, cost,
                                   created_at)
         VALUES {}",
        rows.join(", ")
    )
}
