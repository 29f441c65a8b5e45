//! What can go wrong with the database, with what was being done.

#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct StoreError {
    pub(crate) context: &'static str,
    #[source]
    pub(crate) source: sqlx::Error,
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub(crate) trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| StoreError { context, source })
    }
}
