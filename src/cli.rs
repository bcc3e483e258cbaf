//! Command-line flags.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use clap::{ArgGroup, Parser};

use crate::export::ExportScope;
use crate::jobs::JobKind;
use crate::subject::Subject;

const EXAMPLES: &str = "\
Examples:
  usage-worker --demo                                  private PostgreSQL + demo data + the daemon
  usage-worker --demo --run all                        every job once on the demo data, then exit
  usage-worker --check-config --config /etc/usage-worker/config.toml
  usage-worker --migrate                               apply pending schema migrations
  usage-worker --list-jobs                             jobs, schedules, next and last runs
  usage-worker --run partitions --at 2027-01-15T00:00:00Z
                                                       partitions as of a later instant
  usage-worker --run reset-daily --at 2027-01-15T00:05:00Z --dry-run
                                                       what a reset at that instant would close
  usage-worker --status                                recent runs from the ledger
  usage-worker --run reset-daily --user 42             manual reset of user 42's current day
  usage-worker --run reset-monthly --org 7             manual reset of organization 7's month
  usage-worker --usage 42                              user 42's quota: a bar per limit
  usage-worker --usage --org 7                         organization 7's quota and top members
  usage-worker --run aggregate --from 2026-10-01 --to 2026-10-31 --dry-run
                                                       rows of the token summary that differ from raw events
  usage-worker --export-csv --from 2026-10-01 --to 2026-10-31 --output october.csv
  usage-worker --export-csv --from 2026-10-01 --to 2026-10-31 --org 7
                                                       organization 7's rows only
  usage-worker                                         the daemon (as the systemd service runs it)

Exit codes: 0 ok, 1 a job failed or was skipped, 2 usage error (also a future --at that would
close, expire or delete without --allow-future), 75 database unreachable, 78 bad configuration.";

#[derive(Debug, Parser)]
#[command(
    name = "usage-worker",
    version,
    about = "Keeps the usage and quota books of a SaaS product in PostgreSQL: \
             aggregation, quota resets, alert emails, retention.",
    after_help = EXAMPLES,
    group(ArgGroup::new("action").args(["run", "check_config", "migrate", "list_jobs", "status", "usage", "export_csv"])),
    group(ArgGroup::new("takes_range").args(["run", "export_csv"]).multiple(true)),
    group(ArgGroup::new("takes_org").args(["run", "usage", "export_csv"]).multiple(true))
)]
pub struct Cli {
    /// Configuration file (default: /etc/usage-worker/config.toml when it exists).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Use a private PostgreSQL cluster started from the system's server binaries, loaded
    /// with demo data when empty (emails are written to files).
    #[arg(long)]
    pub demo: bool,

    /// Run jobs once and exit: names separated by commas, or `all`.
    #[arg(long, value_name = "JOB[,JOB…]|all", value_parser = parse_jobs)]
    pub run: Option<JobList>,

    /// The instant a job takes as now (RFC 3339, e.g. 2027-01-15T00:00:00Z). Later than now,
    /// it is refused for reset-daily, reset-monthly, alerts and retention, which would close
    /// periods, expire alerts or delete rows early (see --allow-future); aggregate, partitions
    /// and stats only add and accept it.
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant, requires = "run")]
    pub at: Option<DateTime<Utc>>,

    /// Report what the jobs would do; change nothing.
    #[arg(long, requires = "run")]
    pub dry_run: bool,

    /// Let --at lie in the future for jobs that close, expire or delete by time (staging,
    /// tests): what they do then cannot be undone on this database.
    #[arg(long, requires = "at")]
    pub allow_future: bool,

    /// Limit a run or an export to one user id (manual resets, rebuilds, --export-csv).
    #[arg(long, value_name = "USER_ID", requires = "takes_range")]
    pub user: Option<i64>,

    /// One organization id: manual resets of the organization's shared quota
    /// (`--run reset-daily --org 7`), its quota (`--usage --org 7`), its rows of --export-csv.
    #[arg(
        long,
        value_name = "ORG_ID",
        requires = "takes_org",
        conflicts_with = "user"
    )]
    pub org: Option<i64>,

    /// First day of a range (YYYY-MM-DD): rebuilds (`--run aggregate`), --export-csv.
    #[arg(long, value_name = "DATE", requires = "takes_range")]
    pub from: Option<NaiveDate>,

    /// Last day of a range, inclusive (YYYY-MM-DD).
    #[arg(long, value_name = "DATE", requires = "takes_range")]
    pub to: Option<NaiveDate>,

    /// Write the daily token summary of --from..--to (users' local days; an organization's
    /// days for usage in it) as CSV with a header row, then exit.
    #[arg(long, requires_all = ["from", "to"])]
    pub export_csv: bool,

    /// Where --export-csv writes (default: standard output).
    #[arg(long, value_name = "FILE", requires = "export_csv")]
    pub output: Option<PathBuf>,

    /// Validate the configuration, print it with secrets redacted, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Apply pending database migrations and exit.
    #[arg(long)]
    pub migrate: bool,

    /// List the jobs with their schedules, next run and last run.
    #[arg(long)]
    pub list_jobs: bool,

    /// Show recent runs from the run ledger.
    #[arg(long)]
    pub status: bool,

    /// Show one user's quota state (what `quota_status()` returns): a bar per limit, usage,
    /// and when each period resets in the user's time zone. `--usage --org ORG_ID`: an
    /// organization's (`org_quota_status()`) and its members who used the most this month.
    #[arg(long, value_name = "USER_ID", num_args = 0..=1)]
    pub usage: Option<Option<i64>>,

    /// With `--usage`: print JSON (the same fields) instead of the table.
    #[arg(long, requires = "usage")]
    pub json: bool,

    /// How many runs `--status` shows.
    #[arg(long, default_value_t = 20, value_name = "N", requires = "status")]
    pub limit: i64,
}

