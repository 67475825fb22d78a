//! `catalogue_doors` and `catalogue_devices`: what operators list and guest pages show —
//! status, price, access minutes, time zone, Shelly ids, plans — and, for devices, which
//! session holds the relay and how many wait.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use latchkey_aggregates::device::{DeviceEvent, UsagePlan};
use latchkey_aggregates::door::DoorEvent;
use serde::Serialize;
use serde_json::{json, Value};

use crate::db::{Conn, Row};
use crate::{EventRecord, Projection, ProjectionError, Table};

pub struct CatalogueProjection;

const TABLES: &[Table] = &[
    Table {
        name: "catalogue_doors",
        key: &["door_uid"],
    },
    Table {
        name: "catalogue_devices",
        key: &["device_uid"],
    },
];

#[async_trait]
impl Projection for CatalogueProjection {
    fn name(&self) -> &'static str {
        "catalogue"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        event: &EventRecord<'_>,
    ) -> Result<(), ProjectionError> {
        match event.aggregate_type {
            "Door" => apply_door(conn, event.aggregate_id, event.decode()?).await,
            "Device" => apply_device(conn, event.aggregate_id, event.decode()?).await,
            _ => Ok(()),
        }
    }
}

async fn apply_door(
    conn: &mut Conn<'_>,
    uid: &str,
    event: DoorEvent,
) -> Result<(), ProjectionError> {
    let update = |set: &str| format!("UPDATE catalogue_doors SET {set} WHERE door_uid = $1");
    match event {
        DoorEvent::DoorRegistered {
            lock_id,
            name,
            location,
            time_zone,
            price,
            access_minutes,
            at,
            ..
        } => {
            let sql = "INSERT INTO catalogue_doors (door_uid, lock_id, name, location, time_zone, \
                       price, currency, access_minutes, status, codes_issued, registered_at, \
                       updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', 0, $9, $9) \
                       ON CONFLICT (door_uid) DO NOTHING";
            let params = [
                uid.into(),
                lock_id.into(),
                name.into(),
                location.into(),
                time_zone.into(),
                price.amount_minor.into(),
                price.currency.to_string().into(),
                i64::from(access_minutes).into(),
                at.into(),
            ];
            conn.execute(sql, &params).await?;
        }
        DoorEvent::DoorDetailsChanged {
            name,
            location,
            time_zone,
            access_minutes,
            at,
            ..
        } => {
            let sql = update(
                "name = $2, location = $3, time_zone = $4, access_minutes = $5, updated_at = $6",
            );
            let params = [
                uid.into(),
                name.into(),
                location.into(),
                time_zone.into(),
                i64::from(access_minutes).into(),
                at.into(),
            ];
            conn.execute(&sql, &params).await?;
        }
        DoorEvent::DoorPriceChanged { price, at, .. } => {
            let sql = update("price = $2, currency = $3, updated_at = $4");
            let params = [
                uid.into(),
                price.amount_minor.into(),
                price.currency.to_string().into(),
                at.into(),
            ];
            conn.execute(&sql, &params).await?;
        }
        DoorEvent::DoorMaintenanceStarted { reason, at, .. } => {
            let sql = update("status = 'maintenance', status_reason = $2, updated_at = $3");
            conn.execute(&sql, &[uid.into(), reason.into(), at.into()])
                .await?;
        }
        DoorEvent::DoorMaintenanceEnded { reason, at, .. } => {
            let sql = update("status = 'active', status_reason = $2, updated_at = $3");
            conn.execute(&sql, &[uid.into(), reason.into(), at.into()])
                .await?;
        }
        DoorEvent::DoorOfflineFallbackChanged { enabled, at, .. } => {
            let sql = update("offline_fallback = $2, updated_at = $3");
            conn.execute(&sql, &[uid.into(), enabled.into(), at.into()])
                .await?;
        }
        DoorEvent::PassageModeObserved { enabled, at } => {
            let sql = update("passage_mode = $2, updated_at = $3");
            conn.execute(&sql, &[uid.into(), enabled.into(), at.into()])
                .await?;
        }
        DoorEvent::AccessCodeIssued { .. } => {
            let sql = update("codes_issued = codes_issued + 1");
            conn.execute(&sql, &[uid.into()]).await?;
        }
        DoorEvent::AccessCodeRequested { .. }
        | DoorEvent::AccessCodeIssueFailed { .. }
        | DoorEvent::AccessCodeRevoked { .. }
        | DoorEvent::AccessCodeRevocationPending { .. }
        | DoorEvent::AccessCodeExpired { .. }
        | DoorEvent::AccessCompensationDecided { .. }
        | DoorEvent::AccessCodeReissueRequested { .. }
        | DoorEvent::StrayPasscodesRemoved { .. } => {}
    }
    Ok(())
}

