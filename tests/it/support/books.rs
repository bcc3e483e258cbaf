//! The books checked against the raw events they were computed from: the daily token summary,
//! and per subject the quota periods and the organizations' summaries. A user's personal usage
//! (user_id, org_id 0) counts only events with org_id NULL, an organization's (0, org_id) only
//! that organization's events, whichever member spent them.

use super::TestDb;

/// The raw sums per (user, organization, local day, kind, request_type, model) of events
/// below the watermark, computed independently of the job: the day is the organization's for
/// usage in one, the user's otherwise (zone validity is spelt out: only `Mars/Olympus` is
/// unknown in these tests; a missing row counts in UTC).
const RAW_BELOW_WATERMARK: &str = "
    SELECT e.user_id, e.org_id,
           (e.created_at AT TIME ZONE CASE WHEN z.tz IS NULL OR z.tz = 'Mars/Olympus'
                                          THEN 'UTC' ELSE z.tz END)::date AS day,
           e.kind, e.request_type, e.model,
           count(*)::bigint AS events, sum(e.tokens)::bigint AS tokens,
           sum(e.prompt_tokens)::bigint AS prompt_tokens,
           sum(e.completion_tokens)::bigint AS completion_tokens,
           sum(e.messages)::bigint AS messages, sum(e.bytes)::bigint AS bytes, sum(e.cost) AS cost
      FROM usage_events e
      LEFT JOIN users u ON u.id = e.user_id
      LEFT JOIN organizations o ON o.id = e.org_id
     CROSS JOIN LATERAL (SELECT CASE WHEN e.org_id IS NULL THEN u.timezone
                                     ELSE o.timezone END AS tz) z
     WHERE e.recorded_xid < (SELECT xid FROM aggregation_watermark)
     GROUP BY 1, 2, 3, 4, 5, 6";

/// Rows in which the summary and the raw events below the watermark disagree, either way.
pub fn summary_differences(db: &TestDb) -> i64 {
    db.count(&format!(
        "WITH raw AS ({RAW_BELOW_WATERMARK}),
              summary AS (SELECT user_id, org_id, day, kind, request_type, model, events, tokens,
                                 prompt_tokens, completion_tokens, messages, bytes, cost
                            FROM token_usage_daily)
         SELECT count(*) AS n FROM ((SELECT * FROM raw EXCEPT SELECT * FROM summary)
                                    UNION ALL
                                    (SELECT * FROM summary EXCEPT SELECT * FROM raw)) d"
    ))
}

/// Events at or above the watermark: not yet in the summary.
pub fn events_not_yet_aggregated(db: &TestDb) -> i64 {
    db.count(
        "SELECT count(*) AS n FROM usage_events
          WHERE recorded_xid >= (SELECT xid FROM aggregation_watermark)",
    )
}

/// Every committed event is aggregated and the summary holds exactly their sums.
pub fn assert_all_aggregated_exactly(db: &TestDb) {
    assert_eq!(events_not_yet_aggregated(db), 0, "events left unaggregated");
    assert_eq!(
        summary_differences(db),
        0,
        "summary rows differ from the raw events"
    );
}

/// Tokens of `user_id`'s summary rows on `day`: spent in organization `org` (None: personally).
pub fn summary_tokens(db: &TestDb, user_id: i64, org: Option<i64>, day: &str) -> i64 {
    let org = org.map_or("IS NULL".to_string(), |o| format!("= {o}"));
    db.count(&format!(
        "SELECT COALESCE(sum(tokens), 0)::bigint AS n FROM token_usage_daily
          WHERE user_id = {user_id} AND org_id {org} AND day = '{day}'"
    ))
}

/// The counted events (below the watermark, not set aside) with their subject.
const COUNTED_EVENTS: &str = "
    SELECT s.user_id AS subject_user, s.org_id AS subject_org, e.*
      FROM usage_events e
     CROSS JOIN LATERAL usage_event_subject(e.user_id, e.org_id) s
     WHERE e.recorded_xid < (SELECT xid FROM aggregation_watermark)
       AND NOT EXISTS (SELECT 1 FROM usage_quarantine q
                        WHERE q.event_id = e.id AND q.created_at = e.created_at)";

/// Period rows whose totals differ from the raw sums of their subject's events in their range.
pub fn period_differences(db: &TestDb) -> i64 {
    db.count(&format!(
        "WITH ev AS ({COUNTED_EVENTS})
         SELECT count(*) AS n
           FROM usage_periods p
          CROSS JOIN LATERAL (
                SELECT count(*) AS requests, COALESCE(sum(ev.messages), 0) AS messages,
                       COALESCE(sum(ev.tokens), 0) AS tokens, COALESCE(sum(ev.bytes), 0) AS bytes,
                       COALESCE(sum(ev.cost), 0) AS cost
                  FROM ev
                 WHERE ev.subject_user = p.user_id AND ev.subject_org = p.org_id
                   AND ev.created_at >= p.period_start AND ev.created_at < p.period_end) raw
          WHERE (p.requests, p.messages, p.tokens, p.bytes, p.cost)
                IS DISTINCT FROM (raw.requests, raw.messages, raw.tokens, raw.bytes, raw.cost)"
    ))
}