/// How far `--at` may lie ahead of this machine's clock without `--allow-future`: the clock
/// skew between an operator's machines, not a way to run tomorrow's reset today.
pub const FUTURE_AT_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

impl Cli {
    /// Whose quota `--usage` shows: the user it names or the organization of `--org`, never
    /// both and never neither. `None` without `--usage`.
    pub fn usage_subject(&self) -> Result<Option<Subject>, String> {
        match (self.usage, self.org) {
            (None, _) => Ok(None),
            (Some(Some(user)), None) => Ok(Some(Subject::User(user))),
            (Some(None), Some(org)) => Ok(Some(Subject::Org(org))),
            (Some(Some(user)), Some(org)) => Err(format!(
                "--usage {user} and --org {org} name two quotas; give a user id \
                 (--usage {user}) or an organization (--usage --org {org})"
            )),
            (Some(None), None) => Err(
                "--usage needs a user id (--usage 42) or an organization (--usage --org 7)".into(),
            ),
        }
    }

    /// Whose rows `--export-csv` writes: everyone's, one user's or one organization's.
    pub fn export_scope(&self) -> ExportScope {
        match (self.user, self.org) {
            (Some(user), _) => ExportScope::User(user),
            (None, Some(org)) => ExportScope::Organization(org),
            (None, None) => ExportScope::All,
        }
    }

    /// Refuses a date range that ends before it starts (`--from` after `--to`).
    pub fn refuse_reversed_range(&self) -> Result<(), String> {
        match (self.from, self.to) {
            (Some(from), Some(to)) if from > to => Err(format!(
                "--from {from} is after --to {to}; give the first and the last day of the range"
            )),
            _ => Ok(()),
        }
    }

    /// Refuses an `--at` later than `now` (beyond [`FUTURE_AT_TOLERANCE`]) on jobs that would
    /// act irreversibly as of then, unless it is a dry run or `--allow-future` is given.
    pub fn refuse_future_at(&self, now: DateTime<Utc>) -> Result<(), String> {
        let (Some(at), Some(jobs)) = (self.at, &self.run) else {
            return Ok(());
        };
        if self.dry_run || self.allow_future || at <= now + FUTURE_AT_TOLERANCE {
            return Ok(());
        }
        let irreversible: Vec<&str> = jobs
            .0
            .iter()
            .filter(|kind| kind.acts_irreversibly_as_of_now())
            .map(|kind| kind.name())
            .collect();
        if irreversible.is_empty() {
            return Ok(());
        }
        Err(format!(
            "--at {} is {} in the future: {} would close periods, expire alerts or delete rows \
             as of then, which cannot be undone when that time comes; preview with --dry-run, \
             or add --allow-future on a staging or test database",
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
            ahead(at - now),
            irreversible.join(", ")
        ))
    }
}

/// `3 days`, `5 hours`, `12 minutes`: how far ahead, roughly, for a message.
fn ahead(delta: TimeDelta) -> String {
    let (n, unit) = if delta.num_days() >= 2 {
        (delta.num_days(), "days")
    } else if delta.num_hours() >= 2 {
        (delta.num_hours(), "hours")
    } else {
        (delta.num_minutes(), "minutes")
    };
    format!("{n} {unit}")
}

/// The jobs named by `--run`, in order.
#[derive(Debug, Clone)]
pub struct JobList(pub Vec<JobKind>);

