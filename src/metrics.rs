//! Prometheus metrics (OpenMetrics text, served at `/metrics` when `metrics.listen` is set).
//!
//! Two sources: counters and the duration histogram of the runs this process made, kept in
//! memory; and gauges read from the database at each scrape (the ledger, the alert outbox, the
//! aggregation watermark), so every instance reports the same shared state.
//! The names are listed in docs/OPERATIONS.md.

use std::sync::atomic::AtomicU64;

use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Text};
use prometheus_client::encoding::EncodeLabelSet;

use crate::jobs::aggregate::held_back::{self, Holder};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::jobs::JobKind;
use crate::jobs::alerts::AlertStatus;
use crate::jobs::alerts::status::StatusCount;
use crate::jobs::alerts::webhooks::{OutcomeCount, outcome_counts};
use crate::scheduler::outcome::RunOutcome;

/// The media type of the exposition `render` produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every reason of `usage_quarantine`, reported even at zero.
const QUARANTINE_REASONS: &[&str] = &[
    "created_at_out_of_range",
    "cost_not_a_number",
    "daily_sum_overflow",
    "period_sum_overflow",
];

/// Counting unaggregated events stops here: the gauge says "at least this many" past it, and
/// a scrape stays cheap however far behind aggregation is.
pub const UNAGGREGATED_COUNT_CAP: i64 = 1_000_000;

