//! Teams created at run time (migration 0006); the core validates them.

use serde_json::Value;
use sqlx::Row;

use crate::error::{Context, Result};
use crate::store::Store;

/// A team stored by the API.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedTeam {
    pub name: String,
    /// Its keys as the config file would have them.
    pub config: Value,
    /// Saved by an admin while `api.teams.allowCustomAgents` was on, with
    /// agent keys of its own (the only rows allowed to have them).
    pub custom_agent: bool,
}

impl Store {
    /// Every stored team, by name.
    pub async fn saved_teams(&self) -> Result<Vec<SavedTeam>> {
        let rows = sqlx::query("SELECT name, config, custom_agent FROM teams ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .ctx("reading teams")?;
        Ok(rows
            .iter()
            .map(|r| {
                let text: String = r.get("config");
                SavedTeam {
                    name: r.get("name"),
                    config: serde_json::from_str(&text).unwrap_or(Value::Null),
                    custom_agent: r.get::<i64, _>("custom_agent") != 0,
                }
            })
            .collect())
    }

    /// Store team `name` (insert, or replace its configuration).
    pub async fn save_team(
        &self,
        name: &str,
        config: &Value,
        custom_agent: bool,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO teams (name, config, custom_agent, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET config = excluded.config, custom_agent = excluded.custom_agent,
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(config.to_string())
        .bind(i64::from(custom_agent))
        .bind(at)
        .bind(at)
        .execute(&self.pool)
        .await
        .ctx("saving a team")?;
        Ok(())
    }

    /// Forget team `name`; false if it was not stored.
    pub async fn delete_team(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM teams WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .ctx("deleting a team")?;
        Ok(done.rows_affected() == 1)
    }
}