/// Plans as API.md spells them: `{plan_id, name, minutes, price, currency}`.
pub fn plans_json(plans: &[UsagePlan]) -> Value {
    Value::Array(
        plans
            .iter()
            .map(|plan| {
                json!({
                    "plan_id": plan.plan_id,
                    "name": plan.name,
                    "minutes": plan.minutes,
                    "price": plan.price.amount_minor,
                    "currency": plan.price.currency.as_str(),
                })
            })
            .collect(),
    )
}

async fn apply_device(
    conn: &mut Conn<'_>,
    uid: &str,
    event: DeviceEvent,
) -> Result<(), ProjectionError> {
    let update = |set: &str| format!("UPDATE catalogue_devices SET {set} WHERE device_uid = $1");
    match event {
        DeviceEvent::DeviceRegistered {
            name,
            location,
            time_zone,
            shelly_device_id,
            shelly_channel,
            plans,
            at,
            ..
        } => {
            let sql = "INSERT INTO catalogue_devices (device_uid, name, location, time_zone, \
                       shelly_device_id, shelly_channel, plans, status, queue_length, \
                       registered_at, updated_at) \
                       VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', 0, $8, $8) \
                       ON CONFLICT (device_uid) DO NOTHING";
            let params = [
                uid.into(),
                name.into(),
                location.into(),
                time_zone.into(),
                shelly_device_id.into(),
                i64::from(shelly_channel).into(),
                plans_json(&plans).to_string().into(),
                at.into(),
            ];
            conn.execute(sql, &params).await?;
        }
        DeviceEvent::DeviceDetailsChanged {
            name,
            location,
            time_zone,
            shelly_device_id,
            shelly_channel,
            at,
            ..
        } => {
            let sql = update(
                "name = $2, location = $3, time_zone = $4, shelly_device_id = $5, \
                 shelly_channel = $6, updated_at = $7",
            );
            let params = [
                uid.into(),
                name.into(),
                location.into(),
                time_zone.into(),
                shelly_device_id.into(),
                i64::from(shelly_channel).into(),
                at.into(),
            ];
            conn.execute(&sql, &params).await?;
        }
        DeviceEvent::DevicePlansChanged { plans, at, .. } => {
            let sql = update("plans = $2, updated_at = $3");
            let params = [uid.into(), plans_json(&plans).to_string().into(), at.into()];
            conn.execute(&sql, &params).await?;
        }
        DeviceEvent::DeviceMaintenanceStarted { reason, at, .. } => {
            let sql = update("status = 'maintenance', status_reason = $2, updated_at = $3");
            conn.execute(&sql, &[uid.into(), reason.into(), at.into()])
                .await?;
        }
        DeviceEvent::DeviceMaintenanceEnded { reason, at, .. } => {
            let sql = update("status = 'active', status_reason = $2, updated_at = $3");
            conn.execute(&sql, &[uid.into(), reason.into(), at.into()])
                .await?;
        }
        DeviceEvent::DeviceReserved {
            session_id,
            from_queue,
            at,
            ..
        } => {
            let dequeued = i64::from(from_queue);
            let sql =
                update("holder_session_id = $2, queue_length = queue_length - $3, updated_at = $4");
            let params = [
                uid.into(),
                session_id.to_string().into(),
                dequeued.into(),
                at.into(),
            ];
            conn.execute(&sql, &params).await?;
        }
        DeviceEvent::DeviceReservationQueued { at, .. } => {
            let sql = update("queue_length = queue_length + 1, updated_at = $2");
            conn.execute(&sql, &[uid.into(), at.into()]).await?;
        }
        DeviceEvent::DeviceReleased { session_id, at } => {
            let sql = update(
                "holder_session_id = CASE WHEN holder_session_id = $2 THEN NULL \
                 ELSE holder_session_id END, updated_at = $3",
            );
            let params = [uid.into(), session_id.to_string().into(), at.into()];
            conn.execute(&sql, &params).await?;
        }
        DeviceEvent::QueuedSessionWithdrawn { at, .. } => {
            let sql = update("queue_length = queue_length - 1, updated_at = $2");
            conn.execute(&sql, &[uid.into(), at.into()]).await?;
        }
        DeviceEvent::RelaySwitched { is_on, at, .. } => {
            let sql = update("relay_on = $2, updated_at = $3");
            conn.execute(&sql, &[uid.into(), is_on.into(), at.into()])
                .await?;
        }
    }
    Ok(())
}