const LAST_SUCCESS_SQL: &str = include_str!("sql/metrics_last_success.sql");
const WATERMARK_SQL: &str = include_str!("sql/metrics_watermark.sql");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStatus {
    job: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Job {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookOutcome {
    host: String,
    status: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Host {
    host: String,
}

type DurationFamily = Family<Job, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 50 ms to about 7 hours (the longest job timeout is 6 h).
    Histogram::new(exponential_buckets(0.05, 4.0, 10))
}

/// The metrics this process keeps in memory.
pub struct Metrics {
    registry: Registry,
    runs: Family<JobStatus, Counter>,
    durations: DurationFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("usage_worker");
        let runs = Family::<JobStatus, Counter>::default();
        registry.register(
            "job_runs",
            "Runs this process finished, by job and status (succeeded, failed, skipped)",
            runs.clone(),
        );
        let durations = DurationFamily::new_with_constructor(duration_histogram);
        registry.register(
            "job_run_duration_seconds",
            "Duration of this process's succeeded and failed runs, by job",
            durations.clone(),
        );
        Metrics {
            registry,
            runs,
            durations,
        }
    }

    /// Counts a finished run. "Already ran" (another instance had the tick) is not a run.
    pub fn record_run(&self, kind: JobKind, outcome: &RunOutcome) {
        let elapsed = match outcome {
            RunOutcome::Succeeded { elapsed, .. } | RunOutcome::Failed { elapsed, .. } => {
                Some(elapsed)
            }
            RunOutcome::Skipped { .. } | RunOutcome::Lost { .. } => None,
            RunOutcome::AlreadyRan => return,
        };
        self.runs
            .get_or_create(&JobStatus {
                job: kind.name().to_string(),
                status: outcome.status().to_string(),
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.durations
                .get_or_create(&Job {
                    job: kind.name().to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// The exposition: this process's metrics, then the database gauges (none when the
    /// database could not be read: `usage_worker_database_up` says so). `clock_skew` is the
    /// latest measured difference of the clocks (see `db::clock`), when there is one.
    pub fn render(
        &self,
        sample: Option<&DatabaseSample>,
        scheduler_alive: bool,
        clock_skew: Option<f64>,
    ) -> String {
        let mut registry = Registry::with_prefix("usage_worker");
        let up = Gauge::<i64>::default();
        up.set(i64::from(sample.is_some()));
        registry.register(
            "database_up",
            "1 when this scrape could read the database, else 0",
            up,
        );
        let alive = Gauge::<i64>::default();
        alive.set(i64::from(scheduler_alive));
        registry.register(
            "scheduler_alive",
            "1 while the scheduler loop of this process is running and responsive, else 0",
            alive,
        );
        if let Some(skew) = clock_skew {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(skew);
            registry.register(
                "clock_skew_seconds",
                "The database's clock minus this host's at the latest measurement (start, each run, each scrape); jobs take now from the database",
                gauge,
            );
        }
        if let Some(sample) = sample {
            sample.register(&mut registry);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, &registry))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

/// Gauges read from the database at one scrape.
#[derive(Debug, Clone, Default)]
pub struct DatabaseSample {
    /// Unix time of each job's latest successful run, by any instance or by hand.
    pub last_success: Vec<(String, f64)>,
    /// Alerts by status; `None` when the `quota_alerts` table does not exist.
    pub alerts: Option<Vec<(AlertStatus, i64)>>,
    /// Events at or above the aggregation watermark (capped at [`UNAGGREGATED_COUNT_CAP`]).
    pub events_unaggregated: i64,
    /// Seconds since the aggregation watermark was last stored.
    pub watermark_age_seconds: f64,
    /// Events set aside in `usage_quarantine`, by reason; `None` when the table does not exist.
    pub quarantined: Option<Vec<(String, i64)>>,
    /// Webhook deliveries by endpoint host, status and error class; `None` without the table.
    pub webhooks: Option<Vec<OutcomeCount>>,
    /// The transaction holding the aggregation watermark back, when one does.
    pub held_back: Option<Holder>,
}

impl DatabaseSample {
    fn register(&self, registry: &mut Registry) {
        let last_success = Family::<Job, Gauge<f64, AtomicU64>>::default();
        for (job, at) in &self.last_success {
            last_success
                .get_or_create(&Job { job: job.clone() })
                .set(*at);
        }
        registry.register(
            "job_last_success_timestamp_seconds",
            "Unix time of each job's latest successful run (from the job_runs ledger: any instance, any trigger)",
            last_success,
        );
        if let Some(alerts) = &self.alerts {
            let family = Family::<Status, Gauge>::default();
            // Every status is reported, at zero too, so a dashboard never loses a series.
            for status in AlertStatus::ALL {
                let n = alerts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                family
                    .get_or_create(&Status {
                        status: status.to_string(),
                    })
                    .set(n);
            }
            registry.register(
                "alerts",
                "Rows of the quota_alerts outbox by status",
                family,
            );
        }
        let unaggregated = Gauge::<i64>::default();
        unaggregated.set(self.events_unaggregated);
        registry.register(
            "events_unaggregated",
            "Usage events not yet aggregated (recorded_xid at or above the watermark), counted up to 1000000",
            unaggregated,
        );
        if let Some(quarantined) = &self.quarantined {
            let family = Family::<Reason, Gauge>::default();
            for reason in QUARANTINE_REASONS {
                family
                    .get_or_create(&Reason {
                        reason: reason.to_string(),
                    })
                    .set(0);
            }
            for (reason, n) in quarantined {
                family
                    .get_or_create(&Reason {
                        reason: reason.clone(),
                    })
                    .set(*n);
            }
            registry.register(
                "events_quarantined",
                "Usage events aggregate set aside in usage_quarantine (never counted), by reason",
                family,
            );
        }
        if let Some(webhooks) = &self.webhooks {
            register_webhooks(registry, webhooks);
        }
        let age = Gauge::<f64, AtomicU64>::default();
        age.set(self.watermark_age_seconds);
        registry.register(
            "watermark_age_seconds",
            "Seconds since the aggregation watermark was last advanced",
            age,
        );
        if let Some(holder) = &self.held_back {
            register_held_back(registry, holder);
        }
    }
}

fn register_held_back(registry: &mut Registry, holder: &Holder) {
    let family = Family::<HolderLabels, Gauge<f64, AtomicU64>>::default();
    family
        .get_or_create(&HolderLabels {
            pid: holder.pid.map_or(String::new(), |p| p.to_string()),
            application_name: holder.application_name.clone(),
        })
        .set(holder.open_seconds.unwrap_or(0.0));
    registry.register(
        "watermark_held_back_seconds",
        "How long the transaction holding the aggregation watermark back has been open (0: unknown; grant pg_read_all_stats)",
        family,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HolderLabels {
    pid: String,
    application_name: String,
}

fn register_webhooks(registry: &mut Registry, counts: &[OutcomeCount]) {
    let deliveries = Family::<WebhookOutcome, Gauge>::default();
    let disabled = Family::<Host, Gauge>::default();
    for count in counts {
        deliveries
            .get_or_create(&WebhookOutcome {
                host: count.host.clone(),
                status: count.status.clone(),
                class: count.class.clone(),
            })
            .inc_by(count.n);
        disabled
            .get_or_create(&Host {
                host: count.host.clone(),
            })
            .set(i64::from(count.endpoint_disabled));
    }
    registry.register(
        "webhook_deliveries",
        "Rows of webhook_deliveries by endpoint host, status and last error class (none: no error)",
        deliveries,
    );
    registry.register(
        "webhook_endpoint_disabled",
        "1 for an endpoint disabled by 410 Gone until its configuration changes, else 0",
        disabled,
    );
}

#[derive(QueryableByName)]
struct LastSuccess {
    #[diesel(sql_type = Text)]
    job: String,
    #[diesel(sql_type = Double)]
    at: f64,
}

#[derive(QueryableByName)]
struct Watermark {
    #[diesel(sql_type = Double)]
    age_seconds: f64,
    #[diesel(sql_type = BigInt)]
    unaggregated: i64,
}

/// Reads the database gauges in one read-only transaction that gives up after 5 seconds, so
/// a slow database makes a scrape fail rather than pile up.
pub fn sample_database(conn: &mut PgConnection) -> QueryResult<DatabaseSample> {
    conn.build_transaction().read_only().run(|conn| {
        diesel::sql_query("SET LOCAL statement_timeout = '5s'").execute(conn)?;
        let jobs = JobKind::all_names();
        let last_success = diesel::sql_query(LAST_SUCCESS_SQL)
        .bind::<Array<Text>, _>(&jobs)
        .load::<LastSuccess>(conn)?
        .into_iter()
        .map(|r| (r.job, r.at))
        .collect();

        let has_alerts = diesel::sql_query(
            "SELECT to_regclass('quota_alerts') IS NOT NULL AS value",
        )
        .get_result::<crate::db::Flag>(conn)?
        .value;
        let alerts = if has_alerts {
            Some(
                diesel::sql_query(
                    "SELECT status::text AS status, count(*) AS n FROM quota_alerts GROUP BY status",
                )
                .load::<StatusCount>(conn)?
                .into_iter()
                .map(|r| (r.status, r.n))
                .collect(),
            )
        } else {
            None
        };

        let watermark = diesel::sql_query(WATERMARK_SQL)
        .bind::<BigInt, _>(UNAGGREGATED_COUNT_CAP)
        .get_result::<Watermark>(conn)?;

        let quarantined = crate::jobs::quarantine::counts_by_reason(conn)?;
        let webhooks = outcome_counts(conn)?;
        let held_back = held_back::holder(conn)?.filter(Holder::worth_reporting);

        Ok(DatabaseSample {
            last_success,
            alerts,
            events_unaggregated: watermark.unaggregated,
            watermark_age_seconds: watermark.age_seconds.max(0.0),
            quarantined,
            webhooks,
            held_back,
        })
    })
}
