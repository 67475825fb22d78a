//! Which of our payments a Stripe id belongs to.
//!
//! Written when we create a checkout (its session and payment intent ids) and whenever a
//! processed Stripe event reveals another id (a charge), so that later events whose object
//! carries no metadata still find their payment.

use uuid::Uuid;

use crate::on_pool;
use crate::store::Database;
use crate::stripe_events::PaymentReference;

/// Records that `stripe_id` belongs to `payment_id` (first writer wins; ids never move).
pub async fn remember(
    database: &Database,
    stripe_id: &str,
    payment_id: Uuid,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO payment_refs (stripe_id, payment_id) VALUES ($1, $2) \
               ON CONFLICT (stripe_id) DO NOTHING";
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(stripe_id)
            .bind(payment_id.to_string())
            .execute(pool)
            .await
            .map(|_| ())
    })
}

/// The payment behind the first reference that resolves.
pub async fn resolve(
    database: &Database,
    references: &[PaymentReference],
) -> Result<Option<Uuid>, sqlx::Error> {
    for reference in references {
        let stripe_id = match reference {
            PaymentReference::PaymentId(id) => return Ok(Some(*id)),
            PaymentReference::CheckoutSession(id)
            | PaymentReference::PaymentIntent(id)
            | PaymentReference::Charge(id) => id,
        };
        let sql = "SELECT payment_id FROM payment_refs WHERE stripe_id = $1";
        let found: Option<String> = on_pool!(database, pool => {
            sqlx::query_scalar(sql).bind(stripe_id).fetch_optional(pool).await
        })?;
        if let Some(id) = found.and_then(|id| Uuid::parse_str(&id).ok()) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}
