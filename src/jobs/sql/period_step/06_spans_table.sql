-- Period step 6, period_spans: where step 7 keeps the spans it does not place itself. A span
-- is a subject's events of one natural period (day or month), with their totals.
CREATE TEMP TABLE period_spans (
    user_id bigint, org_id bigint, period text, natural_start timestamptz,
    natural_end timestamptz, first_at timestamptz, last_at timestamptz, requests numeric,
    messages numeric, tokens numeric, bytes numeric, cost numeric, way text
) ON COMMIT DROP
