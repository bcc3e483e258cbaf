//! The daily token summary checked against the raw events it was computed from.

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
