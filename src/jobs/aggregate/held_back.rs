//! Naming what holds the watermark back. Aggregation never passes a transaction still open
//! anywhere in the cluster (an event it inserts would be missed), so one left open — an
//! application session idle in transaction, a forgotten prepared transaction — stops the
//! summaries, periods and alerts for everyone until it ends. (Quota answers stay exact: they
//! count the events not yet aggregated.) Each run names the holder in its report; the log
//! says it once it has been open `aggregate.stall_warning`.

use std::time::Duration;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Double, Integer, Nullable, Text};
use serde::Serialize;

const HELD_BACK_SQL: &str = include_str!("../sql/aggregate_held_back.sql");

/// Below this, an open transaction is ordinary traffic (a writer between insert and commit),
/// not worth a line in the report.
pub const REPORT_AFTER: Duration = Duration::from_secs(2);

/// The transaction the watermark waits for, as its session shows it.
#[derive(Debug, Clone, QueryableByName, Serialize)]
pub struct Holder {
    /// The backend's process id; none for a prepared transaction.
    #[diesel(sql_type = Nullable<Integer>)]
    pub pid: Option<i32>,
    #[diesel(sql_type = Text)]
    pub application_name: String,
    #[diesel(sql_type = Text)]
    pub user_name: String,
    /// `idle in transaction`, `active`, …; NULL when this role may not see it (grant it
    /// pg_read_all_stats).
    #[diesel(sql_type = Nullable<Text>)]
    pub state: Option<String>,
    /// How long its transaction has been open; NULL when this role may not see it.
    #[diesel(sql_type = Nullable<Double>)]
    pub open_seconds: Option<f64>,
    /// Its transaction id: the watermark cannot pass it.
    #[diesel(sql_type = Text)]
    pub xid: String,
}

impl Holder {
    /// `pid 4242 (application "billing", user app, idle in transaction, open 8m 20s, xid 1234)`.
    pub fn describe(&self) -> String {
        let who = match self.pid {
            Some(pid) => format!("pid {pid}"),
            None => self.application_name.clone(),
        };
        let open = self.open_seconds.map_or(
            "open for an unknown time (grant the daemon's role \
                                              pg_read_all_stats to see it)"
                .to_string(),
            |s| {
                format!(
                    "open {}",
                    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64))
                )
            },
        );
        format!(
            "{who} (application \"{}\", user {}, {}, {open}, xid {})",
            self.application_name,
            self.user_name,
            self.state.as_deref().unwrap_or("state unknown"),
            self.xid
        )
    }

    /// Whether it has been open long enough to be more than traffic: reported then.
    pub fn worth_reporting(&self) -> bool {
        self.open_seconds
            .is_none_or(|s| s >= REPORT_AFTER.as_secs_f64())
    }
}

/// The transaction holding the watermark back, when committed events wait behind it.
pub fn holder(conn: &mut PgConnection) -> QueryResult<Option<Holder>> {
    diesel::sql_query(HELD_BACK_SQL).get_result(conn).optional()
}
