//! A connection on either backend, and the few primitives every projection needs.
//!
//! The projections crate does not know the application's pool types, so the glue in the
//! application lends it the connection of the subscriber's transaction as a [`Conn`].
//! SQL is written once, portable between PostgreSQL and SQLite (`$1`-style parameters,
//! `ON CONFLICT … DO UPDATE`, row values); parameters travel as [`Param`]s and rows come
//! back as [`Row`]s, so each statement is compiled into one code path, not one per backend.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{PgConnection, SqliteConnection};

use crate::ProjectionError;

/// A borrowed connection (usually the subscriber's open transaction) on either backend.
pub enum Conn<'a> {
    Postgres(&'a mut PgConnection),
    Sqlite(&'a mut SqliteConnection),
}

/// One bound parameter. `None` binds a typed SQL NULL.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Int(Option<i64>),
    Text(Option<String>),
    Time(Option<DateTime<Utc>>),
    Bool(Option<bool>),
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::Int(Some(value))
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Self {
        Param::Int(value)
    }
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Text(Some(value.to_owned()))
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Param::Text(Some(value))
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Self {
        Param::Text(value)
    }
}

impl From<Option<&str>> for Param {
    fn from(value: Option<&str>) -> Self {
        Param::Text(value.map(str::to_owned))
    }
}

impl From<DateTime<Utc>> for Param {
    fn from(value: DateTime<Utc>) -> Self {
        Param::Time(Some(value))
    }
}

impl From<Option<DateTime<Utc>>> for Param {
    fn from(value: Option<DateTime<Utc>>) -> Self {
        Param::Time(value)
    }
}

impl From<bool> for Param {
    fn from(value: bool) -> Self {
        Param::Bool(Some(value))
    }
}

impl From<Option<bool>> for Param {
    fn from(value: Option<bool>) -> Self {
        Param::Bool(value)
    }
}

macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Param::Int(value) => query.bind(*value),
                Param::Text(value) => query.bind(value.clone()),
                Param::Time(value) => query.bind(*value),
                Param::Bool(value) => query.bind(*value),
            };
        }
        query
    }};
}

impl Conn<'_> {
    /// Runs one statement; returns the number of rows it changed.
    pub async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, ProjectionError> {
        let affected = match self {
            Conn::Postgres(conn) => bind_all!(sqlx::query(sql), params)
                .execute(&mut **conn)
                .await?
                .rows_affected(),
            Conn::Sqlite(conn) => bind_all!(sqlx::query(sql), params)
                .execute(&mut **conn)
                .await?
                .rows_affected(),
        };
        Ok(affected)
    }

    /// Runs one query and returns every row.
    pub async fn fetch_all(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Vec<Row>, ProjectionError> {
        let rows = match self {
            Conn::Postgres(conn) => bind_all!(sqlx::query(sql), params)
                .fetch_all(&mut **conn)
                .await?
                .into_iter()
                .map(Row::Postgres)
                .collect(),
            Conn::Sqlite(conn) => bind_all!(sqlx::query(sql), params)
                .fetch_all(&mut **conn)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
        };
        Ok(rows)
    }

    /// Runs one query and returns its first row, if any.
    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Option<Row>, ProjectionError> {
        let row = match self {
            Conn::Postgres(conn) => bind_all!(sqlx::query(sql), params)
                .fetch_optional(&mut **conn)
                .await?
                .map(Row::Postgres),
            Conn::Sqlite(conn) => bind_all!(sqlx::query(sql), params)
                .fetch_optional(&mut **conn)
                .await?
                .map(Row::Sqlite),
        };
        Ok(row)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(_))
    }
}

/// A result row from either backend, read by column name.
pub enum Row {
    Postgres(PgRow),
    Sqlite(SqliteRow),
}

impl Row {
    /// Decodes one column; the type must be readable on both backends.
    pub fn get<T>(&self, column: &str) -> Result<T, ProjectionError>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>,
    {
        use sqlx::Row as _;
        let value = match self {
            Row::Postgres(row) => row.try_get(column)?,
            Row::Sqlite(row) => row.try_get(column)?,
        };
        Ok(value)
    }
}

/// Builds a `WHERE` clause of optional filters with `$n` parameters numbered in order.
#[derive(Default)]
pub struct Filters {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Filters {
    /// Adds `template` with `?` standing for the next parameter, e.g. `"status = ?"`.
    /// Several `?` in one template bind consecutive parameters from `values`.
    pub fn add(&mut self, template: &str, values: Vec<Param>) {
        let mut clause = String::new();
        let mut pieces = template.split('?');
        if let Some(first) = pieces.next() {
            clause.push_str(first);
        }
        for piece in pieces {
            self.params.push(Param::Int(None));
            clause.push_str(&format!("${}", self.params.len()));
            clause.push_str(piece);
        }
        let start = self.params.len() - values.len();
        for (slot, value) in self.params[start..].iter_mut().zip(values) {
            *slot = value;
        }
        self.clauses.push(clause);
    }

    /// `WHERE a AND b …`, or nothing.
    pub fn where_clause(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The placeholder for one more parameter after the filters' own (for `LIMIT`).
    pub fn push(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_number_their_parameters_in_order() {
        let mut filters = Filters::default();
        filters.add("status = ?", vec!["paid".into()]);
        filters.add("(a, b) < (?, ?)", vec![1_i64.into(), "x".into()]);
        let limit = filters.push(10_i64.into());
        assert_eq!(
            filters.where_clause(),
            "WHERE status = $1 AND (a, b) < ($2, $3)"
        );
        assert_eq!(limit, "$4");
        assert_eq!(filters.params().len(), 4);
        assert_eq!(filters.params()[2], Param::Text(Some("x".into())));
    }
}
