//! `revenue`: gross, refunds and count of paid payments per 15-minute slot, door or
//! device, location and currency, with the slot's local day precomputed.
//!
//! Rules (the README repeats them):
//! - A payment counts as gross, once, when Stripe reports its success
//!   (`PaymentSucceeded`, `amount_received`), dated by Stripe's event time — the instant
//!   the money moved, which is also the payment's `succeeded_at`.
//! - A refund reduces net when Stripe reports it (`RefundRecorded`), by
//!   `refunded_increase` (the delta, never the cumulative total), dated the same way —
//!   so a refund lands on its own day, not on the day of the payment.
//! - Money a dispute takes back reduces net when Stripe reports it withdrawn
//!   (`DisputeFundsWithdrawn`: `funds_withdrawn`, or a dispute closed `lost`), and comes
//!   back when reinstated (`DisputeFundsReinstated`: `funds_reinstated`, or closed `won`),
//!   each dated by its Stripe event: `net = gross - refunds - disputes`.
//! - Amounts are never converted: each row has one currency and reports keep currencies
//!   apart.
//! - The local day is computed here, in the time zone the door or device had at this
//!   point of the journal (UTC if it is unknown). Slots of 15 minutes in UTC also let a
//!   report re-bucket in another zone (`tz=`) exactly: every zone's offset is a multiple
//!   of 15 minutes.
//!
//! To do that without reading other projections' tables (each projection is rebuilt on
//! its own), the fold keeps two helper tables: `revenue_targets` (zone and location of
//! each door and device) and `revenue_payments` (what each payment bought).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use latchkey_aggregates::device::DeviceEvent;
use latchkey_aggregates::door::DoorEvent;
use latchkey_aggregates::payment::{PaymentEvent, PaymentTarget};
use serde::Serialize;

use crate::db::{Conn, Param};
use crate::{zone, EventRecord, Projection, ProjectionError, Table};

pub struct RevenueProjection;

const TABLES: &[Table] = &[
    Table {
        name: "revenue",
        key: &["slot_start", "target_kind", "target_uid", "currency"],
    },
    Table {
        name: "revenue_daily",
        key: &[
            "local_day",
            "target_kind",
            "target_uid",
            "location",
            "time_zone",
            "currency",
        ],
    },
    Table {
        name: "revenue_targets",
        key: &["target_kind", "target_uid"],
    },
    Table {
        name: "revenue_payments",
        key: &["payment_id"],
    },
];

/// Width of a slot. Every time zone in use today is offset from UTC by a multiple of it.
const SLOT_MINUTES: u32 = 15;

const UPSERT_TARGET: &str = "INSERT INTO revenue_targets (target_kind, target_uid, location, \
     time_zone) VALUES ($1, $2, $3, $4) ON CONFLICT (target_kind, target_uid) DO UPDATE \
     SET location = excluded.location, time_zone = excluded.time_zone";

const INSERT_PAYMENT: &str = "INSERT INTO revenue_payments (payment_id, target_kind, target_uid) \
     VALUES ($1, $2, $3) ON CONFLICT (payment_id) DO NOTHING";

const TARGET_OF_PAYMENT: &str = "SELECT p.target_kind, p.target_uid, t.location, t.time_zone \
     FROM revenue_payments p LEFT JOIN revenue_targets t \
     ON t.target_kind = p.target_kind AND t.target_uid = p.target_uid WHERE p.payment_id = $1";

const ADD: &str = "INSERT INTO revenue (slot_start, local_day, target_kind, target_uid, location, \
     time_zone, currency, gross, refunds, disputes, count) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (slot_start, target_kind, target_uid, location, time_zone, currency) \
     DO UPDATE SET gross = revenue.gross + excluded.gross, \
     refunds = revenue.refunds + excluded.refunds, \
     disputes = revenue.disputes + excluded.disputes, count = revenue.count + excluded.count";

