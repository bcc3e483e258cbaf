//! `--export-csv`: the daily token summary as RFC 4180 CSV for accounting, streamed from a
//! server-side cursor so memory stays flat whatever the range.

use std::io::Write;

use chrono::NaiveDate;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Date, Nullable, Text};

const DECLARE_CURSOR_SQL: &str = include_str!("sql/export_declare_cursor.sql");

/// Rows fetched from the cursor at a time: the count `FETCH_SQL` names (FETCH takes no bind
/// parameter), checked when compiling.
const FETCH_ROWS: usize = 5000;
const FETCH_SQL: &str = "FETCH 5000 FROM token_usage_export";
const _: () = assert!(fetch_count(FETCH_SQL) == FETCH_ROWS);

/// The row count of a `FETCH n FROM …` statement.
const fn fetch_count(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let (mut i, mut n) = ("FETCH ".len(), 0);
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        n = n * 10 + (bytes[i] - b'0') as usize;
        i += 1;
    }
    n
}

/// The header row: the columns of `token_usage_daily`, in its order. `org_id` came last, after
/// the first release of the export, so files read by column position keep their meaning.
pub const CSV_HEADER: [&str; 13] = [
    "user_id",
    "day",
    "kind",
    "request_type",
    "model",
    "events",
    "tokens",
    "prompt_tokens",
    "completion_tokens",
    "messages",
    "bytes",
    "cost",
    "org_id",
];

/// Whose summary rows an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportScope {
    All,
    /// One user's rows: personal usage and usage in any organization.
    User(i64),
    /// The rows of usage spent in one organization, by all its members.
    Organization(i64),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database error while exporting: {0}")]
    Db(#[from] diesel::result::Error),
    #[error("cannot write the CSV output: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot write the CSV output: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

#[derive(QueryableByName)]
struct DailyRow {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = Date)]
    day: NaiveDate,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    request_type: String,
    #[diesel(sql_type = Text)]
    model: String,
    #[diesel(sql_type = BigInt)]
    events: i64,
    #[diesel(sql_type = BigInt)]
    tokens: i64,
    #[diesel(sql_type = BigInt)]
    prompt_tokens: i64,
    #[diesel(sql_type = BigInt)]
    completion_tokens: i64,
    #[diesel(sql_type = BigInt)]
    messages: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    /// Exact decimal text, as stored.
    #[diesel(sql_type = Text)]
    cost: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    org_id: Option<i64>,
}

/// Writes the summary rows of local days `from..=to` (of everyone, one user or one
/// organization), ordered by user and day, with a header row; `org_id` is empty for personal
/// usage. Returns the number of data rows. The rows come from one
/// snapshot, so a concurrent aggregate run never splits the export.
pub fn write_daily_csv<W: Write>(
    conn: &mut PgConnection,
    from: NaiveDate,
    to: NaiveDate,
    scope: ExportScope,
    out: W,
) -> Result<u64, ExportError> {
    if from > to {
        return Err(ExportError::Invalid(format!(
            "--from {from} is after --to {to}; give the first and the last day to export"
        )));
    }
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(CSV_HEADER)?;
    let (user_id, org_id) = match scope {
        ExportScope::All => (None, None),
        ExportScope::User(user) => (Some(user), None),
        ExportScope::Organization(org) => (None, Some(org)),
    };
    let mut rows = 0u64;
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(|conn| {
            diesel::sql_query(DECLARE_CURSOR_SQL)
                .bind::<Date, _>(from)
                .bind::<Date, _>(to)
                .bind::<Nullable<BigInt>, _>(user_id)
                .bind::<Nullable<BigInt>, _>(org_id)
                .execute(conn)?;
            loop {
                let batch: Vec<DailyRow> = diesel::sql_query(FETCH_SQL).load(conn)?;
                for row in &batch {
                    writer.write_record([
                        row.user_id.to_string().as_str(),
                        &row.day.to_string(),
                        &row.kind,
                        &row.request_type,
                        &row.model,
                        &row.events.to_string(),
                        &row.tokens.to_string(),
                        &row.prompt_tokens.to_string(),
                        &row.completion_tokens.to_string(),
                        &row.messages.to_string(),
                        &row.bytes.to_string(),
                        &row.cost,
                        &row.org_id.map_or(String::new(), |org| org.to_string()),
                    ])?;
                }
                rows += batch.len() as u64;
                if batch.len() < FETCH_ROWS {
                    break;
                }
            }
            conn.batch_execute("CLOSE token_usage_export")?;
            Ok::<_, ExportError>(())
        })?;
    writer.flush()?;
    Ok(rows)
}
