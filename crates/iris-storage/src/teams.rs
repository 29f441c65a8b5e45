//! Teams created at run time (migration 0006); the core validates them.

use serde_json::Value;
use sqlx::Row;

use crate::{Context, Result, Store};

impl Store {
    /// Every stored team: name and configuration, by name.
    pub async fn saved_teams(&self) -> Result<Vec<(String, Value)>> {
        let rows = sqlx::query("SELECT name, config FROM teams ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .ctx("reading teams")?;
        Ok(rows
            .iter()
            .map(|r| {
                let text: String = r.get("config");
                (
                    r.get("name"),
                    serde_json::from_str(&text).unwrap_or(Value::Null),
                )
            })
            .collect())
    }

    /// Store team `name` (insert, or replace its configuration).
    pub async fn save_team(&self, name: &str, config: &Value, at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO teams (name, config, created_at, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(config.to_string())
        .bind(at)
        .bind(at)
        .execute(&self.pool)
        .await
        .ctx("saving a team")?;
        Ok(())
    }

    /// Forget team `name`; false if it was not stored.
    pub async fn delete_team(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM teams WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await
            .ctx("deleting a team")?;
        Ok(done.rows_affected() == 1)
    }
}