fn parse_jobs(text: &str) -> Result<JobList, String> {
    JobKind::parse_list(text).map(JobList)
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("`{text}` is not an RFC 3339 instant ({e}); expected e.g. 2027-01-15T00:00:00Z")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flag_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["usage-worker", "--run", "partitions,partitions"]).unwrap();
        assert_eq!(cli.run.unwrap().0, vec![JobKind::Partitions]);
    }

    #[test]
    fn unknown_job_is_a_usage_error_listing_valid_names() {
        let err = Cli::try_parse_from(["usage-worker", "--run", "agregate"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("agregate") && text.contains("partitions"),
            "{text}"
        );
    }

    #[test]
    fn usage_takes_a_user_id_and_json_needs_usage() {
        let cli = Cli::try_parse_from(["usage-worker", "--usage", "42", "--json"]).unwrap();
        assert_eq!(cli.usage_subject(), Ok(Some(Subject::User(42))));
        assert!(cli.json);
        assert!(Cli::try_parse_from(["usage-worker", "--json"]).is_err());
        assert!(Cli::try_parse_from(["usage-worker", "--usage", "42", "--status"]).is_err());
    }

    #[test]
    fn usage_takes_a_user_id_or_an_organization_but_not_both_nor_neither() {
        for args in [
            &["--usage", "--org", "7"][..],
            &["--org", "7", "--usage", "--json"],
        ] {
            assert_eq!(
                cli(args).usage_subject(),
                Ok(Some(Subject::Org(7))),
                "{args:?}"
            );
        }
        let both = cli(&["--usage", "42", "--org", "7"])
            .usage_subject()
            .unwrap_err();
        assert!(
            both.contains("--usage 42") && both.contains("--usage --org 7"),
            "{both}"
        );
        let neither = cli(&["--usage"]).usage_subject().unwrap_err();
        assert!(neither.contains("needs a user id"), "{neither}");
        assert_eq!(cli(&["--status"]).usage_subject(), Ok(None));
    }

    #[test]
    fn org_goes_with_run_usage_or_export_csv_and_never_with_user() {
        assert!(Cli::try_parse_from(["usage-worker", "--org", "7"]).is_err());
        assert!(Cli::try_parse_from(["usage-worker", "--status", "--org", "7"]).is_err());
        let range = ["--export-csv", "--from", "2026-10-01", "--to", "2026-10-31"];
        let export = cli(&[&range[..], &["--org", "7"]].concat());
        assert_eq!(export.export_scope(), ExportScope::Organization(7));
        assert_eq!(cli(&range).export_scope(), ExportScope::All);
        assert!(
            Cli::try_parse_from(
                ["usage-worker"]
                    .iter()
                    .chain(&range)
                    .chain(&["--org", "7", "--user", "1"])
            )
            .is_err()
        );
        assert_eq!(cli(&["--run", "reset-daily", "--org", "7"]).org, Some(7));
    }

    #[test]
    fn export_csv_needs_a_range_and_output_needs_export_csv() {
        assert!(
            Cli::try_parse_from(["usage-worker", "--export-csv", "--from", "2026-10-01"]).is_err()
        );
        assert!(Cli::try_parse_from(["usage-worker", "--output", "x.csv"]).is_err());
        let cli = Cli::try_parse_from([
            "usage-worker",
            "--export-csv",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-31",
            "--user",
            "7",
        ])
        .unwrap();
        assert!(cli.export_csv && cli.user == Some(7) && cli.output.is_none());
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("usage-worker").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn a_future_at_is_refused_only_for_jobs_that_close_expire_or_delete() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next_week = "2026-12-06T12:00:00Z";
        for jobs in ["reset-daily", "reset-monthly", "alerts", "retention", "all"] {
            let error = cli(&["--run", jobs, "--at", next_week])
                .refuse_future_at(now)
                .unwrap_err();
            assert!(
                error.contains("--allow-future") && error.contains("7 days"),
                "{error}"
            );
        }
        let error = cli(&["--run", "aggregate,retention", "--at", next_week])
            .refuse_future_at(now)
            .unwrap_err();
        assert!(error.contains(" retention would") && !error.contains("aggregate"));
        for args in [
            &["--run", "aggregate,partitions,stats", "--at", next_week][..],
            &["--run", "all", "--at", next_week, "--dry-run"],
            &["--run", "all", "--at", next_week, "--allow-future"],
            &["--run", "all", "--at", "2026-11-29T12:04:59Z"],
            &["--run", "all", "--at", "2020-01-01T00:00:00Z"],
            &["--run", "all"],
        ] {
            assert_eq!(cli(args).refuse_future_at(now), Ok(()), "{args:?}");
        }
    }

    #[test]
    fn a_range_that_ends_before_it_starts_is_refused() {
        let reversed = cli(&[
            "--run",
            "aggregate",
            "--from",
            "2026-11-20",
            "--to",
            "2026-11-01",
        ]);
        let error = reversed.refuse_reversed_range().unwrap_err();
        assert!(
            error.contains("--from 2026-11-20 is after --to 2026-11-01"),
            "{error}"
        );
        for args in [
            &[
                "--run",
                "aggregate",
                "--from",
                "2026-11-01",
                "--to",
                "2026-11-01",
            ][..],
            &["--run", "aggregate", "--from", "2026-11-01"],
            &["--run", "aggregate"],
        ] {
            assert_eq!(cli(args).refuse_reversed_range(), Ok(()), "{args:?}");
        }
    }

    #[test]
    fn allow_future_needs_at() {
        assert!(Cli::try_parse_from(["usage-worker", "--run", "all", "--allow-future"]).is_err());
    }

    #[test]
    fn unparseable_at_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["usage-worker", "--run", "all", "--at", "tomorrow"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("RFC 3339"));
    }
}
