-- Period step 3, period_natural: the natural day and month of each (zone, anchor, local day)
-- of period_zone_days: the bounds usage_period_bounds gives for the day's first instant,
-- composed of the same two parts (usage_period_dates, usage_local_midnight), each run once
-- per (anchor, day) and per (zone, date) rather than per row.
-- Columns: zone, anchor, day, day_start, day_end, month_start, month_end.
CREATE TEMP TABLE period_natural ON COMMIT DROP AS
WITH months AS (
    SELECT a.anchor, a.day, m.start_date, m.end_date
      FROM (SELECT DISTINCT anchor, day FROM period_zone_days) a
     CROSS JOIN LATERAL usage_period_dates(a.day, a.anchor, 'month') m
), bounds AS (
    SELECT z.zone, z.anchor, z.day, m.start_date, m.end_date
      FROM period_zone_days z
      JOIN months m ON m.anchor = z.anchor AND m.day = z.day
), midnights AS (
    SELECT x.zone, x.day, usage_local_midnight(x.day, x.zone) AS at
      FROM (SELECT zone, day FROM bounds UNION SELECT zone, day + 1 FROM bounds
            UNION SELECT zone, start_date FROM bounds
            UNION SELECT zone, end_date FROM bounds) x
)
SELECT b.zone, b.anchor, b.day, ds.at AS day_start, de.at AS day_end,
       ms.at AS month_start, me.at AS month_end
  FROM bounds b
  JOIN midnights ds ON ds.zone = b.zone AND ds.day = b.day
  JOIN midnights de ON de.zone = b.zone AND de.day = b.day + 1
  JOIN midnights ms ON ms.zone = b.zone AND ms.day = b.start_date
  JOIN midnights me ON me.zone = b.zone AND me.day = b.end_date
