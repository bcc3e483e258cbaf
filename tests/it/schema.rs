//! What the schema promises applications: events are validated on insert with the
//! constraint named, usage_record prices events, and no insert fails for lack of a partition.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::support::TestDb;

fn insert_error(db: &TestDb, sql: &str) -> String {
    db.conn()
        .batch_execute(sql)
        .expect_err("the insert must be rejected")
        .to_string()
}

#[test]
fn bad_events_are_rejected_naming_the_constraint() {
    let db = TestDb::new();
    let cases = [
        (
            "INSERT INTO usage_events (user_id, kind, tokens) VALUES (1, 'ai_response', -5)",
            "usage_events_tokens_not_negative",
        ),
        (
            "INSERT INTO usage_events (user_id, kind, cost) VALUES (1, 'ai_response', -0.01)",
            "usage_events_cost_not_negative",
        ),
        (
            "INSERT INTO usage_events (user_id, kind, bytes) VALUES (1, 'file_upload', -1)",
            "usage_events_bytes_not_negative",
        ),
        (
            "INSERT INTO usage_events (user_id, kind) VALUES (1, 'AI Response!')",
            "usage_events_kind_check",
        ),
        (
            "INSERT INTO usage_events (user_id, kind, request_type) VALUES (1, 'ai_response', 'Chat; DROP')",
            "usage_events_request_type_check",
        ),
        (
            "INSERT INTO usage_events (user_id, kind, metadata)
             VALUES (1, 'ai_response', jsonb_build_object('blob', repeat('x', 1048576)))",
            "usage_events_metadata_size",
        ),
        (
            "INSERT INTO plans (name) VALUES ('p');
             INSERT INTO plan_limits (plan_id, metric, period, max_value)
             SELECT id, 'tokens', 'month', -1 FROM plans",
            "plan_limits_max_value_not_negative",
        ),
        (
            "INSERT INTO plans (name) VALUES ('q');
             INSERT INTO plan_limits (plan_id, metric, period, max_value)
             SELECT id, 'tokens', 'week', 10 FROM plans WHERE name = 'q'",
            "plan_limits_period_check",
        ),
    ];
    for (sql, constraint) in cases {
        let error = insert_error(&db, sql);
        assert!(error.contains(constraint), "{sql}\n→ {error}");
    }
    assert_eq!(db.count("SELECT count(*) AS n FROM usage_events"), 0);
}

#[test]
fn usage_record_prices_an_event_from_the_most_specific_current_price() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO prices (kind, model, valid_from, per_1k_prompt_tokens, per_1k_completion_tokens)
         VALUES ('ai_response', '',       '-infinity', 1, 1),
                ('ai_response', 'gpt-4o', '-infinity', 0.0025, 0.01),
                ('ai_response', 'gpt-4o', '2030-01-01', 9, 9);
         INSERT INTO prices (kind, per_event) VALUES ('image_generation', 0.04);",
    );
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        cost: String,
        #[diesel(sql_type = BigInt)]
        tokens: i64,
    }
    let mut conn = db.conn();
    conn.batch_execute(
        "SELECT usage_record(p_user_id => 1, p_kind => 'ai_response', p_model => 'gpt-4o',
                             p_prompt_tokens => 1000, p_completion_tokens => 500,
                             p_created_at => '2026-11-01T00:00:00Z');
         SELECT usage_record(p_user_id => 2, p_kind => 'image_generation');
         SELECT usage_record(p_user_id => 3, p_kind => 'ai_response', p_tokens => 10, p_cost => 7);",
    )
    .unwrap();
    let rows: Vec<Row> =
        diesel::sql_query("SELECT cost::text AS cost, tokens FROM usage_events ORDER BY user_id")
            .load(&mut conn)
            .unwrap();
    // 1000 × 0.0025/1000 + 500 × 0.01/1000 = 0.0075; tokens = prompt + completion.
    assert_eq!(rows[0].cost, "0.00750000");
    assert_eq!(rows[0].tokens, 1500);
    assert_eq!(rows[1].cost, "0.04000000");
    assert_eq!(
        rows[2].cost, "7.00000000",
        "a cost given by the caller wins"
    );
}

#[test]
fn an_event_outside_every_partition_lands_in_the_default_partition() {
    let db = TestDb::new();
    db.execute(
        "INSERT INTO usage_events (user_id, kind, created_at) VALUES (1, 'message_sent', '1999-12-31T23:59:59Z')",
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM ONLY usage_events_default"),
        1
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM usage_events WHERE recorded_xid IS NOT NULL"),
        1
    );
}
