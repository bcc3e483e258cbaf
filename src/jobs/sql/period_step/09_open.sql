-- Period step 9: the new periods of period_placed (`open`), inserted with their totals.
-- Returns the periods opened.
INSERT INTO usage_periods (user_id, org_id, period, period_start, period_end, requests,
                           messages, tokens, bytes, cost)
SELECT user_id, org_id, period, period_start, period_end, requests, messages, tokens, bytes, cost
  FROM period_placed
 WHERE placement = 'open'