/// One door as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DoorRow {
    pub door_uid: String,
    pub lock_id: i64,
    pub name: String,
    pub location: String,
    pub time_zone: String,
    pub price: i64,
    pub currency: String,
    pub access_minutes: i64,
    pub status: String,
    pub status_reason: Option<String>,
    pub passage_mode: Option<bool>,
    /// A period code when the lock's gateway is offline (see `DoorOfflineFallbackChanged`).
    pub offline_fallback: bool,
    pub codes_issued: i64,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One device as operators see it; `plans` is API.md's plan list.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceRow {
    pub device_uid: String,
    pub name: String,
    pub location: String,
    pub time_zone: String,
    pub shelly_device_id: String,
    pub shelly_channel: i64,
    pub plans: Value,
    pub status: String,
    pub status_reason: Option<String>,
    pub holder_session_id: Option<String>,
    pub queue_length: i64,
    pub relay_on: Option<bool>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const DOOR_COLUMNS: &str = "door_uid, lock_id, name, location, time_zone, price, currency, \
     access_minutes, status, status_reason, passage_mode, offline_fallback, codes_issued, \
     registered_at, updated_at";

const DEVICE_COLUMNS: &str = "device_uid, name, location, time_zone, shelly_device_id, \
     shelly_channel, plans, status, status_reason, holder_session_id, queue_length, relay_on, \
     registered_at, updated_at";

impl DoorRow {
    fn from_row(row: &Row) -> Result<Self, ProjectionError> {
        Ok(DoorRow {
            door_uid: row.get("door_uid")?,
            lock_id: row.get("lock_id")?,
            name: row.get("name")?,
            location: row.get("location")?,
            time_zone: row.get("time_zone")?,
            price: row.get("price")?,
            currency: row.get("currency")?,
            access_minutes: row.get("access_minutes")?,
            status: row.get("status")?,
            status_reason: row.get("status_reason")?,
            passage_mode: row.get("passage_mode")?,
            offline_fallback: row.get("offline_fallback")?,
            codes_issued: row.get("codes_issued")?,
            registered_at: row.get("registered_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

impl DeviceRow {
    fn from_row(row: &Row) -> Result<Self, ProjectionError> {
        let plans: String = row.get("plans")?;
        Ok(DeviceRow {
            device_uid: row.get("device_uid")?,
            name: row.get("name")?,
            location: row.get("location")?,
            time_zone: row.get("time_zone")?,
            shelly_device_id: row.get("shelly_device_id")?,
            shelly_channel: row.get("shelly_channel")?,
            plans: serde_json::from_str(&plans).unwrap_or(Value::Array(Vec::new())),
            status: row.get("status")?,
            status_reason: row.get("status_reason")?,
            holder_session_id: row.get("holder_session_id")?,
            queue_length: row.get("queue_length")?,
            relay_on: row.get("relay_on")?,
            registered_at: row.get("registered_at")?,
            updated_at: row.get("updated_at")?,
        })
    }
}

/// Every door, by uid.
pub async fn doors(conn: &mut Conn<'_>) -> Result<Vec<DoorRow>, ProjectionError> {
    let sql = format!("SELECT {DOOR_COLUMNS} FROM catalogue_doors ORDER BY door_uid");
    let rows = conn.fetch_all(&sql, &[]).await?;
    rows.iter().map(DoorRow::from_row).collect()
}

/// Every device, by uid.
pub async fn devices(conn: &mut Conn<'_>) -> Result<Vec<DeviceRow>, ProjectionError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM catalogue_devices ORDER BY device_uid");
    let rows = conn.fetch_all(&sql, &[]).await?;
    rows.iter().map(DeviceRow::from_row).collect()
}

/// One door by uid.
pub async fn door(conn: &mut Conn<'_>, uid: &str) -> Result<Option<DoorRow>, ProjectionError> {
    let sql = format!("SELECT {DOOR_COLUMNS} FROM catalogue_doors WHERE door_uid = $1");
    let row = conn.fetch_optional(&sql, &[uid.into()]).await?;
    row.as_ref().map(DoorRow::from_row).transpose()
}

/// One device by uid.
pub async fn device(conn: &mut Conn<'_>, uid: &str) -> Result<Option<DeviceRow>, ProjectionError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM catalogue_devices WHERE device_uid = $1");
    let row = conn.fetch_optional(&sql, &[uid.into()]).await?;
    row.as_ref().map(DeviceRow::from_row).transpose()
}