/// Per-kind period rows that differ from the raw sums per kind of their period, either way.
pub fn kind_total_differences(db: &TestDb) -> i64 {
    db.count(&format!(
        "WITH ev AS ({COUNTED_EVENTS}),
              raw AS (
                  SELECT p.user_id, p.org_id, p.period, p.period_start, ev.kind,
                         count(*)::bigint AS requests, sum(ev.messages)::bigint AS messages,
                         sum(ev.tokens)::bigint AS tokens, sum(ev.bytes)::bigint AS bytes,
                         sum(ev.cost) AS cost
                    FROM usage_periods p
                    JOIN ev ON ev.subject_user = p.user_id AND ev.subject_org = p.org_id
                     AND ev.created_at >= p.period_start AND ev.created_at < p.period_end
                   GROUP BY 1, 2, 3, 4, 5),
              kept AS (
                  SELECT user_id, org_id, period, period_start, kind, requests, messages, tokens,
                         bytes, cost
                    FROM usage_period_kind_totals)
         SELECT count(*) AS n FROM ((SELECT * FROM raw EXCEPT SELECT * FROM kept)
                                    UNION ALL
                                    (SELECT * FROM kept EXCEPT SELECT * FROM raw)) d"
    ))
}

/// Counted events not in exactly one day period and one month period of their subject.
pub fn events_not_in_one_period(db: &TestDb) -> i64 {
    db.count(&format!(
        "WITH ev AS ({COUNTED_EVENTS})
         SELECT count(*) AS n
           FROM ev CROSS JOIN (VALUES ('day'), ('month')) k (period)
          WHERE (SELECT count(*) FROM usage_periods p
                  WHERE p.user_id = ev.subject_user AND p.org_id = ev.subject_org
                    AND p.period = k.period
                    AND p.period_start <= ev.created_at AND p.period_end > ev.created_at) <> 1"
    ))
}

/// Periods whose bounds are not the natural ones in their subject's zone and billing anchor
/// (the organization's for an organization's period; UTC without a row). Holds while no
/// manual reset or change of zone or anchor cut a period short.
pub fn periods_not_natural(db: &TestDb) -> i64 {
    db.count(
        "SELECT count(*) AS n
           FROM usage_periods p
           LEFT JOIN users u ON p.org_id = 0 AND u.id = p.user_id
           LEFT JOIN organizations o ON o.id = p.org_id
          CROSS JOIN LATERAL usage_period_bounds(
                COALESCE(o.timezone, u.timezone, 'UTC'),
                COALESCE(o.billing_anchor_day, u.billing_anchor_day)::int,
                p.period, p.period_start) b
          WHERE (b.period_start, b.period_end) IS DISTINCT FROM (p.period_start, p.period_end)",
    )
}

/// Rows of `org_usage_by_member` (over all days) that differ from the raw sums of each
/// organization's events per member, either way.
pub fn member_differences(db: &TestDb) -> i64 {
    db.count(&format!(
        "WITH ev AS ({COUNTED_EVENTS}),
              raw AS (
                  SELECT org_id, user_id, count(*)::bigint AS events,
                         sum(tokens)::bigint AS tokens, sum(prompt_tokens)::bigint AS prompt_tokens,
                         sum(completion_tokens)::bigint AS completion_tokens,
                         sum(messages)::bigint AS messages, sum(bytes)::bigint AS bytes,
                         sum(cost) AS cost
                    FROM ev WHERE org_id IS NOT NULL
                   GROUP BY 1, 2),
              members AS (
                  SELECT o.org_id, m.*
                    FROM (SELECT DISTINCT org_id FROM ev WHERE org_id IS NOT NULL) o
                   CROSS JOIN LATERAL org_usage_by_member(o.org_id, '1990-01-01', '2199-12-31') m)
         SELECT count(*) AS n FROM ((SELECT * FROM raw EXCEPT SELECT * FROM members)
                                    UNION ALL
                                    (SELECT * FROM members EXCEPT SELECT * FROM raw)) d"
    ))
}

/// Organizations whose `org_usage_by_member` rows do not sum to their `org_usage_summary`.
pub fn member_summary_mismatches(db: &TestDb) -> i64 {
    const TOTALS: &str = "sum(events), sum(tokens), sum(prompt_tokens), sum(completion_tokens),
                          sum(messages), sum(bytes), sum(cost)";
    db.count(&format!(
        "SELECT count(*) AS n
           FROM (SELECT DISTINCT org_id FROM token_usage_daily WHERE org_id IS NOT NULL) o
          WHERE (SELECT ROW({TOTALS})
                   FROM org_usage_by_member(o.org_id, '1990-01-01', '2199-12-31'))
                IS DISTINCT FROM
                (SELECT ROW({TOTALS})
                   FROM org_usage_summary(o.org_id, 'year', '1990-01-01', '2199-12-31'))"
    ))
}

/// Every subject's periods hold exactly its events, each event in one period per kind, on
/// natural bounds, and each organization's member breakdown matches its events and summary.
pub fn assert_subject_books_exact(db: &TestDb) {
    assert_eq!(
        period_differences(db),
        0,
        "period totals differ from raw sums"
    );
    assert_eq!(kind_total_differences(db), 0, "per-kind totals differ");
    assert_eq!(events_not_in_one_period(db), 0, "events not in one period");
    assert_eq!(
        periods_not_natural(db),
        0,
        "periods off their natural bounds"
    );
    assert_eq!(member_differences(db), 0, "org_usage_by_member differs");
    assert_eq!(
        member_summary_mismatches(db),
        0,
        "members do not sum to the summary"
    );
}
