//! The books under concurrent writers: while writers commit and roll back transactions of
//! generated events, `aggregate` runs again and again; afterwards the daily summary equals the
//! raw events, and every subject's periods — users' personal usage, organizations' shared
//! usage, each on its own local days and billing anchor — hold exactly its events, apart from
//! each other. Runs alone on its cluster ([`TestDb::alone`]): an open transaction anywhere
//! holds the aggregation watermark back.

use proptest::prelude::*;

use crate::support::TestDb;
use crate::support::books::{assert_all_aggregated_exactly, assert_subject_books_exact};
use crate::support::writers::{
    Spender, WriterStream, transactions, write_while_aggregating, writer_stream,
};

const NOW: &str = "2026-11-23T10:00:00Z";

/// Users in many zones (user 0 among them: a legal application user id; user 8's zone is
/// unknown, counted in UTC).
const USERS: &[(i64, &str)] = &[
    (0, "Asia/Tokyo"),
    (1, "UTC"),
    (2, "Europe/Berlin"),
    (3, "America/New_York"),
    (4, "Asia/Kolkata"),
    (5, "Australia/Lord_Howe"),
    (6, "Pacific/Kiritimati"),
    (7, "Pacific/Pago_Pago"),
    (8, "Mars/Olympus"),
];

/// Organizations with their zone, billing anchor and members; organization 5's zone is
/// unknown (counted in UTC). Organization 4 has events but no organizations row.
const ORGS: &[(i64, &str, Option<i32>, &[i64])] = &[
    (1, "Asia/Kolkata", Some(15), &[0, 1]),
    (2, "America/Los_Angeles", None, &[1, 2]),
    (3, "Pacific/Kiritimati", Some(31), &[2, 3]),
    (5, "Mars/Olympus", Some(20), &[0, 4]),
];

/// Who spends the generated events: every user personally, user 9 without a users row, and
/// members in each of their organizations and in an organization without a row.
const SPENDERS: &[Spender] = &[
    (0, None),
    (1, None),
    (2, None),
    (3, None),
    (4, None),
    (5, None),
    (6, None),
    (7, None),
    (8, None),
    (9, None),
    (0, Some(1)),
    (0, Some(5)),
    (1, Some(1)),
    (1, Some(2)),
    (2, Some(2)),
    (2, Some(3)),
    (3, Some(3)),
    (4, Some(5)),
    (4, Some(4)),
];

fn books_hold_under_concurrent_writers(streams: Vec<WriterStream>) {
    let db = TestDb::alone();
    for (id, zone) in USERS {
        db.add_user(*id, zone);
    }
    for (id, zone, anchor, members) in ORGS {
        db.add_organization_with_members(*id, zone, *anchor, members);
    }
    let ctx = db.ctx_with(|s| s.aggregate.batch_events = 7);
    let writers = streams
        .into_iter()
        .map(|stream| transactions(stream, |i| SPENDERS[i]))
        .collect();
    write_while_aggregating(&db, &ctx, NOW, writers);

    assert_all_aggregated_exactly(&db);
    assert_subject_books_exact(&db);
    assert_eq!(
        db.count("SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM token_usage_daily"),
        db.count("SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM usage_events")
    );
    assert_eq!(
        db.count("SELECT (COALESCE(sum(cost), 0) * 100)::bigint AS n FROM token_usage_daily"),
        db.count("SELECT (COALESCE(sum(cost), 0) * 100)::bigint AS n FROM usage_events")
    );
    // Personal periods count no event of an organization, and the reverse.
    assert_eq!(
        db.count(
            "SELECT COALESCE(sum(requests), 0)::bigint AS n FROM usage_periods
              WHERE org_id = 0 AND period = 'day'"
        ),
        db.count("SELECT count(*) AS n FROM usage_events WHERE org_id IS NULL")
    );
    assert_eq!(
        db.count(
            "SELECT COALESCE(sum(requests), 0)::bigint AS n FROM usage_periods
              WHERE org_id > 0 AND user_id = 0 AND period = 'month'"
        ),
        db.count("SELECT count(*) AS n FROM usage_events WHERE org_id IS NOT NULL")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn every_subjects_books_equal_the_raw_events_with_concurrent_writers(
        // 30 days from 2026-10-20: clock changes, anchors 15, 31 and 20, a new calendar month.
        streams in prop::collection::vec(writer_stream(SPENDERS.len(), 30), 3..5)
    ) {
        books_hold_under_concurrent_writers(streams);
    }
}
