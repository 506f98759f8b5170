//! Where a provider's records come from: a CSV file or a PostgreSQL table.
//!
//! Both have an identifier column and, optionally, a claims column holding claim names
//! separated by `;` (or `,` / white space). Claims given on the command line apply to every
//! record (e.g. every row of a fraud list is `fraud_listed`).

use std::collections::BTreeSet;
use std::path::Path;

use crate::set::SourceRecord;

/// Which columns to read.
#[derive(Debug, Clone)]
pub struct Columns {
    /// Identifier column.
    pub identifier: String,
    /// Claims column, if any.
    pub claims: Option<String>,
    /// Claims every record has.
    pub fixed_claims: Vec<String>,
    /// Attribute columns (named like their attributes).
    pub attributes: Vec<String>,
}

/// Why a source cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The CSV file is unreadable or malformed.
    #[error("{path}: {message}")]
    Csv {
        /// File.
        path: String,
        /// What.
        message: String,
    },
    /// PostgreSQL refused or failed.
    #[error("postgres: {0}")]
    Postgres(String),
    /// A column or table name is unusable.
    #[error("{0}")]
    Spec(String),
}

fn claims_of(columns: &Columns, cell: Option<&str>) -> BTreeSet<String> {
    let mut claims: BTreeSet<String> = columns.fixed_claims.iter().cloned().collect();
    if let Some(cell) = cell {
        claims.extend(
            cell.split([';', ',', ' ', '\t'])
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        );
    }
    claims
}

/// Reads every record of a CSV file with a header row.
pub fn read_csv(path: &Path, columns: &Columns) -> Result<Vec<SourceRecord>, SourceError> {
    let fail = |message: String| SourceError::Csv {
        path: path.display().to_string(),
        message,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| fail(e.to_string()))?;
    let headers = reader.headers().map_err(|e| fail(e.to_string()))?.clone();
    let index = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                fail(format!(
                    "no column `{name}` (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })
    };
    let id = index(&columns.identifier)?;
    let claims = columns.claims.as_deref().map(index).transpose()?;
    let attributes = columns
        .attributes
        .iter()
        .map(|name| Ok((name.clone(), index(name)?)))
        .collect::<Result<Vec<_>, SourceError>>()?;
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| fail(e.to_string()))?;
        let line = row.position().map_or(0, |p| p.line());
        records.push(SourceRecord {
            line,
            identifier: row.get(id).unwrap_or_default().to_owned(),
            claims: claims_of(columns, claims.and_then(|c| row.get(c))),
            attributes: attributes
                .iter()
                .map(|(name, i)| (name.clone(), row.get(*i).unwrap_or_default().to_owned()))
                .collect(),
        });
    }
    Ok(records)
}

/// `name` or `schema.name`, each an unquoted SQL identifier; anything else is refused rather
/// than quoted, so no input reaches the query text unchecked.
fn sql_name(name: &str, what: &str) -> Result<String, SourceError> {
    let ok = |part: &str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if name.split('.').count() <= 2 && name.split('.').all(ok) {
        Ok(name
            .split('.')
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join("."))
    } else {
        Err(SourceError::Spec(format!(
            "{what} `{name}` must be letters, digits and `_` (optionally schema.name)"
        )))
    }
}

/// Reads every row of a PostgreSQL table (`--table`) over a `postgres://` URL.
pub fn read_postgres(
    url: &str,
    table: &str,
    columns: &Columns,
) -> Result<Vec<SourceRecord>, SourceError> {
    let table = sql_name(table, "table")?;
    let id = sql_name(&columns.identifier, "identifier column")?;
    let claims = match &columns.claims {
        Some(c) => format!("{}::text", sql_name(c, "claims column")?),
        None => "NULL::text".to_owned(),
    };
    let mut attributes = String::new();
    for name in &columns.attributes {
        attributes += &format!(", {}::text", sql_name(name, "attribute column")?);
    }
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| SourceError::Postgres(format!("connecting: {e}")))?;
    let rows = client
        .query(
            &format!("SELECT {id}::text, {claims}{attributes} FROM {table}"),
            &[],
        )
        .map_err(|e| SourceError::Postgres(e.to_string()))?;
    Ok(rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let identifier: Option<String> = row.get(0);
            let cell: Option<String> = row.get(1);
            SourceRecord {
                line: i as u64 + 1,
                identifier: identifier.unwrap_or_default(),
                claims: claims_of(columns, cell.as_deref()),
                attributes: columns
                    .attributes
                    .iter()
                    .enumerate()
                    .map(|(a, name)| {
                        let value: Option<String> = row.get(2 + a);
                        (name.clone(), value.unwrap_or_default())
                    })
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_columns_and_claims_are_read_with_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members.csv");
        std::fs::write(
            &path,
            "email,claims\nalice@example.com,account_verified;fraud_listed\n\"bob@example.com\",\n",
        )
        .unwrap();
        let columns = Columns {
            identifier: "email".into(),
            claims: Some("claims".into()),
            fixed_claims: vec!["known".into()],
            attributes: Vec::new(),
        };
        let records = read_csv(&path, &columns).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].line, 2);
        assert_eq!(
            records[0].claims.iter().collect::<Vec<_>>(),
            ["account_verified", "fraud_listed", "known"]
        );
        assert_eq!(records[1].identifier, "bob@example.com");
        let missing = Columns {
            identifier: "phone".into(),
            ..columns
        };
        let err = read_csv(&path, &missing).unwrap_err().to_string();
        assert!(
            err.contains("no column `phone` (columns: email, claims)"),
            "{err}"
        );
    }

    #[test]
    fn sql_names_are_checked_not_interpolated() {
        assert_eq!(
            sql_name("public.members", "t").unwrap(),
            "\"public\".\"members\""
        );
        assert!(sql_name("members; drop table x", "t").is_err());
        assert!(sql_name("a.b.c", "t").is_err());
    }
}
