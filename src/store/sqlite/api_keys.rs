//! Self-service SCIM keys in the embedded store: the `api_keys` table (hashes
//! only), loading it, writing one change, and folding a committed change into
//! the in-memory state.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::pragmas::backend;
use crate::store::{ApiKeyChange, ApiKeyRecord, StoreError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL,
    sha256       BLOB    NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    created_by   TEXT    NOT NULL,
    expires_ms   INTEGER,
    last_used_ms INTEGER
) STRICT;
";

const INSERT_SQL: &str = "INSERT INTO api_keys (id, name, sha256, created_ms, created_by, expires_ms, last_used_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const DELETE_SQL: &str = "DELETE FROM api_keys WHERE id = ?1";
const TOUCH_SQL: &str =
    "UPDATE api_keys SET last_used_ms = ?2 WHERE id = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2)";

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) fn write(conn: &Connection, change: &ApiKeyChange) -> Result<(), StoreError> {
    let ctx = |e: rusqlite::Error| backend("writing a self-service key", &e);
    match change {
        ApiKeyChange::Put(k) => conn
            .prepare_cached(INSERT_SQL)
            .and_then(|mut st| {
                st.execute(params![
                    k.id,
                    k.name,
                    &k.sha256[..],
                    int(k.created_ms),
                    k.created_by,
                    k.expires_ms.map(int),
                    k.last_used_ms.map(int)
                ])
            })
            .map(drop)
            .map_err(ctx),
        ApiKeyChange::Delete(id) => {
            conn.prepare_cached(DELETE_SQL).and_then(|mut st| st.execute(params![id])).map(drop).map_err(ctx)
        }
        ApiKeyChange::Touch(used) => {
            let mut st = conn.prepare_cached(TOUCH_SQL).map_err(ctx)?;
            for (id, ms) in used {
                st.execute(params![id, int(*ms)]).map_err(ctx)?;
            }
            Ok(())
        }
    }
}

pub(super) fn load(conn: &Connection) -> Result<BTreeMap<String, ApiKeyRecord>, StoreError> {
    let ctx = |e: rusqlite::Error| backend("loading the self-service keys", &e);
    let mut stmt = conn
        .prepare("SELECT id, name, sha256, created_ms, created_by, expires_ms, last_used_ms FROM api_keys")
        .map_err(ctx)?;
    let mut rows = stmt.query([]).map_err(ctx)?;
    let mut keys = BTreeMap::new();
    let ms = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    while let Some(row) = rows.next().map_err(ctx)? {
        let id: String = row.get(0).map_err(ctx)?;
        let hash: Vec<u8> = row.get(2).map_err(ctx)?;
        let sha256 = <[u8; 32]>::try_from(hash)
            .map_err(|_| StoreError::Backend(format!("self-service key {id}: the stored hash is not 32 bytes")))?;
        let key = ApiKeyRecord {
            id: id.clone(),
            name: row.get(1).map_err(ctx)?,
            sha256,
            created_ms: ms(row.get(3).map_err(ctx)?).unwrap_or_default(),
            created_by: row.get(4).map_err(ctx)?,
            expires_ms: ms(row.get(5).map_err(ctx)?),
            last_used_ms: ms(row.get(6).map_err(ctx)?),
        };
        keys.insert(id, key);
    }
    Ok(keys)
}

pub(super) fn apply(keys: &mut BTreeMap<String, ApiKeyRecord>, change: ApiKeyChange) {
    match change {
        ApiKeyChange::Put(k) => {
            keys.insert(k.id.clone(), k);
        }
        ApiKeyChange::Delete(id) => {
            keys.remove(&id);
        }
        ApiKeyChange::Touch(used) => {
            for (id, ms) in used {
                if let Some(k) = keys.get_mut(&id)
                    && k.last_used_ms.is_none_or(|t| t < ms)
                {
                    k.last_used_ms = Some(ms);
                }
            }
        }
    }
}