/// The same sums per local day: what reports in the targets' own zones read (a 90-day
/// report reads one row per day and target instead of up to 96 slots).
const ADD_DAILY: &str = "INSERT INTO revenue_daily (local_day, target_kind, target_uid, \
     location, time_zone, currency, gross, refunds, disputes, count) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (local_day, target_kind, target_uid, location, time_zone, currency) \
     DO UPDATE SET gross = revenue_daily.gross + excluded.gross, \
     refunds = revenue_daily.refunds + excluded.refunds, \
     disputes = revenue_daily.disputes + excluded.disputes, \
     count = revenue_daily.count + excluded.count";

/// One money fact to add to a slot.
#[derive(Default)]
struct Amounts {
    currency: String,
    gross: i64,
    refunds: i64,
    /// Withdrawn by a dispute (negative when reinstated).
    disputes: i64,
    count: i64,
}

#[async_trait]
impl Projection for RevenueProjection {
    fn name(&self) -> &'static str {
        "revenue"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        event: &EventRecord<'_>,
    ) -> Result<(), ProjectionError> {
        let id = event.aggregate_id;
        match event.aggregate_type {
            "Door" => match event.decode::<DoorEvent>()? {
                DoorEvent::DoorRegistered {
                    location,
                    time_zone,
                    ..
                }
                | DoorEvent::DoorDetailsChanged {
                    location,
                    time_zone,
                    ..
                } => {
                    let params = ["door".into(), id.into(), location.into(), time_zone.into()];
                    conn.execute(UPSERT_TARGET, &params).await?;
                }
                _ => {}
            },
            "Device" => match event.decode::<DeviceEvent>()? {
                DeviceEvent::DeviceRegistered {
                    location,
                    time_zone,
                    ..
                }
                | DeviceEvent::DeviceDetailsChanged {
                    location,
                    time_zone,
                    ..
                } => {
                    let params = [
                        "device".into(),
                        id.into(),
                        location.into(),
                        time_zone.into(),
                    ];
                    conn.execute(UPSERT_TARGET, &params).await?;
                }
                _ => {}
            },
            "Payment" => apply_payment(conn, id, event.decode::<PaymentEvent>()?).await?,
            _ => {}
        }
        Ok(())
    }
}

