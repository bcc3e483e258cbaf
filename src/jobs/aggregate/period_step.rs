//! The period step of the aggregate transaction: the batch into the quota periods
//! (`usage_periods`) and their per-kind totals (`usage_period_kind_totals`), opening the
//! periods that are missing.
//!
//! Input, made earlier in the transaction: `aggregate_batch` (the events, with their subject),
//! `aggregate_subjects` (each subject's zone and anchor) and `aggregate_groups` (the batch as
//! the daily summary groups it, with local days). Output: the two tables above. Its
//! statements are `sql/period_step/NN_*.sql`, run in order; each file says what it reads and
//! what it makes. The temporary tables it makes are dropped at commit.
//!
//! The words: the *natural* period of an event is the one `usage_period_bounds` gives for it;
//! a *span* is a subject's events of one natural period; a span is placed *direct* (its
//! natural period opened, nothing of the subject near it), *near* existing periods (then
//! *located* in one of them, or *open*ed between them), or *per event* (events outside their
//! natural bounds, after a clock change across midnight).

use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::jobs::JobError;

const DAY_LIST: &str = include_str!("../sql/period_step/01_day_list.sql");
const ZONE_DAYS: &str = include_str!("../sql/period_step/02_zone_days.sql");
const NATURAL: &str = include_str!("../sql/period_step/03_natural.sql");
const SUMS: &str = include_str!("../sql/period_step/04_sums.sql");
const NEAR: &str = include_str!("../sql/period_step/05_near.sql");
const SPANS_TABLE: &str = include_str!("../sql/period_step/06_spans_table.sql");
const SPANS: &str = include_str!("../sql/period_step/07_spans.sql");
const PLACED: &str = include_str!("../sql/period_step/08_placed.sql");
const OPEN: &str = include_str!("../sql/period_step/09_open.sql");
const LOCATED: &str = include_str!("../sql/period_step/10_located.sql");
const KIND_TOTALS_NEW: &str = include_str!("../sql/period_step/11_kind_totals_new.sql");
const KIND_TOTALS_LOCATED: &str = include_str!("../sql/period_step/12_kind_totals_located.sql");
const PER_EVENT: &str = include_str!("../sql/period_step/13_per_event.sql");
const HOMELESS: &str = include_str!("../sql/period_step/14_homeless.sql");
const OPEN_HOMELESS: &str = include_str!("../sql/period_step/15_open_homeless.sql");
const PER_EVENT_ADD: &str = include_str!("../sql/period_step/16_per_event_add.sql");

/// The step's temporary tables, dropped first in case the transaction ran it already.
const TABLES: &str = "period_day_list, period_zone_days, period_natural, period_sums, \
                      period_near, period_spans, period_placed, period_per_event, period_homeless";

/// Runs the period step; returns the periods it opened.
pub fn add_batch_to_periods(conn: &mut PgConnection) -> Result<u64, JobError> {
    // The plans the statements were written for: hash joins, no JIT compile for one-off
    // statements, a small sample for the temporary tables' statistics. Until commit, which
    // only the watermark's update comes before.
    conn.batch_execute("SET LOCAL jit = off")?;
    conn.batch_execute("SET LOCAL enable_mergejoin = off")?;
    conn.batch_execute("SET LOCAL default_statistics_target = 10")?;
    conn.batch_execute(&format!("DROP TABLE IF EXISTS {TABLES}"))?;
    let mut opened = 0;
    step(conn, "day_list", DAY_LIST, None)?;
    step(conn, "zone_days", ZONE_DAYS, Some("period_zone_days"))?;
    step(conn, "natural", NATURAL, Some("period_natural"))?;
    step(conn, "sums", SUMS, Some("period_sums"))?;
    step(conn, "near", NEAR, Some("period_near"))?;
    step(conn, "spans_table", SPANS_TABLE, None)?;
    opened += step(conn, "spans", SPANS, Some("period_spans"))?;
    step(conn, "placed", PLACED, Some("period_placed"))?;
    opened += step(conn, "open", OPEN, None)?;
    step(conn, "located", LOCATED, None)?;
    step(conn, "kind_totals_new", KIND_TOTALS_NEW, None)?;
    step(conn, "kind_totals_located", KIND_TOTALS_LOCATED, None)?;
    let per_event: crate::db::Flag = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM period_placed WHERE placement = 'per_event') AS value",
    )
    .get_result(conn)?;
    if per_event.value {
        step(conn, "per_event", PER_EVENT, Some("period_per_event"))?;
        opened += place_per_event(conn)?;
    }
    conn.batch_execute(&format!("DROP TABLE IF EXISTS {TABLES}"))?;
    Ok(opened)
}

/// Runs one statement of the step (then `ANALYZE`s the table it made, when named); returns
/// the rows it wrote.
fn step(
    conn: &mut PgConnection,
    name: &'static str,
    sql: &str,
    analyze: Option<&str>,
) -> Result<u64, JobError> {
    let started = Instant::now();
    let rows = diesel::sql_query(sql).execute(conn)? as u64;
    if let Some(table) = analyze {
        conn.batch_execute(&format!("ANALYZE {table}"))?;
    }
    tracing::debug!(
        job.name = "aggregate",
        step = name,
        rows.affected = rows,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "period step"
    );
    Ok(rows)
}

/// The per-event path (steps 14 to 16): periods for the events no period contains, a day
/// of each subject at a time, then every event into the period containing it. Returns the
/// periods opened.
fn place_per_event(conn: &mut PgConnection) -> Result<u64, JobError> {
    let mut opened = 0;
    loop {
        conn.batch_execute("DROP TABLE IF EXISTS period_homeless")?;
        if step(conn, "homeless", HOMELESS, None)? == 0 {
            break;
        }
        let added = step(conn, "open_homeless", OPEN_HOMELESS, None)?;
        if added == 0 {
            return Err(no_period_for(conn));
        }
        opened += added;
    }
    step(conn, "per_event_add", PER_EVENT_ADD, None)?;
    Ok(opened)
}

/// Events that fit no period while none can be opened for them: periods overlap. Refused
/// rather than miscounted; the error names a subject and an event's time.
fn no_period_for(conn: &mut PgConnection) -> JobError {
    #[derive(QueryableByName)]
    struct Homeless {
        #[diesel(sql_type = BigInt)]
        user_id: i64,
        #[diesel(sql_type = BigInt)]
        org_id: i64,
        #[diesel(sql_type = Text)]
        first_at: String,
    }
    let first = diesel::sql_query(
        "SELECT user_id, org_id, first_at::text AS first_at FROM period_homeless LIMIT 1",
    )
    .get_result::<Homeless>(conn);
    match first {
        Ok(h) => JobError::Invalid(format!(
            "aggregate: events of user {} organization {} at {} fit no quota period and none \
             can be opened: that subject's periods overlap; fix them in usage_periods \
             (docs/OPERATIONS.md, \"Back-fill and repair\") and run aggregate again",
            h.user_id, h.org_id, h.first_at
        )),
        Err(e) => JobError::Db(e),
    }
}
