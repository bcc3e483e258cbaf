//! Dates for tests that run at the real clock (a daemon, or `--run` without `--at`), taken
//! from the database's `now()`: see "Where dates come from" in the [support](super) module.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::Timestamptz;

use super::TestDb;

/// The database's `now()`.
pub fn db_now(db: &TestDb) -> DateTime<Utc> {
    #[derive(QueryableByName)]
    struct Now {
        #[diesel(sql_type = Timestamptz)]
        now: DateTime<Utc>,
    }
    diesel::sql_query("SELECT now() AS now")
        .get_result::<Now>(&mut db.conn())
        .expect("SELECT now()")
        .now
}

/// A month-long period that is open now and stays open for weeks: it started a day before the
/// database's `now()`. Returns its start and end as RFC 3339 text, for seeding `usage_periods`.
/// (The calendar month around now would end within seconds when a test runs on its last day.)
pub fn month_around_now(db: &TestDb) -> (String, String) {
    let start = db_now(db) - chrono::Duration::days(1);
    let end = start + chrono::Months::new(1);
    (start.to_rfc3339(), end.to_rfc3339())
}

/// A fixed-offset zone (`Etc/GMT-5` is UTC+5) in which the database's `now()` is between
/// 10:00 and 14:00 local time: a day period of a user there is open now and stays open for
/// hours, whenever the test runs. (In UTC, a test that runs at 23:59 would see today's period
/// end under it.)
pub fn zone_at_local_noon(db: &TestDb) -> String {
    use chrono::Timelike;
    let utc_hour = db_now(db).hour() as i32;
    // UTC+east is local noon; the IANA names invert the sign: Etc/GMT-5 is UTC+5.
    let east = if utc_hour <= 12 {
        12 - utc_hour
    } else {
        12 - utc_hour + 24
    };
    let east = if east > 14 { east - 24 } else { east };
    match east {
        0 => "UTC".to_string(),
        e if e > 0 => format!("Etc/GMT-{e}"),
        e => format!("Etc/GMT+{}", -e),
    }
}