async fn apply_payment(
    conn: &mut Conn<'_>,
    payment_id: &str,
    event: PaymentEvent,
) -> Result<(), ProjectionError> {
    match event {
        PaymentEvent::CheckoutStarted { target, .. } => {
            let (kind, uid) = match target {
                PaymentTarget::Door { door_uid } => ("door", door_uid),
                PaymentTarget::Device { device_uid, .. } => ("device", device_uid),
            };
            let params = [payment_id.into(), kind.into(), uid.into()];
            conn.execute(INSERT_PAYMENT, &params).await?;
        }
        PaymentEvent::PaymentSucceeded {
            amount_received,
            stripe_event,
            ..
        } => {
            let amounts = Amounts {
                currency: amount_received.currency.to_string(),
                gross: amount_received.amount_minor,
                count: 1,
                ..Amounts::default()
            };
            add(conn, payment_id, stripe_event.created, amounts).await?;
        }
        PaymentEvent::RefundRecorded {
            refunded_increase,
            stripe_event,
            ..
        } => {
            let amounts = Amounts {
                currency: refunded_increase.currency.to_string(),
                refunds: refunded_increase.amount_minor,
                ..Amounts::default()
            };
            add(conn, payment_id, stripe_event.created, amounts).await?;
        }
        PaymentEvent::DisputeFundsWithdrawn {
            amount,
            stripe_event,
            ..
        } => {
            let amounts = Amounts {
                currency: amount.currency.to_string(),
                disputes: amount.amount_minor,
                ..Amounts::default()
            };
            add(conn, payment_id, stripe_event.created, amounts).await?;
        }
        PaymentEvent::DisputeFundsReinstated {
            amount,
            stripe_event,
            ..
        } => {
            let amounts = Amounts {
                currency: amount.currency.to_string(),
                disputes: -amount.amount_minor,
                ..Amounts::default()
            };
            add(conn, payment_id, stripe_event.created, amounts).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn add(
    conn: &mut Conn<'_>,
    payment_id: &str,
    at: DateTime<Utc>,
    amounts: Amounts,
) -> Result<(), ProjectionError> {
    let Some(row) = conn
        .fetch_optional(TARGET_OF_PAYMENT, &[payment_id.into()])
        .await?
    else {
        // Every payment event follows its CheckoutStarted; nothing to attribute otherwise.
        return Ok(());
    };
    let kind: String = row.get("target_kind")?;
    let uid: String = row.get("target_uid")?;
    let location: Option<String> = row.get("location")?;
    let time_zone: Option<String> = row.get("time_zone")?;
    let time_zone = time_zone.unwrap_or_else(|| "UTC".to_owned());
    let params: [Param; 11] = [
        slot_start(at).into(),
        local_day(at, &time_zone).to_string().into(),
        kind.into(),
        uid.into(),
        location.unwrap_or_default().into(),
        time_zone.into(),
        amounts.currency.into(),
        amounts.gross.into(),
        amounts.refunds.into(),
        amounts.disputes.into(),
        amounts.count.into(),
    ];
    conn.execute(ADD, &params).await?;
    // The slot's local day, target, location, zone, currency and amounts, without the slot.
    conn.execute(ADD_DAILY, &params[1..]).await?;
    Ok(())
}

/// The start of the 15-minute UTC slot holding `at`.
pub fn slot_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let minute = at.minute() - at.minute() % SLOT_MINUTES;
    Utc.with_ymd_and_hms(at.year(), at.month(), at.day(), at.hour(), minute, 0)
        .single()
        .unwrap_or(at)
}

/// The calendar day of `at` in the named zone (UTC if unknown).
pub fn local_day(at: DateTime<Utc>, time_zone: &str) -> NaiveDate {
    at.with_timezone(&zone(time_zone)).date_naive()
}

/// How a revenue report groups its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    /// ISO weeks, Monday first, labelled `2026-W48`.
    Week,
    /// Labelled `2026-11`.
    Month,
    /// Door payments only, by door uid.
    Door,
    /// Device payments only, by device uid.
    Device,
    Location,
}

impl GroupBy {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "day" => GroupBy::Day,
            "week" => GroupBy::Week,
            "month" => GroupBy::Month,
            "door" => GroupBy::Door,
            "device" => GroupBy::Device,
            "location" => GroupBy::Location,
            _ => return None,
        })
    }
}

/// `GET /api/reports/revenue`: local days `from..=to`, in each target's own zone, or all
/// in `tz` when given.
#[derive(Clone, Debug)]
pub struct ReportQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub group_by: GroupBy,
    pub tz: Option<chrono_tz::Tz>,
}

/// One line of a report. `net = gross - refunds - disputes`; `count` is the payments that
/// succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReportRow {
    pub bucket: String,
    pub gross: i64,
    pub refunds: i64,
    /// Taken back by disputes (withdrawn minus reinstated).
    pub disputes: i64,
    pub net: i64,
    pub count: i64,
    pub currency: String,
}

/// Sums per (day, target, location, currency) read from the table.
struct DayTotals {
    day: NaiveDate,
    kind: String,
    uid: String,
    location: String,
    currency: String,
    gross: i64,
    refunds: i64,
    disputes: i64,
    count: i64,
}

const SUMS: &str = "target_kind, target_uid, location, currency, \
     CAST(SUM(gross) AS BIGINT) AS gross, CAST(SUM(refunds) AS BIGINT) AS refunds, \
     CAST(SUM(disputes) AS BIGINT) AS disputes, CAST(SUM(count) AS BIGINT) AS count";

