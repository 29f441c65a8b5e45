//! Queries whose text is put together at run time (filters, lists, many
//! rows in one INSERT), with `$1, $2, …` placeholders: the one spelling
//! SQLite and Postgres both read. (sqlx's own builder writes `?` for its
//! backend-neutral driver, which Postgres refuses.)

use sqlx::any::{Any, AnyArguments};
use sqlx::{Arguments, Encode, Type};

use crate::error::{Result, StoreError};

/// `s` as both backends store it: Postgres refuses NUL in text, so it
/// becomes U+FFFD on either (what an agent wrote, never Iris's own data).
pub(crate) fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// SQL text with its bound values.
#[derive(Default)]
pub(crate) struct Sql {
    text: String,
    args: AnyArguments,
    /// The first value that could not be bound (reported when run).
    error: Option<String>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            ..Default::default()
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// A placeholder for `value`.
    pub fn bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e.to_string());
        }
        let n = self.args.len();
        self.text.push('$');
        self.text.push_str(&n.to_string());
        self
    }

    /// `(v1, v2, …)`: one placeholder per value.
    pub fn list<'t, T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.push("(");
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v);
        }
        self.push(")")
    }

    /// `VALUES (…), (…)`: one tuple per item, its values pushed by `row`.
    pub fn values<I>(
        &mut self,
        items: impl IntoIterator<Item = I>,
        mut row: impl FnMut(&mut Row<'_>, I),
    ) {
        self.push("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push("(");
            row(
                &mut Row {
                    sql: self,
                    first: true,
                },
                item,
            );
            self.push(")");
        }
    }

    /// The query, ready to run.
    pub fn build(
        self,
        context: &'static str,
    ) -> Result<sqlx::query::Query<'static, Any, AnyArguments>> {
        if let Some(e) = self.error {
            return Err(StoreError {
                context,
                source: sqlx::Error::Encode(e.into()),
            });
        }
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(self.text), self.args))
    }

    /// The query for one value (a count, say), ready to run.
    pub fn build_scalar<O>(
        self,
        context: &'static str,
    ) -> Result<sqlx::query::QueryScalar<'static, Any, O, AnyArguments>>
    where
        (O,): for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        if let Some(e) = self.error {
            return Err(StoreError {
                context,
                source: sqlx::Error::Encode(e.into()),
            });
        }
        Ok(sqlx::query_scalar_with(
            sqlx::AssertSqlSafe(self.text),
            self.args,
        ))
    }
}

/// The values of one tuple of [`Sql::values`], separated by commas.
pub(crate) struct Row<'s> {
    sql: &'s mut Sql,
    first: bool,
}

impl Row<'_> {
    pub fn bind<'t, T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = false;
        self.sql.bind(value);
        self
    }

    /// A floating-point value, sent as text and cast by the database:
    /// Postgres keeps a statement prepared with the parameter types of its
    /// first use, and a first `NULL` typed it so that a later float's
    /// bytes were refused ("incorrect binary data format").
    pub fn bind_real(&mut self, value: Option<f64>) -> &mut Self {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = true;
        self.sql.push("CAST(");
        self.bind(value.map(|v| v.to_string()));
        self.sql.push(" AS DOUBLE PRECISION)");
        self.first = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_in_text_is_replaced() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(text("ab"), std::borrow::Cow::Borrowed("ab")));
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut q = Sql::new("SELECT x FROM t WHERE a = ");
        q.bind(1_i64).push(" AND b IN ").list(["x", "y"]);
        q.push(" ");
        q.values([(1_i64, "p"), (2, "q")], |r, (n, s)| {
            r.bind(n).bind(s);
        });
        assert_eq!(
            q.text,
            "SELECT x FROM t WHERE a = $1 AND b IN ($2, $3) VALUES ($4, $5), ($6, $7)"
        );
    }
}