/// The report's rows, sorted by bucket then currency.
pub async fn report(
    conn: &mut Conn<'_>,
    query: &ReportQuery,
) -> Result<Vec<ReportRow>, ProjectionError> {
    let totals = match query.tz {
        None => totals_by_local_day(conn, query).await?,
        Some(tz) => totals_in_zone(conn, query, tz).await?,
    };
    let mut buckets: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for total in totals {
        let bucket = match query.group_by {
            GroupBy::Day => total.day.to_string(),
            GroupBy::Week => total.day.format("%G-W%V").to_string(),
            GroupBy::Month => total.day.format("%Y-%m").to_string(),
            GroupBy::Door | GroupBy::Device => {
                let wanted = if query.group_by == GroupBy::Door {
                    "door"
                } else {
                    "device"
                };
                if total.kind != wanted {
                    continue;
                }
                total.uid
            }
            GroupBy::Location => total.location,
        };
        let sums = buckets.entry((bucket, total.currency)).or_default();
        sums.gross += total.gross;
        sums.refunds += total.refunds;
        sums.disputes += total.disputes;
        sums.count += total.count;
    }
    Ok(buckets
        .into_iter()
        .map(|((bucket, currency), sums)| ReportRow {
            bucket,
            gross: sums.gross,
            refunds: sums.refunds,
            disputes: sums.disputes,
            net: sums.gross - sums.refunds - sums.disputes,
            count: sums.count,
            currency,
        })
        .collect())
}

async fn totals_by_local_day(
    conn: &mut Conn<'_>,
    query: &ReportQuery,
) -> Result<Vec<DayTotals>, ProjectionError> {
    let sql = format!(
        "SELECT local_day, {SUMS} FROM revenue_daily WHERE local_day >= $1 AND local_day <= $2 \
         GROUP BY local_day, target_kind, target_uid, location, currency"
    );
    let params = [query.from.to_string().into(), query.to.to_string().into()];
    let rows = conn.fetch_all(&sql, &params).await?;
    rows.iter()
        .map(|row| {
            let day: String = row.get("local_day")?;
            Ok(DayTotals {
                day: day.parse().unwrap_or(query.from),
                kind: row.get("target_kind")?,
                uid: row.get("target_uid")?,
                location: row.get("location")?,
                currency: row.get("currency")?,
                gross: row.get("gross")?,
                refunds: row.get("refunds")?,
                disputes: row.get("disputes")?,
                count: row.get("count")?,
            })
        })
        .collect()
}

async fn totals_in_zone(
    conn: &mut Conn<'_>,
    query: &ReportQuery,
    tz: chrono_tz::Tz,
) -> Result<Vec<DayTotals>, ProjectionError> {
    let start = start_of_day(query.from, tz);
    let end = start_of_day(query.to + Duration::days(1), tz);
    let sql = format!(
        "SELECT slot_start, {SUMS} FROM revenue WHERE slot_start >= $1 AND slot_start < $2 \
         GROUP BY slot_start, target_kind, target_uid, location, currency"
    );
    let rows = conn.fetch_all(&sql, &[start.into(), end.into()]).await?;
    rows.iter()
        .map(|row| {
            let slot: DateTime<Utc> = row.get("slot_start")?;
            Ok(DayTotals {
                day: slot.with_timezone(&tz).date_naive(),
                kind: row.get("target_kind")?,
                uid: row.get("target_uid")?,
                location: row.get("location")?,
                currency: row.get("currency")?,
                gross: row.get("gross")?,
                refunds: row.get("refunds")?,
                disputes: row.get("disputes")?,
                count: row.get("count")?,
            })
        })
        .collect()
}

/// The first instant of `day` in `tz` (the earliest, if a DST change makes it ambiguous;
/// the first valid hour if a DST jump skips midnight).
fn start_of_day(day: NaiveDate, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..=2)
        .find_map(|hours| {
            tz.from_local_datetime(&(midnight + Duration::hours(hours)))
                .earliest()
        })
        .map(|local| local.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// Sums of one report bucket.
#[derive(Default)]
struct Sums {
    gross: i64,
    refunds: i64,
    disputes: i64,
    count: i64,
}

/// Gross, refunds, disputes and count of one currency since an instant (the dashboard's
/// "today").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CurrencyTotals {
    pub currency: String,
    pub gross: i64,
    pub refunds: i64,
    pub disputes: i64,
    pub net: i64,
    pub count: i64,
}

/// Sums per currency of the slots starting at or after `since` (a slot boundary, such as
/// a midnight, counts whole), read through the table's key on `slot_start`.
pub async fn totals_since(
    conn: &mut Conn<'_>,
    since: DateTime<Utc>,
) -> Result<Vec<CurrencyTotals>, ProjectionError> {
    let sql = "SELECT currency, CAST(SUM(gross) AS BIGINT) AS gross, \
               CAST(SUM(refunds) AS BIGINT) AS refunds, \
               CAST(SUM(disputes) AS BIGINT) AS disputes, CAST(SUM(count) AS BIGINT) AS count \
               FROM revenue WHERE slot_start >= $1 GROUP BY currency ORDER BY currency";
    let rows = conn.fetch_all(sql, &[since.into()]).await?;
    rows.iter()
        .map(|row| {
            let gross: i64 = row.get("gross")?;
            let refunds: i64 = row.get("refunds")?;
            let disputes: i64 = row.get("disputes")?;
            Ok(CurrencyTotals {
                currency: row.get("currency")?,
                gross,
                refunds,
                disputes,
                net: gross - refunds - disputes,
                count: row.get("count")?,
            })
        })
        .collect()
}

/// One row of the `revenue` table, for tests and diffs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RevenueRow {
    pub slot_start: DateTime<Utc>,
    pub local_day: String,
    pub target_kind: String,
    pub target_uid: String,
    pub location: String,
    pub time_zone: String,
    pub currency: String,
    pub gross: i64,
    pub refunds: i64,
    pub disputes: i64,
    pub count: i64,
}

pub async fn all(conn: &mut Conn<'_>) -> Result<Vec<RevenueRow>, ProjectionError> {
    let sql = "SELECT slot_start, local_day, target_kind, target_uid, location, time_zone, \
               currency, gross, refunds, disputes, count FROM revenue";
    let rows = conn.fetch_all(sql, &[]).await?;
    let mut out = rows
        .iter()
        .map(|row| {
            Ok(RevenueRow {
                slot_start: row.get("slot_start")?,
                local_day: row.get("local_day")?,
                target_kind: row.get("target_kind")?,
                target_uid: row.get("target_uid")?,
                location: row.get("location")?,
                time_zone: row.get("time_zone")?,
                currency: row.get("currency")?,
                gross: row.get("gross")?,
                refunds: row.get("refunds")?,
                disputes: row.get("disputes")?,
                count: row.get("count")?,
            })
        })
        .collect::<Result<Vec<_>, ProjectionError>>()?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_quarter_hours_and_days_are_local() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 23, 44, 59).unwrap();
        assert_eq!(
            slot_start(at),
            Utc.with_ymd_and_hms(2026, 11, 23, 23, 30, 0).unwrap()
        );
        // 23:44 UTC is 00:44 the next day in Paris (UTC+1 in November).
        assert_eq!(local_day(at, "Europe/Paris").to_string(), "2026-11-24");
        assert_eq!(local_day(at, "not a zone").to_string(), "2026-11-23");
    }

    #[test]
    fn a_local_day_starts_at_local_midnight() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        assert_eq!(
            start_of_day(day, chrono_tz::Europe::Paris),
            Utc.with_ymd_and_hms(2026, 11, 23, 23, 0, 0).unwrap()
        );
    }
}
